#!/usr/bin/env python3
"""Writes the committed seed corpus for the gguf_reader fuzz target (fuzz/corpus/seeds/).

Plain struct packing, no dependencies: small valid files covering every metadata value
type, nested arrays, several tensor formats, alignments 32 and 64, versions 2 and 3, and a
few invalid ones (each near a check the reader makes). Run: python3 fuzz/make_seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "seeds")

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, GGML_Q4_K = 0, 1, 2, 8, 12
# (block size, bytes per block)
BLOCK = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q4_0: (32, 18), GGML_Q8_0: (32, 34),
         GGML_Q4_K: (256, 144)}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    """Encodes a value of type t; arrays are (element type, [items])."""
    if t == STRING:
        return gstr(v)
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32, data=True, n_tensors=None, n_kv=None,
         f32_ones=False):
    """kvs: [(key, type, value)]; tensors: [(name, type, dims)], laid out in order."""
    head = b"GGUF" + struct.pack("<IQQ", version,
                                 len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    for k, t, v in kvs:
        head += gstr(k) + struct.pack("<I", t) + value(t, v)
    offset, blobs = 0, []
    for name, ty, dims in tensors:
        n = 1
        for d in dims:
            n *= d
        bs, ts = BLOCK[ty]
        size = n // bs * ts
        head += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", ty, offset)
        blob = bytes((i * 7 + len(name)) % 251 for i in range(size))
        if ty in (GGML_Q4_0, GGML_Q8_0):  # keep the f16 scale of every block finite
            blob = b"".join(b"\x00\x3c" + blob[i + 2:i + ts] for i in range(0, size, ts))
        if ty == GGML_F32 and f32_ones:  # norm weights a model can run with
            blob = struct.pack("<f", 1.0) * n
        pad = -size % alignment
        blobs.append(blob + b"\0" * pad)
        offset += size + pad
    out = head + b"\0" * (-len(head) % alignment)
    return out + b"".join(blobs) if data else head


EVERY_TYPE = [
    ("general.architecture", STRING, "llama"),
    ("llama.block_count", U32, 2),
    ("t.u8", U8, 255), ("t.i8", I8, -3), ("t.u16", U16, 65535), ("t.i16", I16, -7),
    ("t.i32", I32, -1), ("t.f32", F32, 0.5), ("t.bool", BOOL, True),
    ("t.u64", U64, 2**64 - 1), ("t.i64", I64, -2**63), ("t.f64", F64, 1e-300),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "a", "", "\u00e9"])),
    ("tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, 2.5, 3.0])),
    ("t.nested", ARRAY, (ARRAY, [(U8, [1, 2]), (STRING, ["x"]), (ARRAY, [(I64, [5])])])),
    ("t.empty", ARRAY, (BOOL, [])),
]
TENSORS = [
    ("token_embd.weight", GGML_Q8_0, [32, 4]),
    ("blk.0.attn_norm.weight", GGML_F32, [8]),
    ("blk.0.ffn_down.weight", GGML_Q4_0, [64, 2]),
    ("output.weight", GGML_F16, [3, 2, 1, 1]),
]


def tiny_llama(**overrides):
    """A whole llama model small enough to fuzz: 2 blocks of width 32, vocab 16; any
    metadata value can be overridden (key without the "llama." prefix)."""
    e, ff, vocab, nh, nkv, n_layer = 32, 64, 16, 4, 2, 2
    meta = {"block_count": n_layer, "embedding_length": e, "feed_forward_length": ff,
            "attention.head_count": nh, "attention.head_count_kv": nkv, "context_length": 64}
    meta.update(overrides)
    kvs = [("general.architecture", STRING, "llama")]
    kvs += [(f"llama.{k}", U32, v) for k, v in meta.items()]
    kvs += [("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
            ("llama.rope.freq_base", F32, 10000.0)]
    kv = e // nh * nkv
    tensors = [("token_embd.weight", GGML_Q8_0, [e, vocab]), ("output_norm.weight", GGML_F32, [e])]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", GGML_F32, [e]), (b + "attn_q.weight", GGML_Q8_0, [e, e]),
                    (b + "attn_k.weight", GGML_Q8_0, [e, kv]), (b + "attn_v.weight", GGML_Q8_0, [e, kv]),
                    (b + "attn_output.weight", GGML_Q8_0, [e, e]), (b + "ffn_norm.weight", GGML_F32, [e]),
                    (b + "ffn_gate.weight", GGML_Q4_0, [e, ff]), (b + "ffn_up.weight", GGML_Q4_0, [e, ff]),
                    (b + "ffn_down.weight", GGML_Q8_0, [ff, e])]
    return gguf(kvs, tensors, f32_ones=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    valid = gguf(EVERY_TYPE, TENSORS)
    seeds = {
        "valid_v3.gguf": valid,
        "valid_v2_align64.gguf": gguf([("general.alignment", U32, 64)] + EVERY_TYPE[:3],
                                      [("w.q4k", GGML_Q4_K, [256, 1]), ("b", GGML_F32, [])],
                                      version=2, alignment=64),
        "header_only.gguf": gguf(EVERY_TYPE, TENSORS, data=False),
        "truncated_data.gguf": valid[: len(valid) - 40],
        "no_tensors.gguf": gguf(EVERY_TYPE[:5], []),
        "bad_magic.gguf": b"GGML" + valid[4:200],
        "version1.gguf": b"GGUF" + struct.pack("<III", 1, 0, 0),
        "huge_kv_count.gguf": gguf(EVERY_TYPE[:1], [], n_kv=2**62),
        "bad_alignment.gguf": gguf([("general.alignment", U32, 48)], []),
        "deep_nesting.gguf": gguf([("d", ARRAY, (ARRAY, [(ARRAY, [(ARRAY, [(U8, [1])])])]))], []),
        # Whole models for the gguf_model target, and header values that once made the
        # engine size lists and buffers by numbers no tensor backs.
        "tiny_llama.gguf": tiny_llama(),
        "tiny_llama_block_count_4e9.gguf": tiny_llama(block_count=4_000_000_000),
        "tiny_llama_context_4e9.gguf": tiny_llama(context_length=4_000_000_000),
        "tiny_llama_heads_0.gguf": tiny_llama(**{"attention.head_count": 0}),
        "tiny_llama_kv_heads_3.gguf": tiny_llama(**{"attention.head_count_kv": 3}),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
