#!/usr/bin/env python3
"""Golden data for the mixture-of-experts architectures `qwen3moe` and `deepseek2`.

Writes golden/data/moe/ (deleted and rewritten):

* tiny random-weight GGUF files (gguf-py's GGUFWriter) with a real vocabulary — SmolLM2's
  first 2048 tokens and the merges among them — so text prompts work:
  tiny-qwen3moe-q8_0.gguf, tiny-qwen3moe-q4_0.gguf, tiny-qwen3moe-q4_k.gguf (experts and
  attention quantized to Q4_K by Strata's own `quantize`), tiny-deepseek2-lite.gguf (no
  q_lora, attn_kv_b), tiny-deepseek2.gguf (q_lora, split attn_k_b/attn_v_b, sigmoid gating
  with selection bias and expert groups, YaRN), tiny-deepseek2-kvb.gguf (exactly the weights
  of tiny-deepseek2.gguf in the older attn_kv_b layout);
* `<stem>.json` per file: forward.py's layout (prompt ids, greedy tokens and top-10 logits in
  the ggml and float modes) plus the experts each MoE block chose at every teacher-forced
  position and the margin of that choice (moe_ref.py is the reference forward pass);
* experts/: y = W[id]·x for 3-D expert stacks of every weight format (MANIFEST.txt);
* routing.json: router logits and the experts/weights each gating variant chooses.

It checks its own reference on the way (asserts): the two deepseek2 layouts give the same
float logits; the MoE FFN written densely equals the sparse one; absorbed MLA equals the
decompressed one; a llama model seen as qwen3moe with one expert equals forward.py.

Run from the repo root with the pinned venv, after `cargo build --release --bin quantize`:
    python3 golden/gen/moe.py [--smollm models/SmolLM2-135M-Instruct.Q4_1.gguf]
                              [--quantize target/release/quantize]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

import forward as fw
import moe_ref as ref
from common import DATA, QK_K, SIZES, Writer, dequantize, quantize, random_blocks, versions
from matvec import exact_weights, f16_value, quantize_q8_1, quantize_q8_k, scale_offsets

SEED = 20261129
N_VOCAB = 2048
OUT = os.path.join(DATA, "moe")
OUT_GAIN = 3.0      # output.weight std = OUT_GAIN/sqrt(n_embd): logits of std ~3
MIN_GAP = 0.1        # sigmoid gating: every top-k (and group) choice on the prompts has this margin
MIN_LOGIT_GAP = 0.5  # softmax gating: the same in router logits (asserted)


# ---------------------------------------------------------------- vocabulary

def smollm_vocab(path):
    """SmolLM2's first N_VOCAB tokens, their types, the merges whose two parts and result are
    all kept (in SmolLM2's order, so ranks are kept), the special ids and flags."""
    r = GGUFReader(path)
    f = lambda k: fw.field(r, "tokenizer.ggml." + k)
    assert f("model") == "gpt2" and f("pre") == "smollm"
    tokens = list(f("tokens")[:N_VOCAB])
    types = [int(t) for t in f("token_type")[:N_VOCAB]]
    keep = set(tokens)
    merges = []
    for m in f("merges"):
        a, b = m.split(" ", 1)
        if a in keep and b in keep and a + b in keep:
            merges.append(m)
    special = {k: int(f(k)) for k in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id")}
    assert all(v < N_VOCAB for v in special.values()), special
    return {"tokens": tokens, "types": types, "merges": merges, "special": special,
            "add_bos": bool(f("add_bos_token")), "add_space_prefix": bool(f("add_space_prefix"))}


def add_vocab(w, v):
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    w.add_token_merges(v["merges"])
    s = v["special"]
    w.add_bos_token_id(s["bos_token_id"])
    w.add_eos_token_id(s["eos_token_id"])
    w.add_unk_token_id(s["unknown_token_id"])
    w.add_pad_token_id(s["padding_token_id"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_space_prefix(v["add_space_prefix"])


# ---------------------------------------------------------------- random weights

class Gen:
    """Seeded random tensors: each tensor's generator is seeded by (SEED, the file's weight
    set, the tensor's name)."""

    def __init__(self, key):
        self.key = key

    def rng(self, name):
        return np.random.default_rng([SEED, zlib.crc32(self.key.encode()), zlib.crc32(name.encode())])

    def normal(self, name, shape, std):
        return (self.rng(name).standard_normal(shape) * std).astype(np.float32)

    def norm(self, name, n):
        return (1.0 + 0.1 * self.rng(name).standard_normal(n)).astype(np.float32)


# Routing with wide margins, by construction. Random routers on random hidden states put
# the k-th and (k+1)-th expert within ~1e-4 of each other somewhere on ~200 positions
# (order statistics), so a last-bit difference could flip a choice. Instead each MoE block m
# owns n_expert coordinates of the hidden state, C_m = [m·X, (m+1)·X): the token embedding
# holds there a per-token code, the router reads them (its other columns are small noise,
# std ROUTER_NOISE), and no matrix that writes into the residual stream (attn_output,
# ffn_down, ffn_down_exps, ffn_down_shexp) writes there (those rows are zero, exact in
# every format), so the code reaches every block unchanged but for the RMS norm's common
# scale and the norm weights. The router's block on C_m is ROUTER_GAIN·(I + 0.2·noise), and
# the code is solved so that at the embedding the router logits equal chosen targets:
#   softmax files: one expert at 4.0, another at 2.0, the rest 0 (random per token);
#   tiny-deepseek2 (sigmoid, selection bias b = +0.3 on even experts, +2.0 on expert 5,
#   4 groups of 2, 2 kept): half the tokens have one expert (not 4, 5) at 2.2, the rest at
#   −4.6; the other half an even expert at 2.2 and both experts of another group (not
#   {4,5}) at 0.85. Expert 5 is always chosen (bias); in the second half the group of the
#   two 0.85 experts (score ≈ 1.7) beats the group of the 2.2 one (≈ 1.2), so the second
#   choice is the even 0.85 expert — without groups it would be the 2.2 one. The margins
#   hold for any common scale of the logits in [0.4, 1.3].
ROUTER_GAIN = 3.0
ROUTER_NOISE = 0.01
SOFTMAX_TARGETS = (4.0, 2.0)
DS_HIGH, DS_MID, DS_LOW = 2.2, 0.85, -4.6
DS_BIAS = np.array([0.3, 0.0, 0.3, 0.0, 0.3, 2.0, 0.3, 0.0], dtype=np.float32)


def code_targets(p, g, m):
    """Target router logits (N_VOCAB × n_expert) of MoE block m, per token."""
    rng = g.rng(f"route_codes.{m}")
    X = p["n_expert"]
    if p["gating"] == ref.SOFTMAX:
        T = np.zeros((N_VOCAB, X))
        pick = np.argsort(rng.random((N_VOCAB, X)), axis=1)[:, :2]
        rows = np.arange(N_VOCAB)
        T[rows, pick[:, 0]], T[rows, pick[:, 1]] = SOFTMAX_TARGETS
        return T
    assert X == 8 and p["n_group"] == 4 and p["n_group_used"] == 2 and p["n_used"] == 2
    T = np.full((N_VOCAB, X), DS_LOW)
    for t in range(N_VOCAB):
        if rng.random() < 0.5:
            T[t, rng.choice([0, 1, 2, 3, 6, 7])] = DS_HIGH
        else:
            grp, grp1 = rng.choice([0, 1, 3], 2, replace=False)
            T[t, 2 * grp] = T[t, 2 * grp + 1] = DS_MID
            T[t, 2 * grp1] = DS_HIGH
    return T


def routing_structure(p, g, moe_blocks):
    """Token embedding (N_VOCAB × n_embd), routers {block: X × n_embd} and the code
    coordinates, as described above."""
    E, X = p["n_embd"], p["n_expert"]
    emb = g.normal("token_embd.weight", (N_VOCAB, E), 1.0).astype(np.float64)
    code = np.arange(len(moe_blocks) * X)
    assert code.size < E // 2
    routers, solved = {}, []
    for m, b in enumerate(moe_blocks):
        name = f"blk.{b}.ffn_gate_inp.weight"
        r = g.normal(name, (X, E), ROUTER_NOISE).astype(np.float64)
        B = ROUTER_GAIN * (np.eye(X) + 0.2 * g.rng(name + ".code").standard_normal((X, X)) / math.sqrt(X))
        r[:, m * X:(m + 1) * X] = B
        routers[b] = r.astype(np.float32)
        solved.append(np.linalg.solve(B, code_targets(p, g, m).T).T)  # B·u = targets
    u = np.concatenate(solved, axis=1)  # per token; x_code = u·rms(x)
    rest = np.delete(emb, code, axis=1)
    c2 = np.sum(u * u, axis=1)
    assert np.all(c2 < E), c2.max()
    rms = np.sqrt(np.sum(rest * rest, axis=1) / (E - c2))
    emb[:, code] = u * rms[:, None]
    return emb.astype(np.float32), routers, code


def zero_rows(a, code):
    """A residual-writing matrix with its rows (output coordinates) `code` zeroed."""
    a = a.copy()
    a[..., code, :] = 0
    return a


def qwen3moe_tensors(p, g):
    """(name, numpy array with shape = reversed ggml ne, type) for a qwen3moe file."""
    E, H, Hk, hd, F, X = p["n_embd"], p["n_head"], p["n_kv"], p["hd"], p["n_ff_exp"], p["n_expert"]
    mt, et = p["attn_type"], p["exp_type"]
    emb, routers, code = routing_structure(p, g, list(range(p["n_layer"])))
    out = [("token_embd.weight", emb, p["emb_type"]),
           ("output_norm.weight", g.norm("output_norm.weight", E), T.F32),
           ("output.weight", g.normal("output.weight", (N_VOCAB, E), OUT_GAIN / math.sqrt(E)), p["emb_type"])]
    for i in range(p["n_layer"]):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", g.norm(b + "attn_norm.weight", E), T.F32),
            (b + "attn_q.weight", g.normal(b + "attn_q.weight", (H * hd, E), 1 / math.sqrt(E)), mt),
            (b + "attn_k.weight", g.normal(b + "attn_k.weight", (Hk * hd, E), 1 / math.sqrt(E)), mt),
            (b + "attn_v.weight", g.normal(b + "attn_v.weight", (Hk * hd, E), 1 / math.sqrt(E)), mt),
            (b + "attn_output.weight",
             zero_rows(g.normal(b + "attn_output.weight", (E, H * hd), 1 / math.sqrt(H * hd)), code), mt),
            (b + "attn_q_norm.weight", g.norm(b + "attn_q_norm.weight", hd), T.F32),
            (b + "attn_k_norm.weight", g.norm(b + "attn_k_norm.weight", hd), T.F32),
            (b + "ffn_norm.weight", g.norm(b + "ffn_norm.weight", E), T.F32),
            (b + "ffn_gate_inp.weight", routers[i], T.F32),
            (b + "ffn_gate_exps.weight", g.normal(b + "ffn_gate_exps.weight", (X, F, E), 1 / math.sqrt(E)), et),
            (b + "ffn_up_exps.weight", g.normal(b + "ffn_up_exps.weight", (X, F, E), 1 / math.sqrt(E)), et),
            (b + "ffn_down_exps.weight",
             zero_rows(g.normal(b + "ffn_down_exps.weight", (X, E, F), 1 / math.sqrt(F)), code), et),
        ]
    return out


def qwen3moe_meta(w, p):
    w.add_context_length(256)
    w.add_embedding_length(p["n_embd"])
    w.add_block_count(p["n_layer"])
    w.add_feed_forward_length(p["n_ff_exp"])
    w.add_expert_feed_forward_length(p["n_ff_exp"])
    w.add_head_count(p["n_head"])
    w.add_head_count_kv(p["n_kv"])
    w.add_key_length(p["hd"])
    w.add_value_length(p["hd"])
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(p["n_expert"])
    w.add_expert_used_count(p["n_used"])
    # no rope.dimension_count, as Qwen3 files have none: n_rot defaults to key_length


def deepseek2_weights(p, g):
    """The deepseek2 weights as f32 arrays (kv_b as the f16 values it is stored as)."""
    E, H, nope, rot, v, kvl, ql = (p[k] for k in ("n_embd", "n_head", "qk_nope", "qk_rope", "v_head", "kv_lora", "q_lora"))
    F, X, S, nff = p["n_ff_exp"], p["n_expert"], p["n_shared"], p["n_ff"]
    moe_blocks = list(range(p["n_dense"], p["n_layer"]))
    emb, routers, code = routing_structure(p, g, moe_blocks)
    W = {"token_embd.weight": emb,
         "output_norm.weight": g.norm("output_norm.weight", E),
         "output.weight": g.normal("output.weight", (N_VOCAB, E), OUT_GAIN / math.sqrt(E))}
    for i in range(p["n_layer"]):
        b = f"blk.{i}."
        n = lambda name, shape, std: W.__setitem__(b + name, g.normal(b + name, shape, std))
        W[b + "attn_norm.weight"] = g.norm(b + "attn_norm.weight", E)
        W[b + "attn_kv_a_norm.weight"] = g.norm(b + "attn_kv_a_norm.weight", kvl)
        if ql:
            n("attn_q_a.weight", (ql, E), 1 / math.sqrt(E))
            W[b + "attn_q_a_norm.weight"] = g.norm(b + "attn_q_a_norm.weight", ql)
            n("attn_q_b.weight", (H * (nope + rot), ql), 1 / math.sqrt(ql))
        else:
            n("attn_q.weight", (H * (nope + rot), E), 1 / math.sqrt(E))
        n("attn_kv_a_mqa.weight", (kvl + rot, E), 1 / math.sqrt(E))
        kvb = g.normal(b + "attn_kv_b.weight", (H * (nope + v), kvl), 1 / math.sqrt(kvl))
        W[b + "attn_kv_b.weight"] = kvb.astype(np.float16).astype(np.float32)
        n("attn_output.weight", (E, H * v), 1 / math.sqrt(H * v))
        W[b + "ffn_norm.weight"] = g.norm(b + "ffn_norm.weight", E)
        if i < p["n_dense"]:
            n("ffn_gate.weight", (nff, E), 1 / math.sqrt(E))
            n("ffn_up.weight", (nff, E), 1 / math.sqrt(E))
            n("ffn_down.weight", (E, nff), 1 / math.sqrt(nff))
        else:
            W[b + "ffn_gate_inp.weight"] = routers[i]
            if p["gating"] == ref.SIGMOID:
                W[b + "exp_probs_b.bias"] = DS_BIAS.copy()
            n("ffn_gate_exps.weight", (X, F, E), 1 / math.sqrt(E))
            n("ffn_up_exps.weight", (X, F, E), 1 / math.sqrt(E))
            n("ffn_down_exps.weight", (X, E, F), 1 / math.sqrt(F))
            n("ffn_gate_shexp.weight", (F * S, E), 1 / math.sqrt(E))
            n("ffn_up_shexp.weight", (F * S, E), 1 / math.sqrt(E))
            n("ffn_down_shexp.weight", (E, F * S), 1 / math.sqrt(F * S))
        for k in ("attn_output", "ffn_down", "ffn_down_exps", "ffn_down_shexp"):
            if b + k + ".weight" in W:
                W[b + k + ".weight"] = zero_rows(W[b + k + ".weight"], code)
    return W


def split_kv_b(kvb, p):
    """attn_kv_b (H·(nope+v) × kv_lora) → attn_k_b (H, kv_lora, nope) and attn_v_b
    (H, v, kv_lora), numpy shapes (ggml ne [nope, kv_lora, H] and [kv_lora, v, H]), as
    llama.cpp's converter splits it: per head the first nope rows are k (transposed), the
    next v rows are v."""
    H, nope, v = p["n_head"], p["qk_nope"], p["v_head"]
    per = kvb.reshape(H, nope + v, -1)
    return np.ascontiguousarray(per[:, :nope, :].transpose(0, 2, 1)), np.ascontiguousarray(per[:, nope:, :])


def deepseek2_tensors(p, W, split):
    """(name, array, type) for a deepseek2 file: matrices Q8_0, router and 1-D F32,
    kv_b (or k_b/v_b when `split`) F16."""
    out = []
    for name, a in W.items():
        if name.endswith("attn_kv_b.weight"):
            if split:
                kb, vb = split_kv_b(a, p)
                out.append((name.replace("attn_kv_b", "attn_k_b"), kb, T.F16))
                out.append((name.replace("attn_kv_b", "attn_v_b"), vb, T.F16))
            else:
                out.append((name, a, T.F16))
        elif a.ndim == 1 or "ffn_gate_inp" in name:
            out.append((name, a, T.F32))
        else:
            out.append((name, a, T.Q8_0))
    return out


def deepseek2_meta(w, p, split):
    H, nope, rot, v, kvl = p["n_head"], p["qk_nope"], p["qk_rope"], p["v_head"], p["kv_lora"]
    w.add_context_length(256)
    w.add_embedding_length(p["n_embd"])
    w.add_block_count(p["n_layer"])
    w.add_feed_forward_length(p["n_ff"])
    w.add_head_count(H)
    # the converter writes 1 for the split (MQA over the latent) kind; older files n_head
    w.add_head_count_kv(1 if split else H)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_leading_dense_block_count(p["n_dense"])
    # llama.cpp reads q_lora_rank unless the block count is a known "lite" one: write 0
    w.add_q_lora_rank(p["q_lora"])
    w.add_kv_lora_rank(kvl)
    if split:
        w.add_key_length(kvl + rot)
        w.add_value_length(kvl)
        w.add_key_length_mla(nope + rot)
        w.add_value_length_mla(v)
    else:
        w.add_key_length(nope + rot)
        w.add_value_length(v)
    w.add_rope_dimension_count(rot)
    w.add_expert_feed_forward_length(p["n_ff_exp"])
    w.add_expert_count(p["n_expert"])
    w.add_expert_used_count(p["n_used"])
    w.add_expert_shared_count(p["n_shared"])
    w.add_expert_weights_scale(p["w_scale"])
    if p["w_norm"]:  # the converter writes it only when true
        w.add_expert_weights_norm(True)
    if p["gating"] == ref.SIGMOID:
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    if p["n_group"]:
        w.add_expert_group_count(p["n_group"])
        w.add_expert_group_used_count(p["n_group_used"])
    if p["yarn"]:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(p["yarn"]["factor"])
        w.add_rope_scaling_orig_ctx_len(p["yarn"]["orig_ctx"])
        w.add_rope_scaling_yarn_log_mul(p["yarn"]["log_mul"])


def write_gguf(path, arch, name, file_type, meta, tensors, vocab):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    meta(w)
    add_vocab(w, vocab)
    for tname, a, ty in tensors:
        if ty in (T.Q8_0, T.Q4_0):
            w.add_tensor(tname, quantize_rows(a, ty), raw_dtype=ty)
        elif ty == T.F16:
            w.add_tensor(tname, a.astype(np.float16))
        else:
            w.add_tensor(tname, a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_rows(a, ty):
    return gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), ty)


# ---------------------------------------------------------------- the files

QWEN_SMALL = dict(n_embd=64, n_layer=2, n_head=4, n_kv=2, hd=32, n_ff_exp=64, n_expert=8, n_used=2,
                  gating=ref.SOFTMAX, emb_type=T.Q8_0)
QWEN_K = dict(QWEN_SMALL, n_embd=256, n_ff_exp=256, hd=64)
DS_LITE = dict(n_embd=64, n_layer=3, n_head=4, qk_nope=32, qk_rope=16, v_head=32, kv_lora=64, q_lora=0,
               n_dense=1, n_ff=96, n_expert=8, n_ff_exp=32, n_used=2, n_shared=1, gating=ref.SOFTMAX,
               w_norm=False, w_scale=1.0, n_group=0, n_group_used=0, yarn=None)
DS_NEW = dict(DS_LITE, q_lora=32, n_shared=2, gating=ref.SIGMOID, w_norm=True, w_scale=2.5,
              n_group=4, n_group_used=2, yarn=dict(factor=4.0, orig_ctx=64, log_mul=0.1))

FILES = {
    # stem: weight-set key (seeds its tensors; build() picks the architecture from the stem)
    "tiny-qwen3moe-q8_0": "qwen3moe-q8_0",
    "tiny-qwen3moe-q4_0": "qwen3moe-q4_0",
    "tiny-qwen3moe-q4_k": "qwen3moe-q4_k",
    "tiny-deepseek2-lite": "deepseek2-lite",
    "tiny-deepseek2": "deepseek2",
    "tiny-deepseek2-kvb": "deepseek2",  # the same weights as tiny-deepseek2
}


def build(stem, vocab, quantizer, tmp):
    """Writes golden/data/moe/<stem>.gguf; returns its path."""
    path = os.path.join(OUT, stem + ".gguf")
    g = Gen(FILES[stem])
    if stem.startswith("tiny-qwen3moe"):
        kind = stem.rsplit("-", 1)[1]
        if kind == "q4_k":
            p = dict(QWEN_K, attn_type=T.F32, exp_type=T.F32, emb_type=T.F32)
            src = os.path.join(tmp, stem + ".f32.gguf")
            write_gguf(src, "qwen3moe", stem, gguf.LlamaFileType.ALL_F32, lambda w: qwen3moe_meta(w, p),
                       qwen3moe_tensors(p, g), vocab)
            cmd = [quantizer, src, path, "Q4_K", "--token-embedding-type", "Q8_0", "--output-type", "Q8_0"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            check_q4_k(src, path)
        else:
            ty = {"q8_0": T.Q8_0, "q4_0": T.Q4_0}[kind]
            ft = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind]
            p = dict(QWEN_SMALL, attn_type=ty, exp_type=ty)
            write_gguf(path, "qwen3moe", stem, ft, lambda w: qwen3moe_meta(w, p), qwen3moe_tensors(p, g), vocab)
    else:
        p = DS_LITE if stem == "tiny-deepseek2-lite" else DS_NEW
        split = stem == "tiny-deepseek2"
        W = deepseek2_weights(p, g)
        write_gguf(path, "deepseek2", stem, gguf.LlamaFileType.MOSTLY_Q8_0, lambda w: deepseek2_meta(w, p, split),
                   deepseek2_tensors(p, W, split), vocab)
    return path


def check_q4_k(src, dst):
    """Our quantizer's output: matrices Q4_K, token_embd/output Q8_0, router and norms F32
    with the router's bytes unchanged."""
    a = {t.name: t for t in GGUFReader(src).tensors}
    for t in GGUFReader(dst).tensors:
        ty = T(t.tensor_type)
        if t.name in ("token_embd.weight", "output.weight"):
            assert ty == T.Q8_0, (t.name, ty)
        elif len(t.shape) == 1 or "ffn_gate_inp" in t.name:
            assert ty == T.F32, (t.name, ty)
            assert np.array_equal(np.asarray(t.data), np.asarray(a[t.name].data)), t.name
        else:
            assert ty == T.Q4_K, (t.name, ty)


# ---------------------------------------------------------------- running a file

def routing_record(trace, n_group):
    out = []
    for li, r in trace:
        rec = {"block": li, "ids": r["ids"].tolist(), "weights": r["weights"].tolist(), "gap": r["gap"].tolist()}
        if "logit_gap" in r:
            rec["logit_gap"] = r["logit_gap"].tolist()
        if n_group:
            rec["groups"] = r["groups"].tolist()
            rec["group_gap"] = r["group_gap"].tolist()
        out.append(rec)
    return out


def min_gap(records, key="gap"):
    """The smallest margin of any choice: `gap` (with groups also the group gap) or
    `logit_gap` (softmax files)."""
    if key == "logit_gap":
        return min(min(rec["logit_gap"]) for rec in records)
    g = [min(rec["gap"]) for rec in records]
    g += [min(rec["group_gap"]) for rec in records if "group_gap" in rec]
    return min(g)


def check_code_rows(model):
    """The routing code coordinates are never written: those rows of every residual-writing
    matrix dequantize to exactly 0 (see routing_structure)."""
    n_moe = sum(1 for L in model.layers if "router" in L)
    code = np.arange(n_moe * model.n_expert)
    for L in model.layers:
        mats = [L["attn_output"]] + [L[k] for k in ("ffn_down", "ffn_down_shexp") if k in L] + L.get("down_exps", [])
        for m in mats:
            assert not np.any(m.w[code]), "a code coordinate is written"


def run_file(path, tk, eos):
    """forward.py's record for every prompt, plus routing; returns (cases, summary)."""
    model = ref.load(path)
    cases = []
    margins = []
    for prompt in fw.PROMPTS:
        ids = tk.encode(prompt, add_special_tokens=False).ids
        case = {"prompt": prompt, "prompt_ids": ids}
        for mode in ("ggml", "float"):
            gen = fw.greedy(model, ids, mode, eos)
            case[f"greedy_{mode}"] = gen
            case[f"greedy_{mode}_text"] = tk.decode(gen)
        seq = ids + case["greedy_ggml"]
        case["teacher_forced_ids"] = seq
        full = {}
        for mode in ("ggml", "float"):
            trace = []
            logits = full[mode] = model.forward(seq, mode, model.new_cache(), trace=trace)
            case[f"top_{mode}"] = [fw.top_k(row) for row in logits]
            case[f"routing_{mode}"] = routing_record(trace, model.n_group)
            if mode == "ggml":
                # the batched pass reproduces the incremental greedy choices
                steps = logits[len(ids) - 1:len(seq) - 1]
                assert [int(np.argmax(r)) for r in steps] == case["greedy_ggml"], path
                srt = -np.sort(-steps, axis=1)
                case["greedy_margin_ggml"] = (srt[:, 0] - srt[:, 1]).tolist()
                margins.append(float(np.min(srt[:, 0] - srt[:, 1])))
        case["max_ggml_vs_float"] = float(np.max(np.abs(full["ggml"] - full["float"])))
        for mode in ("ggml", "float"):
            case[f"min_gap_{mode}"] = min_gap(case[f"routing_{mode}"])
            if model.gating == ref.SOFTMAX:
                case[f"min_logit_gap_{mode}"] = min_gap(case[f"routing_{mode}"], "logit_gap")
        cases.append(case)
    summary = {k: min(c[k] for c in cases) for k in cases[0] if k.startswith("min_")}
    summary["max_ggml_vs_float"] = max(c["max_ggml_vs_float"] for c in cases)
    summary["greedy_margin_ggml"] = min(margins)
    return model, cases, summary


def model_meta(model):
    m = {"arch": model.arch, "n_layer": model.n_layer, "n_embd": model.n_embd, "n_head": model.n_head,
         "n_expert": model.n_expert, "n_expert_used": model.n_used, "gating": {1: "softmax", 2: "sigmoid"}[model.gating],
         "expert_weights_norm": model.norm_w, "expert_weights_scale": model.w_scale,
         "expert_group_count": model.n_group, "expert_group_used_count": model.n_group_used}
    if isinstance(model, ref.DeepSeek2):
        m.update({"kind": "split attn_k_b/attn_v_b (absorbed MLA)" if model.is_mla else "attn_kv_b (decompressed MLA)",
                  "q_lora_rank": model.q_lora, "kv_lora_rank": model.kv_lora, "qk_nope": model.nope,
                  "qk_rope": model.n_rot, "v_head": model.dv, "leading_dense_block_count": model.n_dense,
                  "expert_shared_count": model.n_shared, "rope": "norm (adjacent pairs) on the qk_rope part",
                  "freq_scale": model.freq_scale, "yarn_corr_dims": list(model.rope.corr),
                  "yarn_ramp": model.rope.ramp().tolist() if model.rope.ext_factor else None,
                  "rope_magnitude": model.rope_magnitude, "mscale": model.mscale, "kq_scale": model.kq_scale})
    else:
        m.update({"n_head_kv": model.n_kv, "head_dim": model.hd, "rope": "neox", "n_rot": model.rope.n_rot,
                  "kq_scale": 1.0 / math.sqrt(model.hd)})
    return m


def write_json(path, model, cases, summary):
    with open(path, "rb") as f:
        blob = f.read()
    meta = {
        "model": os.path.basename(path),
        "gguf_bytes": len(blob),
        "gguf_sha256": hashlib.sha256(blob).hexdigest(),
        "generator": "golden/gen/moe.py (reference: golden/gen/moe_ref.py)",
        "seed": SEED,
        "top_k": fw.TOP_K,
        "n_gen": fw.N_GEN,
        "config": model_meta(model),
        "modes": {
            "ggml": "weight products with activations quantized to the weight's vec_dot_type (q8_0 for "
                    "Q4_0/Q8_0, q8_K for K-quants, f16 for F16, f32 for the F32 router), f16 K/V cache "
                    "(deepseek2: the cached values), other ops float64",
            "float": "all activations float64, weights dequantized by gguf.quants",
        },
        "routing": "routing_<mode>[b] for each MoE block b: ids[pos] (descending selection score), "
                   "weights[pos], gap[pos] = k-th minus (k+1)-th selection score among eligible experts; "
                   "softmax files also logit_gap[pos] (the same in router logits); with groups also "
                   "groups[pos] (kept groups, best first) and group_gap[pos]",
        **summary,
    }
    stem = os.path.splitext(os.path.basename(path))[0]
    with open(os.path.join(OUT, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")


def make_file(stem, vocab, tk, eos, quantizer, tmp):
    """Builds the file, runs the reference on it, checks the routing margins, writes the
    JSON. Returns the model, cases and summary."""
    path = build(stem, vocab, quantizer, tmp)
    model, cases, summary = run_file(path, tk, eos)
    print(f"  {stem}: {os.path.getsize(path)} bytes; " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    if model.gating == ref.SOFTMAX:  # probabilities near 1/n_expert: their margin in logits
        assert min(summary["min_logit_gap_ggml"], summary["min_logit_gap_float"]) >= MIN_LOGIT_GAP, (stem, summary)
    else:
        assert min(summary["min_gap_ggml"], summary["min_gap_float"]) >= MIN_GAP, (stem, summary)
    check_code_rows(model)
    write_json(path, model, cases, summary)
    return model, cases, summary


# ---------------------------------------------------------------- validation

def max_diff_logits(a, b, tk, mode):
    """max |logits(a) − logits(b)| over each prompt followed by 12 fixed tokens."""
    worst = 0.0
    for prompt in fw.PROMPTS:
        ids = tk.encode(prompt, add_special_tokens=False).ids
        seq = ids + [(7 * i + 100) % N_VOCAB for i in range(12)]
        la = a.forward(seq, mode, a.new_cache())
        lb = b.forward(seq, mode, b.new_cache())
        worst = max(worst, float(np.max(np.abs(la - lb))))
    return worst


def validate(models, tk, tmp):
    """The reference checked against itself, written other ways. Returns the numbers."""
    res = {}
    # (i) the two deepseek2 layouts, float mode: same weights, absorbed vs decompressed
    split, kvb = models["tiny-deepseek2"], models["tiny-deepseek2-kvb"]
    assert split.absorbed and not kvb.absorbed
    res["i_split_vs_kvb_float"] = max_diff_logits(split, kvb, tk, "float")
    assert res["i_split_vs_kvb_float"] < 1e-9, res
    res["i_split_vs_kvb_ggml"] = max_diff_logits(split, kvb, tk, "ggml")  # differ: f16 roundings
    # (ii) the MoE FFN written densely (every expert, weight 0 where unchosen)
    worst = 0.0
    for stem, m in models.items():
        for mode in ("float", "ggml"):
            dense = ref.load(os.path.join(OUT, stem + ".gguf"))
            dense.moe_fn = ref.moe_dense
            worst = max(worst, max_diff_logits(m, dense, tk, mode))
    res["ii_sparse_vs_dense"] = worst
    assert worst < 1e-9, res
    # (iii) absorbed MLA vs decompressed on the split file's own weights (kv_b assembled)
    dec = ref.load(os.path.join(OUT, "tiny-deepseek2.gguf"))
    dec.absorbed = False
    res["iii_absorbed_vs_decompressed_float"] = max_diff_logits(split, dec, tk, "float")
    assert res["iii_absorbed_vs_decompressed_float"] < 1e-9, res
    # (iv) a llama model as qwen3moe with one expert of one (same weights) vs forward.py
    path = os.path.join(tmp, "tiny-llama.gguf")
    write_tiny_llama(path)
    a, b = fw.Model(path), ref.Qwen3Moe(path)
    for mode in ("float", "ggml"):
        worst = 0.0
        for prompt in fw.PROMPTS:
            ids = tk.encode(prompt, add_special_tokens=False).ids
            ca, cb = a.new_cache(), b.new_cache()
            la = a.forward(ids, mode, ca)
            lb = b.forward(ids, mode, cb)
            worst = max(worst, float(np.max(np.abs(la - lb))))
            for t in (5, 77, 1999):  # then token by token through the caches
                worst = max(worst, float(np.max(np.abs(a.forward([t], mode, ca) - b.forward([t], mode, cb)))))
        res[f"iv_llama_one_expert_vs_forward_py_{mode}"] = worst
        assert worst < 1e-9, res
    # YaRN: the corr dims and the cancellation of the rope's magnitude factor
    assert split.rope.corr == (0.0, 3.0) and abs(split.rope_magnitude - 1.0) < 1e-15, split.rope.corr
    assert abs(split.mscale - (1 + 0.1 * math.log(4.0))) < 1e-12, split.mscale
    return res


def write_tiny_llama(path):
    """A llama GGUF (Q8_0 matrices) for check (iv); forward.py reads llama only."""
    g = Gen("llama-check")
    E, H, Hk, hd, F, n_layer = 64, 4, 2, 16, 64, 2
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layer)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hk)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tensor("token_embd.weight", quantize_rows(g.normal("token_embd.weight", (N_VOCAB, E), 1.0), T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("output_norm.weight", g.norm("output_norm.weight", E))
    for i in range(n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", g.norm(b + "attn_norm.weight", E))
        w.add_tensor(b + "ffn_norm.weight", g.norm(b + "ffn_norm.weight", E))
        for name, shape in (("attn_q", (H * hd, E)), ("attn_k", (Hk * hd, E)), ("attn_v", (Hk * hd, E)),
                            ("attn_output", (E, H * hd)), ("ffn_gate", (F, E)), ("ffn_up", (F, E)), ("ffn_down", (E, F))):
            a = g.normal(b + name, shape, 1 / math.sqrt(shape[1]))
            w.add_tensor(b + name + ".weight", quantize_rows(a, T.Q8_0), raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- experts/: y = W[id]·x

EXPERT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16"]
EXPERT_ACT = {"Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "Q4_1": "Q8_1", "Q5_1": "Q8_1",
              "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K", "F16": "F16"}
EXP_N, EXP_ROWS, EXP_COLS, EXP_TOKENS = 8, 64, 256, 4
# per token the 2 experts chosen: the first and last expert, a repeat in the other order
EXP_IDS = np.array([[3, 5], [7, 0], [5, 3], [2, 6]], dtype=np.uint8)


def expert_case(w, ty):
    rng = np.random.default_rng([SEED, zlib.crc32(b"experts"), zlib.crc32(ty.encode())])
    act = EXPERT_ACT[ty]
    x = rng.standard_normal((EXP_TOKENS, EXP_COLS)).astype(np.float32)
    if ty == "F16":
        wf = (rng.standard_normal(EXP_N * EXP_ROWS * EXP_COLS) * 0.05).astype(np.float32)
        wraw = wf.astype("<f2").view(np.uint8)
        wdeq = dequantize(ty, wraw).astype(np.float64)
        wexact = wdeq
    else:
        bs, _ = SIZES[ty]
        blocks = random_blocks(rng, ty, EXP_N * EXP_ROWS * EXP_COLS // bs)
        wraw = blocks.reshape(-1)
        wdeq = dequantize(ty, wraw).astype(np.float64)
        wexact = exact_weights(ty, blocks)
        assert np.all(np.abs(wexact - wdeq) <= 4 * np.spacing(np.abs(wdeq).astype(np.float32)) + 1e-30)
    W = wdeq.reshape(EXP_N, EXP_ROWS, EXP_COLS)
    We = wexact.reshape(EXP_N, EXP_ROWS, EXP_COLS)
    row_bytes = wraw.size // (EXP_N * EXP_ROWS)
    wb = wraw.reshape(EXP_N, EXP_ROWS, row_bytes)
    y = np.empty((EXP_TOKENS, 2, EXP_ROWS))
    y_q = np.empty_like(y)
    abs_dot = np.empty_like(y)
    xq_rows = []
    for t in range(EXP_TOKENS):
        xt = x[t]
        x64 = xt.astype(np.float64)
        if act == "F16":
            xq_raw = xt.astype("<f2").view(np.uint8)
            xq = f16_value(xq_raw)
        elif act == "Q8_0":
            xq_raw = quantize("Q8_0", xt)
            xb = xq_raw.reshape(-1, 34)
            xq = np.repeat(f16_value(xb[:, :2]), 32) * xb[:, 2:].view(np.int8).astype(np.float64).reshape(-1)
        elif act == "Q8_1":
            xq_raw, dx, sx, qx = quantize_q8_1(xt)
        else:
            xq_raw, dx, qx = quantize_q8_k(xt)
            xq = np.repeat(dx, QK_K) * qx.reshape(-1).astype(np.float64)
        xq_rows.append(np.ascontiguousarray(xq_raw).reshape(-1))
        for k in range(2):
            e = int(EXP_IDS[t, k])
            y[t, k] = W[e] @ x64
            abs_dot[t, k] = np.abs(W[e]) @ np.abs(x64)
            if act == "Q8_1":
                # ggml: Σ_b d_w·d_x·Σ q_w·q_x + m_w·s_x (matvec.py's formula)
                nb = EXP_COLS // 32
                offs = scale_offsets(ty)
                blocks_e = wb[e].reshape(EXP_ROWS, nb, -1)
                mw = f16_value(np.ascontiguousarray(blocks_e[:, :, offs[1]:offs[1] + 2])).reshape(EXP_ROWS, nb)
                intpart = (We[e].reshape(EXP_ROWS, nb, 32) - mw[:, :, None]) * (dx[None, :, None] * qx.reshape(1, nb, 32))
                y_q[t, k] = intpart.sum(axis=(1, 2)) + (mw * sx[None, :]).sum(axis=1)
            else:
                y_q[t, k] = We[e] @ xq
    stem = ty
    w.put(f"{stem}.w", wb, type=ty, experts=EXP_N, rows=EXP_ROWS, cols=EXP_COLS, act=act, seed=SEED)
    w.put(f"{stem}.x", x)
    w.put(f"{stem}.ids", EXP_IDS)
    w.put(f"{stem}.xq", np.stack(xq_rows), type=act)
    w.put(f"{stem}.y", y)
    w.put(f"{stem}.y_q", y_q)
    w.put(f"{stem}.abs_dot", abs_dot)
    rel = np.max(np.abs(y_q - y) / np.maximum(abs_dot, 1e-30))
    print(f"  experts {ty:5} act={act:4} max|y_q - y|/Σ|w·x| = {rel:.2e}")


def write_experts():
    w = Writer("moe/experts", """
golden/gen/moe.py: y[t][k] = W[ids[t][k]]·x[t] for a 3-D expert stack W (8 experts × 64 rows × 256
cols, raw blocks) per weight format; y in float64 from gguf's dequantized W, y_q with x[t]
quantized to the activation format act= (bytes in .xq, one row per token), as matvec/.""")
    for ty in EXPERT_TYPES:
        expert_case(w, ty)
    w.close()


# ---------------------------------------------------------------- routing.json

ROUTE_TOKENS, ROUTE_EXPERTS, ROUTE_K = 16, 64, 8
ROUTE_CASES = [
    # name, gating, bias, n_group, n_group_used, norm, scale
    ("softmax_norm", ref.SOFTMAX, False, 0, 0, True, 0.0),       # qwen3moe
    ("softmax", ref.SOFTMAX, False, 0, 0, False, 1.0),           # DeepSeek-V2 (lite)
    ("sigmoid_bias_norm_scale", ref.SIGMOID, True, 0, 0, True, 2.5),
    ("sigmoid_bias_groups_norm", ref.SIGMOID, True, 8, 3, True, 1.0),
]


def routing_inputs():
    """16 rows of f32 router logits over 64 experts, labelled, and a selection bias (f32,
    std 0.1; experts 40, 41 copy 16, 17)."""
    rng = np.random.default_rng([SEED, zlib.crc32(b"routing")])
    E = ROUTE_EXPERTS
    bias = (rng.standard_normal(E) * 0.1).astype(np.float32)
    bias[40:42] = bias[16:18]  # experts 40, 41 have the biases of 16, 17 (the group tie of row 13)
    L = (rng.standard_normal((ROUTE_TOKENS, E)) * 2).astype(np.float32)
    labels = ["random"] * ROUTE_TOKENS
    # 8: every logit equal: softmax picks experts 0..7; sigmoid+bias orders by the bias,
    #    equal biases by index
    L[8] = 0.5
    labels[8] = "all_equal"
    # 9: a tie exactly at the k-th/(k+1)-th place of the softmax order (experts 41 and 12)
    srt = np.argsort(-L[9], kind="stable")
    L[9, 12] = L[9, 41] = L[9, srt[ROUTE_K - 1]] + np.float32(0.25)
    L[9, srt[:ROUTE_K - 1]] += np.float32(3.0)
    labels[9] = "tie_at_k_12_41"
    # 10: two-valued: 12 experts at 1.0, the rest at -1.0 (ties among the 12)
    L[10] = -1.0
    L[10, [1, 5, 9, 14, 22, 30, 33, 38, 47, 51, 58, 63]] = 1.0
    labels[10] = "two_valued"
    # 11: all very negative: sigmoid probs ~1e-6, the sum of the chosen below the clamp
    #     2^-14 (yet not so small that p + bias loses p in f32)
    L[11] = (-14.0 + 0.5 * rng.standard_normal(E)).astype(np.float32)
    labels[11] = "very_negative"
    # 12: a few experts masked off at -1e4 (exp underflows to 0), the rest random
    L[12, [0, 2, 3, 17, 40, 41]] = -1e4
    labels[12] = "some_minus_1e4"
    # 13: groups 2 and 5 tie exactly at the 3rd/4th group place: their two best experts
    #     (16, 17 and 40, 41) have the same logits and biases; groups 0 and 7 clearly best
    L[13] = -2.0
    L[13, 0:8] += 4.0
    L[13, 56:64] += 3.0
    L[13, 16:18] = L[13, 40:42] = np.float32([0.5, 0.25])
    labels[13] = "group_tie_2_5"
    # 14: large positive logits: sigmoid is exactly 1 in f32 and f64 alike (logits >= 38),
    #     the bias decides
    L[14] = (40.0 + np.abs(rng.standard_normal(E))).astype(np.float32)
    labels[14] = "saturated"
    # 15: seven experts clearly best, then experts 17 and 41 (equal logits and biases) tie
    #     exactly for the 8th place in every case (groups 0, 2, 5 are kept with groups)
    L[15] = -3.0
    L[15, [0, 16, 18, 19, 40, 42, 43]] = np.float32(3.0) + np.arange(7, dtype=np.float32) / 8
    L[15, 17] = L[15, 41] = 0.0
    labels[15] = "tie_at_k_17_41"
    return L, bias, labels


def route_f32(L, bias, gating, k, use_bias, n_group, n_group_used):
    """The selection as ggml computes it in f32 (for the check that f64 chooses the same)."""
    L = L.astype(np.float32)
    if gating == ref.SOFTMAX:
        e = np.exp(L - L.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    else:
        with np.errstate(over="ignore"):
            p = np.float32(1) / (np.float32(1) + np.exp(-L))
    sel = (p + bias[None, :]) if use_bias else p
    n, E = sel.shape
    if n_group:
        g = sel.reshape(n, n_group, -1)
        gs = -np.sort(-g, axis=2)[:, :, 0] + -np.sort(-g, axis=2)[:, :, 1]
        keep = np.argsort(-gs, axis=1, kind="stable")[:, :n_group_used]
        m = np.full_like(g, -np.inf)
        r = np.arange(n)[:, None]
        m[r, keep] = g[r, keep]
        sel = m.reshape(n, E)
    return np.argsort(-sel, axis=1, kind="stable")[:, :k]


def write_routing():
    L, bias, labels = routing_inputs()
    out = {
        "meta": {
            "generator": "golden/gen/moe.py", "seed": SEED, "versions": versions(),
            "n_tokens": ROUTE_TOKENS, "n_expert": ROUTE_EXPERTS, "k": ROUTE_K,
            "rule": "probs = softmax or sigmoid(logits) (float64 of the f32 logits); selection = probs "
                    "(+ bias); groups: consecutive blocks of n_expert/n_group experts, score = sum of "
                    "the group's 2 best selection scores, the n_group_used best kept, others -inf; "
                    "ids = the k best selection scores in descending order, ties to the LOWER index "
                    "(groups too); weights = probs[ids], if norm divided by max(sum, 6.103515625e-5), "
                    "times scale unless scale is 0 or 1",
            "ties": "ggml's CPU argsort (ggml_argsort_top_k -> std::sort, not stable) leaves the order of "
                    "equal values unspecified: with libstdc++ rows of <= 16 values are insertion-sorted "
                    "(stable: lower index first), longer rows are not. Rows labelled all_equal, tie_at_k_*, "
                    "two_valued, group_tie_* have exact ties at the k-th place; an implementation that "
                    "does not break ties toward the lower index may differ there and only there",
            "gap": "k-th minus (k+1)-th selection score among eligible experts (0 on an exact tie); "
                   "group_gap likewise for the n_group_used-th group",
        },
        "logits": [[float(v) for v in row] for row in L],
        "bias": [float(v) for v in bias],
        "row_labels": labels,
        "cases": [],
    }
    for name, gating, use_bias, n_group, n_used_g, norm, scale in ROUTE_CASES:
        r = ref.route(L.astype(np.float64), gating, ROUTE_K, bias if use_bias else None,
                      n_group, n_used_g, norm, scale)
        f32_ids = route_f32(L, bias, gating, ROUTE_K, use_bias, n_group, n_used_g)
        assert np.array_equal(f32_ids, r["ids"]), name  # f32 arithmetic chooses the same
        c = {"name": name, "gating": {1: "softmax", 2: "sigmoid"}[gating], "bias": use_bias,
             "n_group": n_group, "n_group_used": n_used_g, "norm": norm, "scale": scale,
             "ids": r["ids"].tolist(), "weights": r["weights"].tolist(), "gap": r["gap"].tolist()}
        if n_group:
            c["groups"] = r["groups"].tolist()
            c["group_gap"] = r["group_gap"].tolist()
        # no near ties by accident: every gap is exactly 0 or open by > 1e-4 of the score
        kth = np.take_along_axis(r["probs"] + (bias[None, :] if use_bias else 0), r["ids"][:, -1:], axis=1)[:, 0]
        assert np.all((r["gap"] == 0) | (r["gap"] > 1e-4 * np.abs(kth))), (name, r["gap"])
        if n_group:
            assert np.all((r["group_gap"] == 0) | (r["group_gap"] > 1e-4)), (name, r["group_gap"])
        ties = [labels[i] for i in range(ROUTE_TOKENS) if r["gap"][i] == 0 or (n_group and r["group_gap"][i] == 0)]
        print(f"  routing {name}: exact ties at the k-th place in rows {ties}")
        out["cases"].append(c)
    with open(os.path.join(OUT, "routing.json"), "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smollm", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--quantize", default="target/release/quantize")
    args = ap.parse_args()
    if not os.path.exists(args.quantize):
        sys.exit(f"{args.quantize} not found: run `cargo build --release --bin quantize` first")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    vocab = smollm_vocab(args.smollm)
    print(f"vocabulary: {len(vocab['tokens'])} tokens, {len(vocab['merges'])} merges, {vocab['special']}")
    models, summaries = {}, {}
    tk = eos = None
    with tempfile.TemporaryDirectory() as tmp:
        for stem in FILES:
            if tk is None:  # the tokenizer from the first file written (all share it)
                path = build(stem, vocab, args.quantize, tmp)
                tk = fw.build_tokenizer(GGUFReader(path))
                eos = vocab["special"]["eos_token_id"]
            models[stem], _, summaries[stem] = make_file(stem, vocab, tk, eos, args.quantize, tmp)
        res = validate(models, tk, tmp)
    for k, v in res.items():
        print(f"  check {k}: max |Δlogit| = {v:.3g}")
    write_experts()
    write_routing()
    with open(os.path.join(OUT, "SHA256SUMS"), "w") as f:  # `sha256sum -c SHA256SUMS`
        names = sorted(os.listdir(OUT)) + [f"experts/{n}" for n in sorted(os.listdir(os.path.join(OUT, "experts")))]
        for name in names:
            p = os.path.join(OUT, name)
            if os.path.isfile(p) and name != "SHA256SUMS":
                f.write(f"{hashlib.sha256(open(p, 'rb').read()).hexdigest()}  {name}\n")
    for stem in FILES:
        print(f"  {stem}.gguf {os.path.getsize(os.path.join(OUT, stem + '.gguf'))} bytes, "
              + ", ".join(f"{k} {v:.4g}" for k, v in summaries[stem].items()))

if __name__ == "__main__":
    main()
