"""Reference forward pass of the mixture-of-experts architectures `qwen3moe` and `deepseek2`
(DeepSeek-V2/V3/R1, multi-head latent attention), written from their definitions with numpy,
independent of Strata's code. golden/gen/moe.py drives it; forward.py (llama) supplies the
shared pieces: the prompts, the activation quantizers for Q8_0/Q8_1 and the `Weight` class,
the tokenizer, the top-k record and the greedy loop.

Modes, as forward.py defines them:

* ``float``: activations in float64; a weight is its `gguf.quants.dequantize` f32 values.
* ``ggml``: as ggml's CPU backend computes: before each weight product the activation row is
  quantized to the weight's activation format (`vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1
  for Q4_1/Q5_1 (with ggml's m·s term), Q8_K for the K-quants (per 256, d an f32), f16 for F16
  weights, f32 for F32 weights (the MoE router); K/V (deepseek2: the cached latent and k_pe)
  stored as f16. Norms, rope, softmax, routing and the products themselves are float64.
  As in forward.py, Q·Kᵀ and P·V take the f16 cache values with Q and P unrounded (ggml
  would round Q and P to f16 as well; this keeps forward.py's convention).

Routing (`route`) is shared with the routing golden data: selection scores = probs (+ the
selection bias), groups, top-k with ties broken toward the lower expert index (a stable sort
of the negated scores), weights = probs at the chosen experts, normalized by their sum
clamped below at 6.103515625e-5 (f16's smallest normal) when asked, times the scale when it
is neither 0 nor 1 (llama.cpp's build_moe_ffn).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

import forward as fw
from matvec import quantize_q8_k

KQUANTS = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}
NORM_CLAMP = 6.103515625e-5  # llama.cpp clamps the weight sum below at f16's smallest normal

SOFTMAX, SIGMOID = 1, 2  # gguf ExpertGatingFuncType


# ---------------------------------------------------------------- weights

class Mat(fw.Weight):
    """A 2-D weight rows × cols from raw ggml bytes (a tensor, or one expert of a 3-D stack),
    with forward.py's Weight extended to the K-quants and to F16/F32 in ggml mode."""

    def __init__(self, raw: np.ndarray, ty: T, rows: int, cols: int):
        super().__init__(SimpleNamespace(tensor_type=ty, shape=(cols, rows), data=raw))

    def matmul(self, x, mode):
        if mode == "ggml":
            if self.ty in KQUANTS:  # Q8_K activations (quantize_row_q8_K_ref), per row
                _, d, q = quantize_q8_k(np.ascontiguousarray(x))
                xq = (np.repeat(d, 256) * q.reshape(-1)).reshape(x.shape)
                return xq @ self.w.T
            if self.ty == T.F16:  # vec_dot_type F16: the activation is rounded to f16
                return x.astype(np.float16).astype(np.float64) @ self.w.T
            if self.ty == T.F32:
                return x.astype(np.float32).astype(np.float64) @ self.w.T
        return super().matmul(x, mode)


def tensor_raw(t) -> np.ndarray:
    """A reader tensor's bytes, flat."""
    return np.ascontiguousarray(np.asarray(t.data)).reshape(-1).view(np.uint8)


def mat(t) -> Mat:
    assert len(t.shape) == 2, (t.name, t.shape)
    return Mat(tensor_raw(t), T(t.tensor_type), int(t.shape[1]), int(t.shape[0]))


def mats3(t) -> list[Mat]:
    """A 3-D stack ne [cols, rows, n] as n matrices rows × cols."""
    cols, rows, n = (int(v) for v in t.shape)
    raw = tensor_raw(t).reshape(n, -1)
    return [Mat(raw[e], T(t.tensor_type), rows, cols) for e in range(n)]


def vec(t) -> np.ndarray:
    return np.asarray(t.data, dtype=np.float64).reshape(-1)


# ---------------------------------------------------------------- small ops

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x):
    with np.errstate(over="ignore"):  # exp(1e4) = inf: the probability is 0
        return 1.0 / (1.0 + np.exp(-x))


def f16(x):
    return x.astype(np.float16).astype(np.float64)


class Rope:
    """ggml's rope on the first n_rot values of each head: NORM rotates adjacent pairs
    (2i, 2i+1), NEOX pairs (i, i + n_rot/2); angle for pair i at position p:

        theta_extrap = p · base^(−2i/n_rot)
        theta_interp = freq_scale · theta_extrap
        theta        = theta_interp·(1 − r_i) + theta_extrap·r_i,  r_i = ramp_i · ext_factor
        ramp_i       = 1 − clamp((i − low) / max(0.001, high − low), 0, 1)

    with [low, high] = ggml_rope_yarn_corr_dims(n_rot, n_ctx_orig, base, beta_fast 32,
    beta_slow 1) and cos/sin multiplied by `magnitude` (1 in every file here; see
    yarn_factors). Without YaRN: freq_scale 1, ext_factor 0, so theta = theta_extrap."""

    def __init__(self, n_rot, base, neox, freq_scale=1.0, ext_factor=0.0, n_ctx_orig=0,
                 magnitude=1.0, beta_fast=32.0, beta_slow=1.0):
        self.n_rot, self.base, self.neox = n_rot, base, neox
        self.freq_scale, self.ext_factor, self.magnitude = freq_scale, ext_factor, magnitude
        self.corr = corr_dims(n_rot, n_ctx_orig, base, beta_fast, beta_slow) if ext_factor else (0.0, 0.0)

    def ramp(self):
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        low, high = self.corr
        y = (i - low) / max(0.001, high - low)
        return 1.0 - np.minimum(1.0, np.maximum(0.0, y))

    def angles(self, pos):
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        extrap = np.asarray(pos, dtype=np.float64)[:, None] * self.base ** (-2.0 * i / self.n_rot)
        interp = self.freq_scale * extrap
        if self.ext_factor == 0:
            return interp
        mix = self.ramp() * self.ext_factor
        return interp * (1 - mix) + extrap * mix

    def __call__(self, x, pos0):
        """x: (n, heads, d) with d ≥ n_rot, for positions pos0, pos0+1, …; rotates x[..., :n_rot]."""
        n = x.shape[0]
        th = self.angles(np.arange(pos0, pos0 + n))[:, None, :]
        c, s = np.cos(th) * self.magnitude, np.sin(th) * self.magnitude
        x = x.copy()
        r = self.n_rot
        if self.neox:
            a, b = x[..., 0:r // 2].copy(), x[..., r // 2:r].copy()
            x[..., 0:r // 2] = a * c - b * s
            x[..., r // 2:r] = a * s + b * c
        else:
            a, b = x[..., 0:r:2].copy(), x[..., 1:r:2].copy()
            x[..., 0:r:2] = a * c - b * s
            x[..., 1:r:2] = a * s + b * c
        return x


def corr_dims(n_dims, n_ctx_orig, base, beta_fast, beta_slow):
    """ggml_rope_yarn_corr_dims: the pair indices where the ramp starts and ends."""
    def dim(beta):
        return n_dims * math.log(n_ctx_orig / (beta * 2 * math.pi)) / (2 * math.log(base))
    return (float(max(0, math.floor(dim(beta_fast)))), float(min(n_dims - 1, math.ceil(dim(beta_slow)))))


def yarn_factors(factor, log_mul_file, yarn):
    """llama.cpp's YaRN bookkeeping for deepseek2, step by step (f64 here, f32 there).

    llama_model_deepseek2::load_arch_hparams: the file's rope.scaling.yarn_log_multiplier
    is divided by 0.1 ("cancel the factor from the convert script"): L = file / 0.1.
    llama_context (llama-context.cpp, YaRN setup): ext_factor = 1 for YaRN, else 0; with
    ext_factor ≠ 0 and L ≠ 0, mscale = 1 and mscale_all_dims = L, and for deepseek2 with
    L ≠ 1 mscale is set to L too, so yarn_attn_factor = get_mscale(f, mscale) /
    get_mscale(f, L) = 1 either way; with L = 0 it is get_mscale(f, 1) = 1 + 0.1·ln f.
    Then yarn_attn_factor /= 1 + 0.1·ln f (to cancel the factor ggml's rope applies), and
    *= rope.scaling.attn_factor (absent: 1). The graph's attn_factor is yarn_attn_factor.
    ggml rope_yarn (ops.cpp): with ext_factor ≠ 0, cos and sin are multiplied by
    attn_factor·(1 + 0.1·ln(1/freq_scale)) — with L ≠ 0 that is (1/(1 + 0.1 ln f))·(1 + 0.1
    ln f) = 1: the rope's magnitude factor cancels. Without YaRN it is attn_factor = 1.
    deepseek2 graph: attn_factor_org = attn_factor·(1 + 0.1·ln(1/freq_scale)) (= 1 with
    L ≠ 0 or without YaRN), mscale = attn_factor_org·(1 + 0.1·L·ln(1/freq_scale)) =
    1 + file·ln f, kq_scale = mscale² / sqrt(qk_nope + qk_rope).
    Returns (rope magnitude, mscale)."""
    if not yarn:
        return 1.0, 1.0
    L = float(np.float32(log_mul_file) / np.float32(0.1))  # in f32 as llama.cpp: 0.1f/0.1f = 1
    lnf = math.log(factor)
    get_mscale = lambda scale, m: 1.0 if scale <= 1.0 else 0.1 * m * math.log(scale) + 1.0
    if L != 0.0:
        m, m_all = 1.0, L
        if m_all != 1.0:
            m = m_all
        attn_factor = get_mscale(factor, m) / get_mscale(factor, m_all)
    else:
        attn_factor = get_mscale(factor, 1.0)
    attn_factor *= 1.0 / (1.0 + 0.1 * lnf)
    magnitude = attn_factor * (1.0 + 0.1 * lnf)
    attn_factor_org = attn_factor * (1.0 + 0.1 * lnf)
    mscale = attn_factor_org * (1.0 + 0.1 * L * lnf)
    return magnitude, mscale


def attend(q, K, V, pos0, scale, group=1):
    """Causal attention. q (n, H, dk), K (T, Hk, dk), V (T, Hk, dv) with T = pos0 + n;
    head h reads kv head h // group. Returns (n, H, dv)."""
    n, H, _ = q.shape
    total = K.shape[0]
    mask = np.triu(np.full((n, total), -np.inf), k=pos0 + 1)
    out = np.empty((n, H, V.shape[2]))
    for h in range(H):
        kv = h // group
        sc = q[:, h, :] @ K[:, kv, :].T * scale + mask
        out[:, h, :] = softmax(sc, axis=1) @ V[:, kv, :]
    return out


# ---------------------------------------------------------------- routing

def route(logits, gating, k, bias=None, n_group=0, n_group_used=0, norm=False, scale=0.0):
    """Expert choice for rows of router logits (n, n_expert), llama.cpp's build_moe_ffn.

    probs = softmax or sigmoid of the logits; selection = probs + bias (bias only chooses);
    with n_group > 1 the experts are split into n_group consecutive groups, a group's score
    is the sum of its 2 best selection scores, the n_group_used best groups are kept and the
    others masked to −inf; the k best selection scores are chosen. Ties go to the lower
    index (stable sort of the negated scores) for groups and experts alike.
    weights = probs at the chosen experts; with `norm` divided by max(their sum, 2^−14);
    times `scale` unless it is 0 or 1.

    Returns a dict of arrays: ids (n, k) in descending selection order, weights (n, k),
    probs (n, E), gap (n,) = k-th − (k+1)-th selection score among the eligible experts,
    for plain softmax also logit_gap (n,), the same in logits (= ln of the probs' ratio),
    and with groups group_gap (n,) = the n_group_used-th − the next group score, and
    groups (n, n_group_used), the kept groups in descending order."""
    logits = np.asarray(logits, dtype=np.float64)
    n, E = logits.shape
    probs = softmax(logits) if gating == SOFTMAX else sigmoid(logits)
    sel = probs + (0.0 if bias is None else np.asarray(bias, dtype=np.float64)[None, :])
    out = {"probs": probs}
    if n_group and n_group > 1:
        per = E // n_group
        g = sel.reshape(n, n_group, per)
        top2 = -np.sort(-g, axis=2)[:, :, :2]
        gs = top2.sum(axis=2)
        gorder = np.argsort(-gs, axis=1, kind="stable")
        keep = gorder[:, :n_group_used]
        masked = np.full_like(g, -np.inf)
        rows = np.arange(n)[:, None]
        masked[rows, keep] = g[rows, keep]
        sel = masked.reshape(n, E)
        gsorted = np.take_along_axis(gs, gorder, axis=1)
        out["group_gap"] = gsorted[:, n_group_used - 1] - gsorted[:, n_group_used]
        out["groups"] = keep
    order = np.argsort(-sel, axis=1, kind="stable")
    ids = order[:, :k]
    ssorted = np.take_along_axis(sel, order, axis=1)
    ssorted = np.concatenate([ssorted, np.full((n, 1), -np.inf)], axis=1)  # k = n_expert: no rival
    out["gap"] = ssorted[:, k - 1] - ssorted[:, k]
    if gating == SOFTMAX and bias is None and not (n_group and n_group > 1) and k < E:
        lsorted = np.take_along_axis(logits, order, axis=1)  # softmax keeps the logits' order
        out["logit_gap"] = lsorted[:, k - 1] - lsorted[:, k]  # = ln(p_k / p_(k+1))
    w = np.take_along_axis(probs, ids, axis=1)
    if norm:
        w = w / np.maximum(w.sum(axis=1, keepdims=True), NORM_CLAMP)
    if scale != 0.0 and scale != 1.0:
        w = w * scale
    out["ids"], out["weights"] = ids, w
    return out


def moe_sparse(x, router_out, gate, up, down, mode):
    """Σ_k w_k · down_e(silu(gate_e·x) ⊙ up_e·x) over each row's chosen experts, computing
    only those (grouped by expert, as mul_mat_id does)."""
    ids, w = router_out["ids"], router_out["weights"]
    out = np.zeros((x.shape[0], down[0].w.shape[0]))
    for e in np.unique(ids):
        rows, slot = np.nonzero(ids == e)
        xe = x[rows]
        act = silu(gate[e].matmul(xe, mode)) * up[e].matmul(xe, mode)
        out[rows] += w[rows, slot][:, None] * down[e].matmul(act, mode)
    return out


def moe_dense(x, router_out, gate, up, down, mode):
    """The same written the other way: every expert on every row, weight 0 where unchosen."""
    n, E = x.shape[0], len(gate)
    dense_w = np.zeros((n, E))
    np.put_along_axis(dense_w, router_out["ids"], router_out["weights"], axis=1)
    out = np.zeros((n, down[0].w.shape[0]))
    for e in range(E):
        y = down[e].matmul(silu(gate[e].matmul(x, mode)) * up[e].matmul(x, mode), mode)
        out += dense_w[:, e:e + 1] * y
    return out


def swiglu(x, gate, up, down, mode):
    return down.matmul(silu(gate.matmul(x, mode)) * up.matmul(x, mode), mode)


# ---------------------------------------------------------------- models

class Base:
    """What both architectures share: embedding, output, the MoE FFN, cache, trace."""

    moe_fn = staticmethod(moe_sparse)

    def field(self, key, default=None):
        return fw.field(self.reader, f"{self.arch}.{key}", default)

    def load_common(self, path):
        r = GGUFReader(path)
        self.reader = r
        self.arch = fw.field(r, "general.architecture")
        self.t = {x.name: x for x in r.tensors}
        self.n_layer = int(self.field("block_count"))
        self.n_embd = int(self.field("embedding_length"))
        self.n_head = int(self.field("attention.head_count"))
        self.eps = float(self.field("attention.layer_norm_rms_epsilon"))
        self.base = float(self.field("rope.freq_base", 10000.0))
        self.n_expert = int(self.field("expert_count", 0))
        self.n_used = int(self.field("expert_used_count", 0))
        self.embd = mat(self.t["token_embd.weight"])
        self.out = mat(self.t["output.weight"]) if "output.weight" in self.t else self.embd
        self.out_norm = vec(self.t["output_norm.weight"])

    def load_moe(self, i):
        p = f"blk.{i}."
        L = {
            "router": mat(self.t[p + "ffn_gate_inp.weight"]),
            "gate_exps": mats3(self.t[p + "ffn_gate_exps.weight"]),
            "up_exps": mats3(self.t[p + "ffn_up_exps.weight"]),
            "down_exps": mats3(self.t[p + "ffn_down_exps.weight"]),
        }
        if p + "exp_probs_b.bias" in self.t:
            L["exp_probs_b"] = vec(self.t[p + "exp_probs_b.bias"])
        return L

    def moe(self, L, h, mode, trace, li):
        logits = L["router"].matmul(h, mode)
        r = route(logits, self.gating, self.n_used, L.get("exp_probs_b"), self.n_group,
                  self.n_group_used, self.norm_w, self.w_scale)
        if trace is not None:
            trace.append((li, r))
        return self.moe_fn(h, r, L["gate_exps"], L["up_exps"], L["down_exps"], mode)

    def head(self, x, mode, last_only):
        x = rms_norm(x[-1:] if last_only else x, self.out_norm, self.eps)
        return self.out.matmul(x, mode)


class Qwen3Moe(Base):
    """qwen3moe (and, for the check against forward.py, llama with its dense FFN seen as one
    expert of one): per layer attn_norm → q, k, v; per-head RMS norms attn_q_norm /
    attn_k_norm on q and k; NEOX rope over the whole head (n_rot = key_length); GQA
    attention scaled 1/sqrt(head_dim); attn_output; ffn_norm → MoE with softmax gating,
    weights renormalized over the chosen k (qwen3moe always normalizes), no scale."""

    def __init__(self, path):
        self.load_common(path)
        self.n_kv = int(self.field("attention.head_count_kv", self.n_head))
        self.hd = int(self.field("attention.key_length", self.n_embd // self.n_head))
        assert int(self.field("attention.value_length", self.hd)) == self.hd
        n_rot = int(self.field("rope.dimension_count", self.hd))
        llama = self.arch == "llama"
        assert self.arch in ("qwen3moe", "llama"), self.arch
        self.rope = Rope(n_rot, self.base, neox=not llama)
        self.gating, self.norm_w, self.w_scale = SOFTMAX, True, float(self.field("expert_weights_scale", 0.0))
        self.n_group = self.n_group_used = 0
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            L = {k: mat(self.t[p + k + ".weight"]) for k in ("attn_q", "attn_k", "attn_v", "attn_output")}
            L["attn_norm"] = vec(self.t[p + "attn_norm.weight"])
            L["ffn_norm"] = vec(self.t[p + "ffn_norm.weight"])
            if llama:  # dense FFN as one expert of one, router a zero row (softmax → weight 1)
                self.n_expert = self.n_used = 1
                L.update({
                    "router": Mat(np.zeros((1, self.n_embd), np.float32).view(np.uint8).reshape(-1), T.F32, 1, self.n_embd),
                    "gate_exps": [mat(self.t[p + "ffn_gate.weight"])],
                    "up_exps": [mat(self.t[p + "ffn_up.weight"])],
                    "down_exps": [mat(self.t[p + "ffn_down.weight"])],
                })
            else:
                L["attn_q_norm"] = vec(self.t[p + "attn_q_norm.weight"])
                L["attn_k_norm"] = vec(self.t[p + "attn_k_norm.weight"])
                L.update(self.load_moe(i))
            self.layers.append(L)

    def new_cache(self):
        e = np.zeros((0, self.n_kv, self.hd))
        return {"pos": 0, "kv": [(e, e)] * self.n_layer}

    def forward(self, tokens, mode, cache, last_only=False, trace=None):
        n = len(tokens)
        pos0 = cache["pos"]
        x = self.embd.w[np.asarray(tokens)]
        for li, L in enumerate(self.layers):
            h = rms_norm(x, L["attn_norm"], self.eps)
            q = L["attn_q"].matmul(h, mode).reshape(n, self.n_head, self.hd)
            k = L["attn_k"].matmul(h, mode).reshape(n, self.n_kv, self.hd)
            v = L["attn_v"].matmul(h, mode).reshape(n, self.n_kv, self.hd)
            if "attn_q_norm" in L:
                q = rms_norm(q, L["attn_q_norm"], self.eps)
                k = rms_norm(k, L["attn_k_norm"], self.eps)
            q, k = self.rope(q, pos0), self.rope(k, pos0)
            if mode == "ggml":
                k, v = f16(k), f16(v)
            K = np.concatenate([cache["kv"][li][0], k])
            V = np.concatenate([cache["kv"][li][1], v])
            cache["kv"][li] = (K, V)
            att = attend(q, K, V, pos0, 1.0 / math.sqrt(self.hd), self.n_head // self.n_kv)
            x = x + L["attn_output"].matmul(att.reshape(n, -1), mode)
            h = rms_norm(x, L["ffn_norm"], self.eps)
            x = x + self.moe(L, h, mode, trace, li)
        cache["pos"] = pos0 + n
        return self.head(x, mode, last_only)


class DeepSeek2(Base):
    """deepseek2 with MLA, both file kinds:

    * kv_b kind (`attn_kv_b`, no *_mla keys): head sizes key_length = qk_nope + qk_rope,
      value_length = v_head; attention on decompressed per-head K = [kv_b_k(h)·kv_cmpr, k_pe]
      and V = kv_b_v(h)·kv_cmpr (llama.cpp: MHA, K/V cached per head);
    * split kind (`attn_k_b`, `attn_v_b`, key_length_mla/value_length_mla): the absorbed
      form: q_nope → latent through attn_k_b[h], attention of [q_lat, q_pe] over the cached
      [kv_cmpr, k_pe] (one head shared by all: MQA), the latent result through attn_v_b[h].

    q = attn_q·x (no q_lora) or attn_q_b·(rms(attn_q_a·x)·attn_q_a_norm); per head
    [q_nope (qk_nope), q_pe (qk_rope)]; kv_a_mqa·x = [kv_cmpr (kv_lora), k_pe (qk_rope)],
    kv_cmpr RMS-normed with attn_kv_a_norm; NORM rope (YaRN if the file says so) on q_pe and
    k_pe only; scores scaled by kq_scale = mscale²/sqrt(qk_nope + qk_rope). FFN: dense SwiGLU
    in the leading dense blocks, else MoE + shared experts (SwiGLU of width n_ff_exp·n_shared).

    `absorbed` may be set to False on a split-kind model (its k_b/v_b are then assembled
    into kv_b) to run the decompressed form on the same weights."""

    def __init__(self, path):
        self.load_common(path)
        assert self.arch == "deepseek2", self.arch
        g = self.field
        self.kv_lora = int(g("attention.kv_lora_rank"))
        self.q_lora = int(g("attention.q_lora_rank", 0) or 0)
        k_mla, v_mla = int(g("attention.key_length_mla", 0) or 0), int(g("attention.value_length_mla", 0) or 0)
        self.is_mla = k_mla != 0 and v_mla != 0
        self.dk = k_mla if self.is_mla else int(g("attention.key_length"))
        self.dv = v_mla if self.is_mla else int(g("attention.value_length"))
        self.n_rot = int(g("rope.dimension_count"))
        self.nope = self.dk - self.n_rot
        self.n_dense = int(g("leading_dense_block_count", 0) or 0)
        self.n_shared = int(g("expert_shared_count", 0) or 0)
        self.w_scale = float(g("expert_weights_scale", 0.0) or 0.0)
        self.norm_w = bool(g("expert_weights_norm", False))
        gating = int(g("expert_gating_func", 0) or 0)
        self.gating = SOFTMAX if gating == 0 else gating  # absent → softmax (old V2 files)
        assert self.gating in (SOFTMAX, SIGMOID), gating
        self.n_group = int(g("expert_group_count", 0) or 0)
        self.n_group_used = int(g("expert_group_used_count", 0) or 0)
        yarn = g("rope.scaling.type") == "yarn"
        factor = float(g("rope.scaling.factor", 0.0) or 0.0)
        self.freq_scale = 1.0 / factor if factor else 1.0
        self.log_mul = float(g("rope.scaling.yarn_log_multiplier", 0.0) or 0.0)
        n_ctx_orig = int(g("rope.scaling.original_context_length", 0) or g("context_length"))
        self.rope_magnitude, self.mscale = yarn_factors(factor if factor else 1.0, self.log_mul, yarn)
        self.kq_scale = self.mscale ** 2 / math.sqrt(self.dk)
        self.rope = Rope(self.n_rot, self.base, neox=False, freq_scale=self.freq_scale,
                         ext_factor=1.0 if yarn else 0.0, n_ctx_orig=n_ctx_orig,
                         magnitude=self.rope_magnitude)
        self.absorbed = self.is_mla
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            t = lambda k: self.t[p + k]
            L = {"attn_norm": vec(t("attn_norm.weight")), "ffn_norm": vec(t("ffn_norm.weight")),
                 "attn_kv_a_norm": vec(t("attn_kv_a_norm.weight")),
                 "attn_kv_a_mqa": mat(t("attn_kv_a_mqa.weight")),
                 "attn_output": mat(t("attn_output.weight"))}
            if self.q_lora:
                L["attn_q_a"] = mat(t("attn_q_a.weight"))
                L["attn_q_a_norm"] = vec(t("attn_q_a_norm.weight"))
                L["attn_q_b"] = mat(t("attn_q_b.weight"))
            else:
                L["attn_q"] = mat(t("attn_q.weight"))
            if self.is_mla:
                L["attn_k_b"] = mats3(t("attn_k_b.weight"))  # per head kv_lora × qk_nope
                L["attn_v_b"] = mats3(t("attn_v_b.weight"))  # per head v_head × kv_lora
            else:
                L["attn_kv_b"] = mat(t("attn_kv_b.weight"))  # n_head·(nope+v) × kv_lora
            if i < self.n_dense:
                L.update({k: mat(t(k + ".weight")) for k in ("ffn_gate", "ffn_up", "ffn_down")})
            else:
                L.update(self.load_moe(i))
                L.update({k: mat(t(k + ".weight")) for k in ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")})
            self.layers.append(L)

    def kv_b_from_split(self, L) -> np.ndarray:
        """kv_b (n_head·(nope+v) × kv_lora, f64) assembled from a split file's k_b and v_b:
        rows h·(nope+v) + j = k_b[h][:, j] for j < nope, then v_b[h] rows."""
        rows = []
        for h in range(self.n_head):
            rows.append(L["attn_k_b"][h].w.T)
            rows.append(L["attn_v_b"][h].w)
        return np.concatenate(rows)

    def new_cache(self):
        if self.absorbed:
            return {"pos": 0, "kv": [np.zeros((0, self.kv_lora + self.n_rot))] * self.n_layer}
        e = np.zeros((0, self.n_head, self.dk)), np.zeros((0, self.n_head, self.dv))
        return {"pos": 0, "kv": [e] * self.n_layer}

    def attention(self, L, h, mode, cache, li, pos0):
        n, H = h.shape[0], self.n_head
        if self.q_lora:
            qa = rms_norm(L["attn_q_a"].matmul(h, mode), L["attn_q_a_norm"], self.eps)
            q = L["attn_q_b"].matmul(qa, mode)
        else:
            q = L["attn_q"].matmul(h, mode)
        q = q.reshape(n, H, self.dk)
        q_nope, q_pe = q[:, :, :self.nope], self.rope(q[:, :, self.nope:], pos0)
        kvpe = L["attn_kv_a_mqa"].matmul(h, mode)
        kv_cmpr = rms_norm(kvpe[:, :self.kv_lora], L["attn_kv_a_norm"], self.eps)
        k_pe = self.rope(kvpe[:, None, self.kv_lora:], pos0)[:, 0, :]
        if self.absorbed:
            q_lat = np.stack([L["attn_k_b"][hh].matmul(q_nope[:, hh, :], mode) for hh in range(H)], axis=1)
            Q = np.concatenate([q_lat, q_pe], axis=2)
            kc = np.concatenate([kv_cmpr, k_pe], axis=1)
            if mode == "ggml":
                kc = f16(kc)
            Kc = np.concatenate([cache["kv"][li], kc])
            cache["kv"][li] = Kc
            lat = attend(Q, Kc[:, None, :], Kc[:, None, :self.kv_lora], pos0, self.kq_scale, group=H)
            out = np.stack([L["attn_v_b"][hh].matmul(lat[:, hh, :], mode) for hh in range(H)], axis=1)
        else:
            if "attn_kv_b" in L:
                kv = L["attn_kv_b"].matmul(kv_cmpr, mode)
            else:  # a split file run decompressed (float-mode check only)
                assert mode == "float"
                kv = kv_cmpr @ self.kv_b_from_split(L).T
            kv = kv.reshape(n, H, self.nope + self.dv)
            k = np.concatenate([kv[:, :, :self.nope], np.repeat(k_pe[:, None, :], H, axis=1)], axis=2)
            v = kv[:, :, self.nope:]
            Q = np.concatenate([q_nope, q_pe], axis=2)
            if mode == "ggml":
                k, v = f16(k), f16(v)
            K = np.concatenate([cache["kv"][li][0], k])
            V = np.concatenate([cache["kv"][li][1], v])
            cache["kv"][li] = (K, V)
            out = attend(Q, K, V, pos0, self.kq_scale)
        return L["attn_output"].matmul(out.reshape(n, H * self.dv), mode)

    def forward(self, tokens, mode, cache, last_only=False, trace=None):
        n = len(tokens)
        pos0 = cache["pos"]
        x = self.embd.w[np.asarray(tokens)]
        for li, L in enumerate(self.layers):
            h = rms_norm(x, L["attn_norm"], self.eps)
            x = x + self.attention(L, h, mode, cache, li, pos0)
            h = rms_norm(x, L["ffn_norm"], self.eps)
            if li < self.n_dense:
                x = x + swiglu(h, L["ffn_gate"], L["ffn_up"], L["ffn_down"], mode)
            else:
                shared = swiglu(h, L["ffn_gate_shexp"], L["ffn_up_shexp"], L["ffn_down_shexp"], mode)
                x = x + self.moe(L, h, mode, trace, li) + shared
        cache["pos"] = pos0 + n
        return self.head(x, mode, last_only)


def load(path):
    arch = fw.field(GGUFReader(path), "general.architecture")
    return DeepSeek2(path) if arch == "deepseek2" else Qwen3Moe(path)
