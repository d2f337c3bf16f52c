#!/usr/bin/env python3
"""Reference forward pass of a llama-family GGUF model, written from the architecture's
definition with numpy, independent of Strata's code.

Weights go through `gguf.quants.dequantize` (llama.cpp's own Python package); tokens come
from PyPI `tokenizers` built from the GGUF's own vocabulary and merges. Two modes:

* ``float``: every activation stays in float64; a weight matrix is its dequantized f32
  values, and the products are float64.
* ``ggml``: as ggml's CPU backend computes: before each weight product the activation row
  is quantized per 32-element block to the weight's activation type (Q8_1 for Q4_1/Q5_1,
  Q8_0 for Q4_0/Q5_0/Q8_0; see docs/formats.md), with C's round-half-away-from-zero and
  f16 block scales, and for Q4_1/Q5_1 the weight's min multiplies the activation block's
  stored sum ``s = f16(d·Σq)`` as ggml's dot product does; K and V are stored as f16 (the
  KV cache type llama.cpp uses by default). Everything else (norms, rope, softmax) is
  float64: its difference from f32 is far below the quantization noise.

For each prompt it records: the prompt's token ids, 32 greedy tokens of each mode, and the
top-10 logits at every position of the teacher-forced sequence prompt + the ggml mode's 32
greedy tokens (the same sequence for both modes, so their logits compare position by
position). Output: golden/data/forward/<model-stem>.json.

Usage (from the repo root, with golden/requirements.txt installed):
    python3 golden/gen/forward.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
]
N_GEN = 32
TOP_K = 10

ACT_TYPE = {  # weight type -> activation type ggml quantizes the other operand to
    T.Q4_0: "q8_0", T.Q5_0: "q8_0", T.Q8_0: "q8_0",
    T.Q4_1: "q8_1", T.Q5_1: "q8_1",
    T.F32: None, T.F16: None, T.BF16: None,
}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def c_round(x):
    """C's roundf: half away from zero (ggml's quantizers use it, numpy's round does not)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_act_q8(x, kind):
    """Quantizes rows of x (…, n) per 32-block as ggml's q8_0 / q8_1 reference quantizers
    do; returns the dequantized activations and, for q8_1, the stored block sums s."""
    shape = x.shape
    b = x.astype(np.float32).reshape(-1, 32)
    amax = np.max(np.abs(b), axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = c_round((b * inv[:, None]).astype(np.float32))
    d16 = d.astype(np.float16).astype(np.float64)
    xq = (q * d16[:, None]).reshape(shape)
    s = None
    if kind == "q8_1":
        s = (d * q.sum(axis=1).astype(np.float32)).astype(np.float32).astype(np.float16)
        s = s.astype(np.float64).reshape(shape[:-1] + (shape[-1] // 32,))
    return xq, s, d16, q


class Weight:
    """A 2-D weight: dequantized values (rows × cols), its type, and for Q4_1/Q5_1 the
    per-block mins needed to model ggml's m·s term."""

    def __init__(self, tensor):
        self.ty = T(tensor.tensor_type)
        cols, rows = int(tensor.shape[0]), int(tensor.shape[1])
        raw = np.asarray(tensor.data)
        self.w = dequantize(raw, self.ty).reshape(rows, cols).astype(np.float64)
        self.mins = None
        if self.ty in (T.Q4_1, T.Q5_1):
            bsz = 20 if self.ty == T.Q4_1 else 24
            blocks = raw.reshape(-1).view(np.uint8).reshape(rows, cols // 32, bsz)
            self.mins = blocks[:, :, 2:4].copy().view(np.float16).reshape(rows, cols // 32)
            self.mins = self.mins.astype(np.float64)

    def matmul(self, x, mode):
        """y = x · Wᵀ for x of shape (n, cols)."""
        act = ACT_TYPE.get(self.ty)
        if mode == "float" or act is None:
            return x @ self.w.T
        xq, s, d16, q = quantize_act_q8(x, act)
        y = xq @ self.w.T
        if act == "q8_1":
            # ggml: m_w · s_x where s_x = f16(d·Σq); the dequantized product has m_w · d16·Σq.
            n = x.shape[0]
            exact = (d16 * q.sum(axis=1)).reshape(n, -1)
            y += (s - exact) @ self.mins.T
        return y


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        self.reader = r
        arch = field(r, "general.architecture")
        assert arch == "llama", f"this reference implements llama only, got {arch}"
        g = lambda k: field(r, f"{arch}.{k}")
        self.n_layer = int(g("block_count"))
        self.n_embd = int(g("embedding_length"))
        self.n_head = int(g("attention.head_count"))
        self.n_kv = int(g("attention.head_count_kv"))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.base = float(g("rope.freq_base"))
        self.hd = self.n_embd // self.n_head
        self.n_rot = int(g("rope.dimension_count") or self.hd)
        t = {x.name: x for x in r.tensors}
        emb = t["token_embd.weight"]
        self.emb_raw = np.asarray(emb.data)
        self.emb_ty = T(emb.tensor_type)
        self.embd = Weight(emb)
        self.out = Weight(t["output.weight"]) if "output.weight" in t else self.embd
        self.out_norm = np.asarray(t["output_norm.weight"].data, dtype=np.float64)
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append({
                "attn_norm": np.asarray(t[p + "attn_norm.weight"].data, dtype=np.float64),
                "ffn_norm": np.asarray(t[p + "ffn_norm.weight"].data, dtype=np.float64),
                **{k: Weight(t[p + k + ".weight"]) for k in
                   ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")},
            })

    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, n_heads, pos0):
        """ggml's normal (non-NeoX) rope: rotates adjacent pairs (2i, 2i+1) by
        pos·base^(−2i/n_rot). x: (n, n_heads·hd) for positions pos0, pos0+1, …"""
        n = x.shape[0]
        x = x.reshape(n, n_heads, self.hd).copy()
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        pos = np.arange(pos0, pos0 + n, dtype=np.float64)
        theta = pos[:, None] * self.base ** (-2.0 * i / self.n_rot)
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        x0, x1 = x[:, :, 0:self.n_rot:2].copy(), x[:, :, 1:self.n_rot:2].copy()
        x[:, :, 0:self.n_rot:2] = x0 * c - x1 * s
        x[:, :, 1:self.n_rot:2] = x0 * s + x1 * c
        return x.reshape(n, n_heads * self.hd)

    def forward(self, tokens, mode, cache, last_only=False):
        """Logits for `tokens`, which follow the len(cache[0]) positions already in the
        KV cache `cache` (a list per layer of (K, V) arrays, extended here). Every
        operation is per row, so feeding a sequence at once or token by token gives the
        same numbers."""
        n = len(tokens)
        pos0 = cache[0][0].shape[0]
        x = self.embd.w[np.asarray(tokens)]  # get_rows: exact dequantized rows
        group = self.n_head // self.n_kv
        for li, L in enumerate(self.layers):
            h = self.rms_norm(x, L["attn_norm"])
            q = self.rope(L["attn_q"].matmul(h, mode), self.n_head, pos0)
            k = self.rope(L["attn_k"].matmul(h, mode), self.n_kv, pos0)
            v = L["attn_v"].matmul(h, mode)
            if mode == "ggml":  # f16 KV cache
                k = k.astype(np.float16).astype(np.float64)
                v = v.astype(np.float16).astype(np.float64)
            K = np.concatenate([cache[li][0], k.reshape(n, self.n_kv, self.hd)])
            V = np.concatenate([cache[li][1], v.reshape(n, self.n_kv, self.hd)])
            cache[li] = (K, V)
            total = pos0 + n
            mask = np.triu(np.full((n, total), -np.inf), k=pos0 + 1)
            q = q.reshape(n, self.n_head, self.hd)
            att = np.empty((n, self.n_head, self.hd))
            for hh in range(self.n_head):
                kv = hh // group
                sc = q[:, hh, :] @ K[:, kv, :].T / np.sqrt(self.hd) + mask
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                att[:, hh, :] = sc @ V[:, kv, :]
            x = x + L["attn_output"].matmul(att.reshape(n, -1), mode)
            h = self.rms_norm(x, L["ffn_norm"])
            gate = L["ffn_gate"].matmul(h, mode)
            up = L["ffn_up"].matmul(h, mode)
            act = gate / (1.0 + np.exp(-gate)) * up
            x = x + L["ffn_down"].matmul(act, mode)
        x = self.rms_norm(x[-1:] if last_only else x, self.out_norm)
        return self.out.matmul(x, mode)

    def new_cache(self):
        empty = np.zeros((0, self.n_kv, self.hd))
        return [(empty, empty)] * self.n_layer


def build_tokenizer(reader):
    assert field(reader, "tokenizer.ggml.model") == "gpt2", "byte-level BPE vocabularies only"
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = field(reader, "tokenizer.ggml.pre")
    # SmolLM's own tokenizer.json: digits split one by one, then GPT-2 byte-level regex.
    assert pre in ("smollm",), f"pre-tokenizer {pre!r} not written here"
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    return tk


def top_k(logits):
    idx = np.argsort(-logits, kind="stable")[:TOP_K]
    return {"ids": [int(i) for i in idx], "logits": [float(logits[i]) for i in idx]}


def greedy(model, ids, mode, eos):
    cache = model.new_cache()
    logits = model.forward(list(ids), mode, cache, last_only=True)
    out = []
    for _ in range(N_GEN):
        nxt = int(np.argmax(logits[-1]))
        out.append(nxt)
        if nxt == eos:
            break
        logits = model.forward([nxt], mode, cache)
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    model = Model(path)
    tk = build_tokenizer(model.reader)
    eos = int(field(model.reader, "tokenizer.ggml.eos_token_id"))
    cases = []
    for prompt in PROMPTS:
        ids = tk.encode(prompt, add_special_tokens=False).ids
        case = {"prompt": prompt, "prompt_ids": ids}
        for mode in ("ggml", "float"):
            g = greedy(model, ids, mode, eos)
            case[f"greedy_{mode}"] = g
            case[f"greedy_{mode}_text"] = tk.decode(g)
            print(f"{mode:5} {prompt!r} -> {tk.decode(g)!r}", file=sys.stderr)
        seq = ids + case["greedy_ggml"]
        case["teacher_forced_ids"] = seq
        for mode in ("ggml", "float"):
            logits = model.forward(seq, mode, model.new_cache())
            case[f"top_{mode}"] = [top_k(row) for row in logits]
        cases.append(case)
    meta = {
        "model": os.path.basename(path),
        "generator": "golden/gen/forward.py",
        "top_k": TOP_K,
        "n_gen": N_GEN,
        "modes": {
            "ggml": "weight products with activations quantized per block (q8_1 for Q4_1/Q5_1, "
                    "q8_0 for Q4_0/Q5_0/Q8_0, m·s term as ggml), f16 K/V, other ops float64",
            "float": "all activations float64, weights dequantized by gguf.quants",
        },
    }
    out_dir = os.path.join("golden", "data", "forward")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
