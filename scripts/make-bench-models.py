#!/usr/bin/env python3
"""Writes random-weight GGUF files with the shapes of models people run, for measuring decode
speed (scripts/speed-table.sh with STRATA_SPEED_FILES) where the real files are too big to
fetch or keep: the tensors have a real model's names, shapes and quant types, the quantized
blocks are random bytes with sane scales, and the tokenizer is SmolLM2's (copied whole from
models/SmolLM2-135M-Instruct.Q4_1.gguf: 49152 tokens, merges, types, special ids, pre
"smollm"), so `generate -p TEXT` and llama.cpp's llama-bench both load and run them. Only the
first L blocks of each model are written (the time per token of a decode is the sum of its
blocks' and the output layer's, so L blocks give the per-block cost; whole files would be
tens of GB).

Files (name: shapes; types):
  qwen3moe-30b-a3b-L{n}-q4_0.gguf (default 8 blocks of 48): Qwen3-30B-A3B. n_embd 2048,
      32 q / 4 kv heads of 128, q/k norms, rope NEOX base 1e6, 128 experts of 768, 8 used,
      router F32, rms eps 1e-6. Attention, experts and token_embd Q4_0, output Q8_0.
  qwen3moe-30b-a3b-L{n}-q4_k.gguf: the same shapes as a Q4_K_M file: Q4_K, but attn_v,
      ffn_down_exps and output Q6_K.
  deepseek2-v2-lite-L{n}-q4_0.gguf (default 6 blocks of 27): DeepSeek-V2-Lite. n_embd 2048,
      16 heads, attn_q (q_lora_rank 0), kv_lora_rank 512, qk_nope 128, qk_rope 64, v_head
      128, one attn_kv_b (the older converter's kind: key_length 192, value_length 128, no
      *_mla keys), 1 leading dense block (n_ff 10944), then 64 experts of 1408, 6 used,
      2 shared, softmax gating, weights scale 1.0, not normalised; YaRN factor 40 from 4096,
      yarn_log_multiplier 0.0707. Matrices Q4_0 (1408 is no multiple of 256: K-quant rows
      would not fit), output Q8_0.
  deepseek2-v2-lite-mla-L{n}-q4_0.gguf (only with --deepseek-kind new or both): the newer
      converter's kind: attn_k_b [128, 512, 16] and attn_v_b [512, 128, 16] in F16 instead
      of attn_kv_b, key_length 576 / value_length 512 (the latent), key_length_mla 192 /
      value_length_mla 128, head_count_kv 1 (llama.cpp sizes its cache rows by it).
  llama3-8b-L{n}-{q4_k_m,q4_0,q8_0}.gguf (default 4 blocks of 32): Llama-3-8B. n_embd 4096,
      32 / 8 heads of 128, n_ff 14336, rope base 500000, rms eps 1e-5; vocabulary SmolLM2's.
      q4_k_m: Q4_K but attn_v, ffn_down, output Q6_K; q4_0: Q4_0, output Q8_0; q8_0: Q8_0.
  llama70b-layer-L{n}-q4_k_m.gguf (default 1 block of 80): Llama-3-70B. n_embd 8192,
      64 / 8 heads of 128, n_ff 28672, rope base 500000; types as llama3-8b's q4_k_m.
Every file: a separate output.weight, norm weights F32 in [0.9, 1.1], context_length 4096
(--context-length; the real ones are longer, but Strata sizes its KV cache by it unless -c
is given). Where the types differ from llama-quantize's: a real Q4_K_M has attn_v and
ffn_down in Q6_K on about half the blocks (its use_more_bits), Q4_K on the others, so these
files read a little more per token; a real Q4_0 file's output is Q6_K, Q8_0 here.

Scales. A quantized weight is d·(integer pattern); with random bytes the pattern has a known
spread per format, the unit sigma below (the root mean square of one weight with d = 1):
  Q4_0   w = d·(q − 8),            q uniform 0..15:  E[(q−8)²] = 21.25 + 0.25 = 21.5
         -> unit sigma √21.5 = 4.64. (q − 8) has mean −0.5, so d gets a random sign, as
         in real files (ggml's quantizer sets d = max/−8, max the value of largest
         magnitude). With one sign every row shares a mean and the hidden states lean on
         one direction (a first version did that: the greedy text repeated one token, and
         the routers would favour the same experts for every token).
  Q8_0   w = d·q,                  q uniform −127..127 (the quantizer's range; the byte
         −128 becomes 0): E[q²] = 2·Σk²(1..127)/256 = 5397.5  -> 73.5
  Q4_K   w = d·sc·q − dmin·m,      q 0..15, sc and m uniform 0..63 (random 6-bit scales and
         mins), dmin = 7.5·d so that the mean over the tensor is 0:
         w/d = sc·(q − 7.5) + 7.5·(sc − m);
         E = E[sc²]·E[(q−7.5)²] + 56.25·E[(sc−m)²] = 1333.5·21.25 + 56.25·682.5 = 66727.5
         -> 258.3
  Q6_K   w = d·sc·(q − 32),        q uniform 0..63, sc uniform int8:
         E = 5461.5·341.5 -> 1365.7
  F16/F32 normal(0, sigma) directly.
A matrix-vector product y = W·x over a row of n (fan_in, the row length ne0) whose input has
root mean square 1 (every matrix here reads the output of an RMSNorm with weights ≈ 1, a
SwiGLU product, or an attention mix of such) gives y a root mean square of √n·sigma. The
target is sigma = GAIN/√n with GAIN = 0.58, so each product's output is ≈ 0.58 (O(1), a
little below 1 so that nothing grows through the blocks; the pre-norms rescale each block's
input anyway) and the logits are ≈ 0.58 (a near-uniform softmax, no inf or NaN anywhere):
d = GAIN / (unit sigma · √n). For Q4_0 that is 0.58/(4.64·√n) = 1/(8·√n). Each block's d is
that times a uniform factor in [0.75, 1.25] (E[f²] = 1.005), as real files' d vary. The
other formats have mean 0 as they are (Q4_K by dmin = 7.5·d, Q6_K by its signed scales).
The K-quants' d are mostly f16 subnormals (below 6.1e-5; Q6_K's ≈ 1e-5): fewer significant
bits, which random weights do not mind, and every f16 conversion of both engines reads them.
Routers (F32) get the same sigma, so the router logits are O(0.5): each token picks experts
close to at random, as a real model's tokens spread over its experts.

Environment: Python 3 with numpy and gguf-py (PyPI `gguf`, the versions pinned in
golden/requirements.txt: gguf==0.19.0), as in the golden data's venv at the repo root
(golden/README.md): python3 -m venv .venv-golden && .venv-golden/bin/pip install -r
golden/requirements.txt

Usage: python3 scripts/make-bench-models.py [OUT_DIR] [--only NAME,...] [--layers N]
           [--deepseek-kind old|new|both] [--context-length N] [--tokenizer-from GGUF]
           [--seed S] [--force] [--list]
OUT_DIR defaults to models/bench/ (git-ignored: /models/). NAME is a file's name before -L
(qwen3moe-30b-a3b-q4_0, llama3-8b-q8_0, ...; --list prints them); --layers N sets every
chosen file's block count. Existing files are kept unless --force. Prints each file's size
and the weight bytes one decode token reads (every matrix but token_embd, of an expert stack
only the used experts' share: what Strata's --timings-json gives as weight_bytes_per_token).
"""

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as VT

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_SOURCE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
N_VOCAB = 49152
GAIN = 0.58

# Root mean square of one weight with d = 1 (the docstring derives them).
UNIT_SIGMA = {
    T.Q4_0: math.sqrt(21.5),
    T.Q8_0: math.sqrt(5397.5),
    T.Q4_K: math.sqrt(1333.5 * 21.25 + 56.25 * 682.5),
    T.Q6_K: math.sqrt(5461.5 * 341.5),
}


@dataclass
class Tensor:
    name: str
    ne: list  # ggml order: the row length first
    ty: T
    kind: str = "matrix"  # "matrix", "norm"

    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.ty]
        n = math.prod(self.ne)
        assert self.ne[0] % block == 0, (self.name, self.ne, self.ty)
        return n // block * size


@dataclass
class Model:
    file: str  # name with {n} for the block count
    arch: str
    title: str
    n_layer_default: int
    n_layer_real: int
    ftype: int
    kv: dict  # arch key (without "arch.") -> value, or full key -> value
    tensors: object  # function(n_layer) -> list of Tensor
    n_expert: int = 1
    n_expert_used: int = 1


def norm(name, n):
    return Tensor(name, [n], T.F32, "norm")


# --- Llama (dense) -------------------------------------------------------------------------


def ends_tensors(e, embd_ty, out_ty):
    """The token embedding, the output norm and a separate output projection."""
    return [
        Tensor("token_embd.weight", [e, N_VOCAB], embd_ty),
        norm("output_norm.weight", e),
        Tensor("output.weight", [e, N_VOCAB], out_ty),
    ]


def gqa_tensors(b, e, n_head, n_kv, hd, types):
    """Block prefix b's attention norm and grouped-query projections."""
    return [
        norm(b + "attn_norm.weight", e),
        Tensor(b + "attn_q.weight", [e, n_head * hd], types["q"]),
        Tensor(b + "attn_k.weight", [e, n_kv * hd], types["k"]),
        Tensor(b + "attn_v.weight", [e, n_kv * hd], types["v"]),
        Tensor(b + "attn_output.weight", [n_head * hd, e], types["o"]),
    ]


def llama_tensors(n_layer, e, n_head, n_kv, ff, types):
    """types: dict with keys embd, out, q, k, v, o, gate, up, down."""
    hd = e // n_head
    out = ends_tensors(e, types["embd"], types["out"])
    for i in range(n_layer):
        b = f"blk.{i}."
        out += gqa_tensors(b, e, n_head, n_kv, hd, types) + [
            norm(b + "ffn_norm.weight", e),
            Tensor(b + "ffn_gate.weight", [e, ff], types["gate"]),
            Tensor(b + "ffn_up.weight", [e, ff], types["up"]),
            Tensor(b + "ffn_down.weight", [ff, e], types["down"]),
        ]
    return out


def uniform_types(ty, out):
    return dict(embd=ty, out=out, q=ty, k=ty, v=ty, o=ty, gate=ty, up=ty, down=ty)


Q4_K_M = dict(embd=T.Q4_K, out=T.Q6_K, q=T.Q4_K, k=T.Q4_K, v=T.Q6_K, o=T.Q4_K,
              gate=T.Q4_K, up=T.Q4_K, down=T.Q6_K)


def llama_model(file, title, n_layer_default, n_layer_real, e, n_head, n_kv, ff, types, ftype):
    return Model(
        file=file, arch="llama", title=title, n_layer_default=n_layer_default,
        n_layer_real=n_layer_real, ftype=ftype,
        kv={
            "embedding_length": e,
            "feed_forward_length": ff,
            "attention.head_count": n_head,
            "attention.head_count_kv": n_kv,
            "rope.dimension_count": e // n_head,
            "rope.freq_base": 500000.0,
            "attention.layer_norm_rms_epsilon": 1e-5,
        },
        tensors=lambda n, a=(e, n_head, n_kv, ff, types): llama_tensors(n, *a),
    )


# --- Qwen3-MoE -----------------------------------------------------------------------------

QWEN = dict(e=2048, n_head=32, n_kv=4, hd=128, n_expert=128, n_used=8, ff_exp=768)


def qwen3moe_tensors(n_layer, types):
    e, nh, nkv, hd = QWEN["e"], QWEN["n_head"], QWEN["n_kv"], QWEN["hd"]
    x, ff = QWEN["n_expert"], QWEN["ff_exp"]
    out = ends_tensors(e, types["embd"], types["out"])
    for i in range(n_layer):
        b = f"blk.{i}."
        out += gqa_tensors(b, e, nh, nkv, hd, types) + [
            norm(b + "attn_q_norm.weight", hd),
            norm(b + "attn_k_norm.weight", hd),
            norm(b + "ffn_norm.weight", e),
            Tensor(b + "ffn_gate_inp.weight", [e, x], T.F32),
            Tensor(b + "ffn_gate_exps.weight", [e, ff, x], types["gate"]),
            Tensor(b + "ffn_up_exps.weight", [e, ff, x], types["up"]),
            Tensor(b + "ffn_down_exps.weight", [ff, e, x], types["down"]),
        ]
    return out


def qwen3moe_model(suffix, types, ftype):
    return Model(
        file="qwen3moe-30b-a3b-L{n}-" + suffix + ".gguf", arch="qwen3moe",
        title="Qwen3-30B-A3B", n_layer_default=8, n_layer_real=48, ftype=ftype,
        n_expert=QWEN["n_expert"], n_expert_used=QWEN["n_used"],
        kv={
            "embedding_length": QWEN["e"],
            "feed_forward_length": 6144,  # the real file's (unused: every block has experts)
            "attention.head_count": QWEN["n_head"],
            "attention.head_count_kv": QWEN["n_kv"],
            "attention.key_length": QWEN["hd"],
            "attention.value_length": QWEN["hd"],
            "rope.dimension_count": QWEN["hd"],
            "rope.freq_base": 1000000.0,
            "attention.layer_norm_rms_epsilon": 1e-6,
            "expert_count": QWEN["n_expert"],
            "expert_used_count": QWEN["n_used"],
            "expert_feed_forward_length": QWEN["ff_exp"],
        },
        tensors=lambda n: qwen3moe_tensors(n, types),
    )


# --- DeepSeek-V2-Lite ----------------------------------------------------------------------

DS = dict(e=2048, n_head=16, kv_lora=512, nope=128, rope=64, v_head=128, ff=10944,
          n_expert=64, n_used=6, n_shared=2, ff_exp=1408, n_dense=1)


def deepseek2_tensors(n_layer, split_kv_b, ty, out_ty):
    e, nh, r = DS["e"], DS["n_head"], DS["kv_lora"]
    nope, rope, vh = DS["nope"], DS["rope"], DS["v_head"]
    x, ffx, sh = DS["n_expert"], DS["ff_exp"], DS["n_shared"] * DS["ff_exp"]
    out = ends_tensors(e, ty, out_ty)
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [
            norm(b + "attn_norm.weight", e),
            Tensor(b + "attn_q.weight", [e, nh * (nope + rope)], ty),
            Tensor(b + "attn_kv_a_mqa.weight", [e, r + rope], ty),
            norm(b + "attn_kv_a_norm.weight", r),
        ]
        if split_kv_b:
            out += [
                Tensor(b + "attn_k_b.weight", [nope, r, nh], T.F16),
                Tensor(b + "attn_v_b.weight", [r, vh, nh], T.F16),
            ]
        else:
            out.append(Tensor(b + "attn_kv_b.weight", [r, nh * (nope + vh)], ty))
        out += [
            Tensor(b + "attn_output.weight", [nh * vh, e], ty),
            norm(b + "ffn_norm.weight", e),
        ]
        if i < DS["n_dense"]:
            out += [
                Tensor(b + "ffn_gate.weight", [e, DS["ff"]], ty),
                Tensor(b + "ffn_up.weight", [e, DS["ff"]], ty),
                Tensor(b + "ffn_down.weight", [DS["ff"], e], ty),
            ]
        else:
            out += [
                Tensor(b + "ffn_gate_inp.weight", [e, x], T.F32),
                Tensor(b + "ffn_gate_exps.weight", [e, ffx, x], ty),
                Tensor(b + "ffn_up_exps.weight", [e, ffx, x], ty),
                Tensor(b + "ffn_down_exps.weight", [ffx, e, x], ty),
                Tensor(b + "ffn_gate_shexp.weight", [e, sh], ty),
                Tensor(b + "ffn_up_shexp.weight", [e, sh], ty),
                Tensor(b + "ffn_down_shexp.weight", [sh, e], ty),
            ]
    return out


def deepseek2_model(split_kv_b):
    kv = {
        "embedding_length": DS["e"],
        "feed_forward_length": DS["ff"],
        "attention.head_count": DS["n_head"],
        "attention.head_count_kv": DS["n_head"],
        "attention.q_lora_rank": 0,  # llama.cpp reads it unless block_count is 26 or 27
        "attention.kv_lora_rank": DS["kv_lora"],
        "rope.dimension_count": DS["rope"],
        "rope.freq_base": 10000.0,
        "rope.scaling.type": "yarn",
        "rope.scaling.factor": 40.0,
        "rope.scaling.original_context_length": 4096,
        "rope.scaling.yarn_log_multiplier": 0.0707,
        "attention.layer_norm_rms_epsilon": 1e-6,
        "leading_dense_block_count": DS["n_dense"],
        "expert_count": DS["n_expert"],
        "expert_used_count": DS["n_used"],
        "expert_shared_count": DS["n_shared"],
        "expert_feed_forward_length": DS["ff_exp"],
        "expert_weights_scale": 1.0,
        "expert_weights_norm": False,
        "expert_gating_func": 1,  # softmax
    }
    if split_kv_b:
        kv.update({
            # One latent (and rotary key) per token, shared by the heads: multi-query.
            "attention.head_count_kv": 1,
            "attention.key_length": DS["kv_lora"] + DS["rope"],
            "attention.value_length": DS["kv_lora"],
            "attention.key_length_mla": DS["nope"] + DS["rope"],
            "attention.value_length_mla": DS["v_head"],
        })
    else:
        kv.update({
            "attention.key_length": DS["nope"] + DS["rope"],
            "attention.value_length": DS["v_head"],
        })
    name = "deepseek2-v2-lite-mla" if split_kv_b else "deepseek2-v2-lite"
    return Model(
        file=name + "-L{n}-q4_0.gguf", arch="deepseek2", title="DeepSeek-V2-Lite",
        n_layer_default=6, n_layer_real=27, ftype=gguf.LlamaFileType.MOSTLY_Q4_0,
        n_expert=DS["n_expert"], n_expert_used=DS["n_used"], kv=kv,
        tensors=lambda n: deepseek2_tensors(n, split_kv_b, T.Q4_0, T.Q8_0),
    )


F = gguf.LlamaFileType
MODELS = {
    "qwen3moe-30b-a3b-q4_0": qwen3moe_model(
        "q4_0", dict(uniform_types(T.Q4_0, T.Q8_0)), F.MOSTLY_Q4_0),
    "qwen3moe-30b-a3b-q4_k": qwen3moe_model("q4_k", Q4_K_M, F.MOSTLY_Q4_K_M),
    "deepseek2-v2-lite-q4_0": deepseek2_model(split_kv_b=False),
    "deepseek2-v2-lite-mla-q4_0": deepseek2_model(split_kv_b=True),
    "llama3-8b-q4_k_m": llama_model(
        "llama3-8b-L{n}-q4_k_m.gguf", "Llama-3-8B", 4, 32, 4096, 32, 8, 14336, Q4_K_M,
        F.MOSTLY_Q4_K_M),
    "llama3-8b-q4_0": llama_model(
        "llama3-8b-L{n}-q4_0.gguf", "Llama-3-8B", 4, 32, 4096, 32, 8, 14336,
        uniform_types(T.Q4_0, T.Q8_0), F.MOSTLY_Q4_0),
    "llama3-8b-q8_0": llama_model(
        "llama3-8b-L{n}-q8_0.gguf", "Llama-3-8B", 4, 32, 4096, 32, 8, 14336,
        uniform_types(T.Q8_0, T.Q8_0), F.MOSTLY_Q8_0),
    "llama70b-layer-q4_k_m": llama_model(
        "llama70b-layer-L{n}-q4_k_m.gguf", "Llama-3-70B", 1, 80, 8192, 64, 8, 28672, Q4_K_M,
        F.MOSTLY_Q4_K_M),
}


# --- Random blocks -------------------------------------------------------------------------


def block_scales(rng, n_blocks, fan_in, ty):
    """Per-block d as f16 bytes (n_blocks, 2): GAIN/(unit sigma·√fan_in) · U(0.75, 1.25)."""
    d0 = GAIN / (UNIT_SIGMA[ty] * math.sqrt(fan_in))
    d = d0 * rng.uniform(0.75, 1.25, n_blocks)
    if ty == T.Q4_0:
        d *= rng.choice(np.array([-1.0, 1.0]), n_blocks)
    d = d.astype(np.float16)
    return d, d.view(np.uint8).reshape(n_blocks, 2)


def random_data(rng, t: Tensor) -> np.ndarray:
    n = math.prod(t.ne)
    fan_in = t.ne[0]
    if t.kind == "norm":
        return rng.uniform(0.9, 1.1, n).astype(np.float32)
    if t.ty in (T.F32, T.F16):
        sigma = GAIN / math.sqrt(fan_in)
        dt = np.float32 if t.ty == T.F32 else np.float16
        return (rng.standard_normal(n, dtype=np.float32) * sigma).astype(dt)
    block, size = gguf.GGML_QUANT_SIZES[t.ty]
    n_blocks = n // block
    raw = rng.integers(0, 256, n_blocks * size, dtype=np.uint8).reshape(n_blocks, size)
    d, d_bytes = block_scales(rng, n_blocks, fan_in, t.ty)
    if t.ty == T.Q4_0:
        raw[:, 0:2] = d_bytes  # d, then 32 nibbles
    elif t.ty == T.Q8_0:
        raw[:, 0:2] = d_bytes  # d, then 32 int8
        q = raw[:, 2:]
        q[q == 0x80] = 0
    elif t.ty == T.Q4_K:
        raw[:, 0:2] = d_bytes  # d, dmin, 12 bytes of 6-bit scales and mins, the quants
        dmin = (d.astype(np.float32) * 7.5).astype(np.float16)
        raw[:, 2:4] = dmin.view(np.uint8).reshape(n_blocks, 2)
    elif t.ty == T.Q6_K:
        raw[:, 208:210] = d_bytes  # ql[128], qh[64], int8 scales[16], then d
    else:
        raise ValueError(f"no random blocks for {t.ty.name}")
    return raw.reshape(-1)


# --- The file ------------------------------------------------------------------------------


def copy_tokenizer(w: gguf.GGUFWriter, src: Path):
    r = gguf.GGUFReader(src)
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = f.types[0]
        if main == VT.ARRAY:
            sub = f.types[-1]
            if sub == VT.STRING:  # the bytes as stored, not decoded and encoded again
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            w.add_key_value(key, val, VT.ARRAY, sub_type=sub)
        elif main == VT.STRING:
            w.add_key_value(key, bytes(f.parts[f.data[0]]), VT.STRING)
        else:
            w.add_key_value(key, f.parts[f.data[0]].tolist()[0], main)
    tokens = r.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != N_VOCAB:
        sys.exit(f"{src}: expected a tokenizer of {N_VOCAB} tokens")


def weight_bytes_per_token(m: Model, tensors) -> int:
    total = 0
    for t in tensors:
        if t.kind != "matrix" or t.name == "token_embd.weight":
            continue
        nb = t.nbytes()
        if t.name.endswith("_exps.weight"):
            nb = nb // m.n_expert * m.n_expert_used
        total += nb
    return total


def write_model(m: Model, n_layer: int, path: Path, tok: Path, ctx: int, seed: int):
    tensors = m.tensors(n_layer)
    part = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(part, m.arch)
    w.add_name(f"random weights, {m.title} shapes, {n_layer} of {m.n_layer_real} blocks")
    w.add_description("made by scripts/make-bench-models.py: random quantized blocks, "
                      "for speed measurements only")
    w.add_file_type(int(m.ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_block_count(n_layer)
    w.add_context_length(ctx)
    w.add_vocab_size(N_VOCAB)
    for key, val in m.kv.items():
        full = f"{m.arch}.{key}"
        if isinstance(val, bool):
            w.add_bool(full, val)
        elif isinstance(val, int):
            w.add_uint32(full, val)
        elif isinstance(val, float):
            w.add_float32(full, val)
        else:
            w.add_string(full, val)
    copy_tokenizer(w, tok)
    for t in tensors:
        if t.ty in (T.F32, T.F16):
            dt = np.float32 if t.ty == T.F32 else np.float16
            w.add_tensor_info(t.name, list(reversed(t.ne)), np.dtype(dt), t.nbytes())
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(list(reversed(t.ne)), t.ty)
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes(), raw_dtype=t.ty)
    w.write_header_to_file(part)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for t in tensors:
        data = random_data(rng, t)
        assert data.nbytes == t.nbytes(), t.name
        w.write_tensor_data(data)
    w.close()
    os.replace(part, path)
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=str(ROOT / "models" / "bench"),
                    help="folder to write into (default models/bench/)")
    ap.add_argument("--only", help="comma-separated names (see --list); default: all but "
                    "the MLA-split DeepSeek (see --deepseek-kind)")
    ap.add_argument("--layers", type=int, help="blocks per file (default: per model)")
    ap.add_argument("--deepseek-kind", choices=["old", "new", "both"], default="old",
                    help="old: one attn_kv_b (default); new: attn_k_b/attn_v_b and *_mla keys")
    ap.add_argument("--context-length", type=int, default=4096)
    ap.add_argument("--tokenizer-from", default=str(TOKENIZER_SOURCE),
                    help="the GGUF whose tokenizer.* keys are copied (default: SmolLM2's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    ap.add_argument("--list", action="store_true", help="print the names and exit")
    args = ap.parse_args()

    if args.list:
        for key, m in MODELS.items():
            print(f"{key:28} {m.file.format(n=m.n_layer_default)}")
        return
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in MODELS]
        if unknown:
            sys.exit(f"unknown name(s) {unknown}; --list prints them")
    else:
        names = [k for k in MODELS if "deepseek2" not in k]
        names[2:2] = {"old": ["deepseek2-v2-lite-q4_0"],
                      "new": ["deepseek2-v2-lite-mla-q4_0"],
                      "both": ["deepseek2-v2-lite-q4_0", "deepseek2-v2-lite-mla-q4_0"],
                      }[args.deepseek_kind]
    if args.layers is not None and args.layers < 1:
        sys.exit("--layers must be at least 1")
    tok = Path(args.tokenizer_from)
    if not tok.is_file():
        sys.exit(f"{tok} is missing (scripts/fetch-model.sh fetches it)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, key in enumerate(names):
        m = MODELS[key]
        n_layer = args.layers or m.n_layer_default
        if m.arch == "deepseek2" and n_layer <= DS["n_dense"]:
            sys.exit(f"{key}: --layers must be more than the {DS['n_dense']} dense block(s)")
        path = out / m.file.format(n=n_layer)
        tensors = m.tensors(n_layer)
        if path.exists() and not args.force:
            print(f"{path}: exists, kept (--force rewrites it)", file=sys.stderr)
        else:
            t0 = time.time()
            print(f"{path}: writing ...", file=sys.stderr)
            write_model(m, n_layer, path, tok, args.context_length, args.seed + i)
            print(f"{path}: {path.stat().st_size / 1e9:.2f} GB in {time.time() - t0:.0f} s",
                  file=sys.stderr)
        rows.append((path, path.stat().st_size, weight_bytes_per_token(m, tensors)))
    print("| file | size (bytes) | weight bytes per decode token |")
    print("|---|---|---|")
    for path, size, bpt in rows:
        print(f"| {path.name} | {size} ({size / 1e9:.2f} GB) | {bpt} ({bpt / 1e6:.1f} MB) |")


if __name__ == "__main__":
    main()
