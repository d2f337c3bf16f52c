//! The forward pass of one block on a host-side device (the CPU, or a CPU device posing as
//! a GPU), top to bottom, for a batch of `n` tokens, each run of a sequence's rows
//! (`Segment`) at its positions (the products take every row at once; attention takes
//! each run with its sequence's cache):
//!
//! ```text
//! x = token_embd[tokens]
//! for each block:                                   (on the block's device)
//!     h = rms_norm(x) · attn_norm
//!     x += attention(h)                              grouped-query, or latent (MLA)
//!     h = rms_norm(x) · ffn_norm
//!     x += ffn(h)                                    dense SwiGLU, or experts (MoE)
//! logits = (rms_norm(x) · output_norm) · Wout        (last row, or every row for tests)
//!
//! grouped-query:  q, k, v = h·Wq (+bq), h·Wk (+bk), h·Wv (+bv); q, k = rms_norm per head
//!                 (qwen3); rope(q, k); cache ← k, v; a = attention(q, cache); out = a·Wo
//! latent (MLA):   q = h·Wq, or rms_norm(h·Wq_a)·q_a_norm·Wq_b; per head q = [nope | pe]
//!                 c = h·Wkv_a = [latent | k_pe]; cache ← [rope(k_pe) | rms_norm(latent)]
//!                 per head q' = [rope(pe) | nope·K_b] (the query absorbed into the latent)
//!                 a = softmax(q'·cache)·latent; v = a·V_bᵀ per head; out = v·Wo
//! dense FFN:      (silu(h·Wgate) ⊙ h·Wup) · Wdown
//! experts (MoE):  route(h·Wrouter) → k experts and weights; Σ weight · expert(h)
//!                 (+ the shared experts' dense FFN)
//! ```
//!
//! A matrix product quantizes its input to the weight's activation format first (Q8_1 for
//! Q4_1, Q8_0 for Q8_0/Q4_0, Q8_K for K-quants), as ggml does.

use strata_kernels_cpu::ops::{self, KvCache, LatentCache, MlaShape, Rope};
use strata_kernels_cpu::{
    matmul_packed, matmul_quantized, matvec_packed, matvec_quantized, Packed, QuantizedActs,
};

use super::scratch::Scratch;
use crate::backend::interface::{BackendError, Segment};
use crate::config::ModelConfig;
use crate::model::{Attention, BlockWeights, Dense, Ffn, Gqa, Matrix, MlaWeights, MoeWeights};

/// A block's attention cache on a host device: K and V, or MLA's latent rows.
pub(super) enum Cache {
    Kv(KvCache),
    Latent(LatentCache),
}

impl Cache {
    pub(super) fn clear(&mut self) {
        match self {
            Cache::Kv(c) => c.clear(),
            Cache::Latent(c) => c.clear(),
        }
    }

    /// Becomes a copy of `src`'s first `len` positions (another sequence's cache of the
    /// same block).
    pub(super) fn copy_from(&mut self, src: &Cache, len: usize) -> Result<(), BackendError> {
        match (self, src) {
            (Cache::Kv(d), Cache::Kv(s)) => d.copy_from(s, len)?,
            (Cache::Latent(d), Cache::Latent(s)) => d.copy_from(s, len)?,
            _ => return Err(mismatch()),
        }
        Ok(())
    }
}

fn mismatch() -> BackendError {
    BackendError::Unsupported("a block's cache does not match its attention".into())
}

/// The cache of sequence `seq` among a block's `caches`.
fn seq_cache(caches: &mut [Cache], seq: usize) -> Result<&mut Cache, BackendError> {
    let n = caches.len();
    caches.get_mut(seq).ok_or_else(|| {
        BackendError::Unsupported(format!(
            "sequence {seq}: the device holds caches for {n} sequences"
        ))
    })
}

/// The embedding rows of `tokens` into `out`: from the mapped file, or, when the output is
/// tied and the CPU holds it packed (the file's copy is then not kept), unpacked from there.
pub(super) fn embed(emb: Matrix, tokens: &[u32], out: &mut [f32]) -> Result<(), BackendError> {
    if !emb.packed {
        ops::get_rows(emb.ty, emb.data, emb.cols, tokens, out)?;
        return Ok(());
    }
    let p = Packed::new(emb.ty, emb.rows, emb.cols, emb.data)?;
    let mut row = vec![0u8; emb.data.len() / emb.rows];
    for (&id, out) in tokens.iter().zip(out.chunks_exact_mut(emb.cols)) {
        if id as usize >= emb.rows {
            return Err(BackendError::Tensor {
                name: "token_embd.weight".into(),
                why: format!("token id {id} is past its {} rows", emb.rows),
            });
        }
        p.row(id as usize, &mut row);
        strata_kernels_cpu::dequantize(emb.ty, &row, out)?;
    }
    Ok(())
}

/// One block on the CPU (or a device posing as an accelerator) with weights `w`, for a
/// batch of `n` rows of which the last `ffn_rows` get their FFN (`rows` = (n, ffn_rows);
/// fewer than n only in the model's last block, whose other rows nothing reads).
///
/// With several threads the whole block runs on one of rayon's workers: a parallel call
/// made from outside the pool hands its work over and sleeps on a latch (two futex
/// wake-ups, tens of µs in this VM), which the block's ~10 parallel kernels would otherwise
/// each pay; from a worker they are a push onto its deque that the other, still spinning,
/// worker steals. One hand-off per block instead. With one thread nothing is handed over.
pub(super) fn cpu_block(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    caches: &mut [Cache],
    rope: &Rope,
    rows: (usize, usize),
    segs: &[Segment],
) -> Result<(), BackendError> {
    on_worker(|| cpu_block_body(cfg, w, s, caches, rope, rows, segs))
}

/// Runs `f` on one of rayon's workers when called from outside the pool (see
/// [`cpu_block`]).
pub(super) fn on_worker<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

fn cpu_block_body(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    caches: &mut [Cache],
    rope: &Rope,
    (n, ffn_rows): (usize, usize),
    segs: &[Segment],
) -> Result<(), BackendError> {
    attention(cfg, w, s, caches, rope, n, segs)?;
    ffn_route(cfg, w, s, n, ffn_rows)?;
    let all = Local::all(cfg);
    ffn_local(cfg, w, s, ffn_rows, &all)?;
    ffn_end(cfg, s, n, ffn_rows);
    Ok(())
}

/// `x += attention(rms_norm(x))` for the `n` rows of `s.x`, the rows of each of `segs`
/// with the cache of its sequence among `caches`.
pub(super) fn attention(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    caches: &mut [Cache],
    rope: &Rope,
    n: usize,
    segs: &[Segment],
) -> Result<(), BackendError> {
    let e = cfg.n_embd;
    ops::rms_norm_rows(&s.x[..n * e], &w.attn_norm, cfg.rms_eps, &mut s.xn[..n * e]);
    match &w.attn {
        Attention::Gqa(a) => gqa(cfg, a, s, caches, rope, n, segs)?,
        Attention::Mla(a) => mla(cfg, a, s, caches, rope, n, segs)?,
    }
    ops::add(&mut s.x[..n * e], &s.out[..n * e]);
    Ok(())
}

/// The FFN's input: the last `m` of the `n` rows of `s.x`, normalised, at the front of
/// `s.xn` (its products read rows 0..), and for experts each row's choice of them in
/// `s.route_ids` / `s.route_weights`.
pub(super) fn ffn_route(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    n: usize,
    m: usize,
) -> Result<(), BackendError> {
    let e = cfg.n_embd;
    ops::rms_norm_rows(
        &s.x[(n - m) * e..n * e],
        &w.ffn_norm,
        cfg.rms_eps,
        &mut s.xn[..m * e],
    );
    if let Ffn::Moe(moe) = &w.ffn {
        route(cfg, moe, s, m)?;
    }
    Ok(())
}

/// What of a block's FFN a device computes: the routed experts `experts` (its stacks
/// holding experts `stack`), and the router's share (shared experts, or the dense FFN)
/// when `ffn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Local {
    pub experts: std::ops::Range<usize>,
    pub stack: std::ops::Range<usize>,
    pub ffn: bool,
}

impl Local {
    /// The whole FFN, from stacks of every expert.
    pub(super) fn all(cfg: &ModelConfig) -> Local {
        let nx = cfg.moe.as_ref().map_or(0, |m| m.n_expert);
        Local {
            experts: 0..nx,
            stack: 0..nx,
            ffn: true,
        }
    }
}

/// `s.out` = this device's share of the FFN of the `m` rows routed by [`ffn_route`].
pub(super) fn ffn_local(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    m: usize,
    local: &Local,
) -> Result<(), BackendError> {
    match &w.ffn {
        Ffn::Dense(d) if local.ffn => dense_ffn(d, s, m),
        Ffn::Dense(_) => Err(BackendError::Unsupported(
            "a dense FFN computed where it is not held".into(),
        )),
        Ffn::Moe(moe) => moe_ffn(cfg, moe, s, m, local),
    }
}

/// `x += out` for the last `m` of the `n` rows.
pub(super) fn ffn_end(cfg: &ModelConfig, s: &mut Scratch, n: usize, m: usize) {
    let e = cfg.n_embd;
    ops::add(&mut s.x[(n - m) * e..n * e], &s.out[..m * e]);
}

/// Grouped-query attention of the normalised `s.xn` into `s.out`.
fn gqa(
    cfg: &ModelConfig,
    w: &Gqa<Matrix, std::borrow::Cow<[f32]>>,
    s: &mut Scratch,
    caches: &mut [Cache],
    rope: &Rope,
    n: usize,
    segs: &[Segment],
) -> Result<(), BackendError> {
    let (e, qd, kvd, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let xn = &s.xn[..n * e];
    let (q, k, v) = (&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]);
    mul_new(&w.wq, &mut s.acts, xn, n, q)?;
    mul(&w.wk, &mut s.acts, xn, n, k)?;
    mul(&w.wv, &mut s.acts, xn, n, v)?;
    if let (Some(bq), Some(bk), Some(bv)) = (&w.bq, &w.bk, &w.bv) {
        add_rows(q, bq);
        add_rows(k, bk);
        add_rows(v, bv);
    }
    if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
        norm_heads(q, qn, cfg.rms_eps, &mut s.attn[..n * qd]);
        norm_heads(k, kn, cfg.rms_eps, &mut s.attn[..n * kvd]);
    }
    let attn = &mut s.attn[..n * qd];
    for g in segs {
        let Cache::Kv(cache) = seq_cache(caches, g.seq)? else {
            return Err(mismatch());
        };
        let (rq, rk) = (
            g.row * qd..(g.row + g.n) * qd,
            g.row * kvd..(g.row + g.n) * kvd,
        );
        let (q, k) = (&mut q[rq.clone()], &mut k[rk.clone()]);
        ops::rope_rows(q, g.n, cfg.n_head, hd, g.pos, rope);
        ops::rope_rows(k, g.n, cfg.n_head_kv, hd, g.pos, rope);
        cache.append(g.pos, k, &v[rk])?;
        ops::attention(q, cache, g.pos, g.n, cfg.n_head, &mut attn[rq]);
    }
    let out = &mut s.out[..n * e];
    mul_new(&w.wo, &mut s.acts, attn, n, out)
}

/// Multi-head latent attention of `s.xn` into `s.out`, in the absorbed form: the cache
/// holds one latent row per token and every head attends in the latent space.
fn mla(
    cfg: &ModelConfig,
    w: &MlaWeights<Matrix, std::borrow::Cow<[f32]>>,
    s: &mut Scratch,
    caches: &mut [Cache],
    rope: &Rope,
    n: usize,
    segs: &[Segment],
) -> Result<(), BackendError> {
    let m = cfg
        .mla
        .as_ref()
        .ok_or_else(|| missing_mla("its MLA widths"))?;
    let (e, nh, hd) = (cfg.n_embd, cfg.n_head, cfg.head_dim);
    let (nope, pe, kvr, vh) = (m.qk_nope, m.qk_rope, m.kv_lora_rank, m.v_head);
    let width = m.row_width();
    let xn = &s.xn[..n * e];

    // Queries, n × heads × [nope | pe].
    let q = &mut s.q[..n * nh * hd];
    match (&w.q, &w.q_a, &w.q_a_norm, &w.q_b) {
        (Some(wq), ..) => mul_new(wq, &mut s.acts, xn, n, q)?,
        (None, Some(qa), Some(qa_norm), Some(qb)) => {
            let low = &mut s.k[..n * m.q_lora_rank];
            mul_new(qa, &mut s.acts, xn, n, low)?;
            let normed = &mut s.v[..n * m.q_lora_rank];
            ops::rms_norm_rows(low, qa_norm, cfg.rms_eps, normed);
            mul_new(qb, &mut s.acts, normed, n, q)?;
        }
        _ => {
            return Err(missing_mla(
                "attn_q, or attn_q_a with its norm and attn_q_b",
            ))
        }
    }

    // The cache rows: [rope(k_pe) | rms_norm(latent)].
    let kv_a = &mut s.k[..n * (kvr + pe)];
    mul_new(&w.kv_a, &mut s.acts, xn, n, kv_a)?;
    let rows = &mut s.kv_row[..n * width];
    for (row, kv) in rows
        .chunks_exact_mut(width)
        .zip(kv_a.chunks_exact(kvr + pe))
    {
        row[..pe].copy_from_slice(&kv[kvr..]);
        ops::rms_norm(&kv[..kvr], &w.kv_a_norm, cfg.rms_eps, &mut row[pe..]);
    }
    for g in segs {
        let rows = &mut rows[g.row * width..(g.row + g.n) * width];
        ops::rope_rows(rows, g.n, 1, width, g.pos, rope);
        let Cache::Latent(cache) = seq_cache(caches, g.seq)? else {
            return Err(mismatch());
        };
        cache.append(g.pos, rows)?;
    }

    // Each head's query in the latent space: [rope(q_pe) | q_nope absorbed through K_b].
    let ql = &mut s.q_latent[..n * nh * width];
    for (dst, src) in ql.chunks_exact_mut(width).zip(q.chunks_exact(hd)) {
        dst[..pe].copy_from_slice(&src[nope..]);
    }
    for g in segs {
        let ql = &mut ql[g.row * nh * width..(g.row + g.n) * nh * width];
        ops::rope_rows(ql, g.n, nh, width, g.pos, rope);
    }
    let dims = (nh, nope, vh);
    if n == 1 {
        // One token: the heads side by side on the threads, each reading its own slices
        // (one fork-join, where each head's small product would be too small to split).
        use rayon::prelude::*;
        s.expert_acts.resize_with(nh, QuantizedActs::new);
        ql.par_chunks_mut(width)
            .zip(s.expert_acts.par_iter_mut())
            .enumerate()
            .map(|(h, (row, acts))| {
                absorb(
                    w,
                    h,
                    dims,
                    &q[h * hd..h * hd + nope],
                    1,
                    &mut row[pe..],
                    acts,
                )
            })
            .collect::<Result<(), BackendError>>()?;
    } else {
        let (gin, gout) = (&mut s.gathered_in, &mut s.gathered_out);
        for h in 0..nh {
            let qn = &mut gin[..n * nope];
            for (dst, src) in qn.chunks_exact_mut(nope).zip(q.chunks_exact(nh * hd)) {
                dst.copy_from_slice(&src[h * hd..h * hd + nope]);
            }
            let lat = &mut gout[..n * kvr];
            absorb(w, h, dims, qn, n, lat, &mut s.acts)?;
            for (t, l) in lat.chunks_exact(kvr).enumerate() {
                ql[(t * nh + h) * width + pe..][..kvr].copy_from_slice(l);
            }
        }
    }

    let attn = &mut s.attn[..n * nh * kvr];
    for g in segs {
        let shape = MlaShape {
            n_tokens: g.n,
            n_heads: nh,
            v_off: pe,
            scale: cfg.mla_scale(),
        };
        let Cache::Latent(cache) = seq_cache(caches, g.seq)? else {
            return Err(mismatch());
        };
        let (ql, attn) = (
            &ql[g.row * nh * width..(g.row + g.n) * nh * width],
            &mut attn[g.row * nh * kvr..(g.row + g.n) * nh * kvr],
        );
        ops::mla_attention(ql, cache, g.pos, shape, attn);
    }

    // Each head's value from its latent output, then the output projection.
    let v = &mut s.v[..n * nh * vh];
    if n == 1 {
        use rayon::prelude::*;
        v.par_chunks_mut(vh)
            .zip(attn.par_chunks(kvr))
            .zip(s.expert_acts.par_iter_mut())
            .enumerate()
            .map(|(h, ((vals, lat), acts))| expand(w, h, dims, lat, 1, vals, acts))
            .collect::<Result<(), BackendError>>()?;
    } else {
        let (gin, gout) = (&mut s.gathered_in, &mut s.gathered_out);
        for h in 0..nh {
            let lat = &mut gin[..n * kvr];
            for (dst, src) in lat.chunks_exact_mut(kvr).zip(attn.chunks_exact(nh * kvr)) {
                dst.copy_from_slice(&src[h * kvr..(h + 1) * kvr]);
            }
            let vals = &mut gout[..n * vh];
            expand(w, h, dims, lat, n, vals, &mut s.acts)?;
            for (t, x) in vals.chunks_exact(vh).enumerate() {
                v[(t * nh + h) * vh..][..vh].copy_from_slice(x);
            }
        }
    }
    let out = &mut s.out[..n * e];
    mul_new(&w.wo, &mut s.acts, v, n, out)
}

/// Head `h`'s queries in the latent space: `lat` = `qn` (`n` rows of its nope part)
/// through its `attn_k_b`, or through the k rows of `attn_kv_b` read transposed.
/// `dims` = (heads, qk_nope, v_head).
fn absorb(
    w: &MlaWeights<Matrix, std::borrow::Cow<[f32]>>,
    h: usize,
    (nh, nope, vh): (usize, usize, usize),
    qn: &[f32],
    n: usize,
    lat: &mut [f32],
    acts: &mut QuantizedActs,
) -> Result<(), BackendError> {
    match (&w.k_b, &w.kv_b) {
        (Some(k_b), _) => mul_new(&k_b.part(h, nh), acts, qn, n, lat),
        (None, Some(kv_b)) => {
            let rows = h * (nope + vh)..h * (nope + vh) + nope;
            mul_transposed(&kv_b.row_range(rows), qn, n, lat)
        }
        (None, None) => Err(missing_mla("attn_k_b, or attn_kv_b")),
    }
}

/// Head `h`'s values from its latent attention output `lat` (`n` rows): through its
/// `attn_v_b`, or the v rows of `attn_kv_b`.
fn expand(
    w: &MlaWeights<Matrix, std::borrow::Cow<[f32]>>,
    h: usize,
    (nh, nope, vh): (usize, usize, usize),
    lat: &[f32],
    n: usize,
    vals: &mut [f32],
    acts: &mut QuantizedActs,
) -> Result<(), BackendError> {
    let v_b = match (&w.v_b, &w.kv_b) {
        (Some(v_b), _) => v_b.part(h, nh),
        (None, Some(kv_b)) => kv_b.row_range(h * (nope + vh) + nope..(h + 1) * (nope + vh)),
        (None, None) => return Err(missing_mla("attn_v_b, or attn_kv_b")),
    };
    mul_new(&v_b, acts, lat, n, vals)
}

fn missing_mla(what: &str) -> BackendError {
    BackendError::Unsupported(format!("an MLA block without {what}"))
}

/// Up to this many tokens, [`mul_transposed`] dequantizes the matrix once per token in
/// registers; a longer batch dequantizes each row once into a buffer for all its tokens.
const FUSED_MAX_TOKENS: usize = 8;

/// `y = x · M` for `n` rows of `x` (each `M.rows` long): the product with the matrix's
/// transpose (an older MLA file's `attn_kv_b` is stored so that absorbing the query reads it
/// this way round).
fn mul_transposed(m: &Matrix, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), BackendError> {
    y[..n * m.cols].fill(0.0);
    if n <= FUSED_MAX_TOKENS {
        // Each token's weighted sum of the rows, dequantized in registers as it goes:
        // 10% of a V2-Lite decode when every row went through a buffer.
        let rows = x.chunks_exact(m.rows).zip(y.chunks_exact_mut(m.cols));
        for (x, y) in rows.take(n) {
            ops::weighted_rows(m.ty, m.data, x, y)?;
        }
        return Ok(());
    }
    let row_bytes = m.data.len() / m.rows;
    let mut row = vec![0.0f32; m.cols];
    for (r, bytes) in m.data.chunks_exact(row_bytes).enumerate() {
        strata_kernels_cpu::dequantize(m.ty, bytes, &mut row)?;
        for t in 0..n {
            ops::add_scaled(
                &mut y[t * m.cols..(t + 1) * m.cols],
                x[t * m.rows + r],
                &row,
            );
        }
    }
    Ok(())
}

/// A dense SwiGLU FFN of `s.xn` (`n` rows) into `s.out`.
fn dense_ffn(d: &Dense<Matrix>, s: &mut Scratch, n: usize) -> Result<(), BackendError> {
    let e = d.gate.cols;
    let out = &mut s.out[..n * e];
    ffn_into(
        d,
        &mut s.acts,
        &s.xn[..n * e],
        n,
        &mut s.gate,
        &mut s.up,
        &mut s.ff,
        out,
    )
}

/// `out = (silu(x·gate) ⊙ x·up) · down` for `n` rows of `x`, with the hidden layer in the
/// `gate`, `up` and `ff` buffers.
#[allow(clippy::too_many_arguments)]
fn ffn_into(
    d: &Dense<Matrix>,
    acts: &mut QuantizedActs,
    x: &[f32],
    n: usize,
    gate: &mut [f32],
    up: &mut [f32],
    ff: &mut [f32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let f = d.gate.rows;
    let (gate, up, ff) = (&mut gate[..n * f], &mut up[..n * f], &mut ff[..n * f]);
    mul_new(&d.gate, acts, x, n, gate)?;
    mul(&d.up, acts, x, n, up)?;
    ops::swiglu(gate, up, ff);
    mul_new(&d.down, acts, ff, n, out)
}

/// Each of the `n` rows of `s.xn` picks its experts (`s.route_ids`, `s.route_weights`).
fn route(
    cfg: &ModelConfig,
    w: &MoeWeights<Matrix, std::borrow::Cow<[f32]>>,
    s: &mut Scratch,
    n: usize,
) -> Result<(), BackendError> {
    let m = moe_of(cfg)?;
    let (e, nx, k) = (cfg.n_embd, m.n_expert, m.n_expert_used);
    let router = m.router();
    let logits = &mut s.router[..n * nx];
    mul_new(&w.router, &mut s.acts, &s.xn[..n * e], n, logits)?;
    let (ids, weights) = (&mut s.route_ids[..n * k], &mut s.route_weights[..n * k]);
    for t in 0..n {
        ops::route(
            &mut logits[t * nx..(t + 1) * nx],
            w.probs_bias.as_deref(),
            &router,
            &mut ids[t * k..(t + 1) * k],
            &mut weights[t * k..(t + 1) * k],
        );
    }
    Ok(())
}

fn moe_of(cfg: &ModelConfig) -> Result<&crate::config::Moe, BackendError> {
    cfg.moe.as_ref().ok_or_else(|| {
        BackendError::Unsupported("an expert block in a model without experts".into())
    })
}

/// The experts of `s.xn` (`n` rows, routed) that `local` names into `s.out`: one token
/// runs its experts side by side on the threads, a batch runs each expert once over the
/// tokens that chose it (so its weights are read once per batch); the shared experts, if
/// any and `local.ffn`, are added for every token.
fn moe_ffn(
    cfg: &ModelConfig,
    w: &MoeWeights<Matrix, std::borrow::Cow<[f32]>>,
    s: &mut Scratch,
    n: usize,
    local: &Local,
) -> Result<(), BackendError> {
    let m = moe_of(cfg)?;
    let (e, k, f) = (cfg.n_embd, m.n_expert_used, m.n_ff_exp);
    let xn = &s.xn[..n * e];
    let (ids, weights) = (&s.route_ids[..n * k], &s.route_weights[..n * k]);
    // Expert x of the stacks this device holds (a stack may be a range of the experts).
    let parts = local.stack.len();
    let expert = |x: usize| Dense {
        gate: w.gate.part(x - local.stack.start, parts),
        up: w.up.part(x - local.stack.start, parts),
        down: w.down.part(x - local.stack.start, parts),
    };
    let out = &mut s.out[..n * e];
    out.fill(0.0);
    if n == 1 {
        let mine: Vec<usize> = (0..k)
            .filter(|&j| local.experts.contains(&(ids[j] as usize)))
            .collect();
        if !mine.is_empty() {
            let experts: Vec<Dense<Matrix>> =
                mine.iter().map(|&j| expert(ids[j] as usize)).collect();
            let c = mine.len();
            let y = &mut s.gathered_out[..c * e];
            let hidden = (&mut s.gate[..c * f], &mut s.up[..c * f], &mut s.ff[..c * f]);
            experts_one_token(&experts, xn, &mut s.acts, &mut s.expert_acts, hidden, y)?;
            for (y, &j) in y.chunks_exact(e).zip(&mine) {
                ops::add_scaled(out, weights[j], y);
            }
        }
    } else {
        let y = &mut s.gathered_out[..n * e];
        let mut chosen: Vec<(usize, f32)> = Vec::with_capacity(n);
        for x in local.experts.clone() {
            chosen.clear();
            for t in 0..n {
                for j in 0..k {
                    if ids[t * k + j] as usize == x {
                        chosen.push((t, weights[t * k + j]));
                    }
                }
            }
            if chosen.is_empty() {
                continue;
            }
            let c = chosen.len();
            let xs = &mut s.gathered_in[..c * e];
            for (dst, &(t, _)) in xs.chunks_exact_mut(e).zip(&chosen) {
                dst.copy_from_slice(&xn[t * e..(t + 1) * e]);
            }
            let d = expert(x);
            ffn_into(
                &d,
                &mut s.acts,
                xs,
                c,
                &mut s.gate,
                &mut s.up,
                &mut s.ff,
                &mut y[..c * e],
            )?;
            for (row, &(t, wt)) in y.chunks_exact(e).zip(&chosen) {
                ops::add_scaled(&mut out[t * e..(t + 1) * e], wt, row);
            }
        }
    }
    if let (Some(sh), true) = (&w.shared, local.ffn) {
        let y = &mut s.gathered_out[..n * e];
        ffn_into(sh, &mut s.acts, xn, n, &mut s.gate, &mut s.up, &mut s.ff, y)?;
        ops::add(out, y);
    }
    Ok(())
}

/// One token's chosen `experts`, each on its own rayon task (the threads take experts
/// rather than each expert's rows in turn: one fork-join per layer instead of three per
/// expert), expert j's hidden layer in row j of `hidden` and its output in row j of `y`.
/// `x` is quantized once for every gate and up product; each down product has its own
/// activations in `per_expert`.
fn experts_one_token(
    experts: &[Dense<Matrix>],
    x: &[f32],
    acts: &mut QuantizedActs,
    per_expert: &mut Vec<QuantizedActs>,
    (gate, up, ff): (&mut [f32], &mut [f32], &mut [f32]),
    y: &mut [f32],
) -> Result<(), BackendError> {
    use rayon::prelude::*;
    let (k, e) = (experts.len(), x.len());
    let f = gate.len() / k.max(1);
    per_expert.resize_with(k, QuantizedActs::new);
    quantize_for(acts, &experts[0].gate, x, 1)?;
    let shared: &QuantizedActs = acts;
    experts
        .par_iter()
        .zip(gate.par_chunks_mut(f))
        .zip(up.par_chunks_mut(f))
        .zip(ff.par_chunks_mut(f).zip(y.par_chunks_mut(e)))
        .zip(per_expert.par_iter_mut())
        .map(|((((d, gate), up), (ff, y)), down_acts)| {
            for (w, out) in [(&d.gate, &mut *gate), (&d.up, &mut *up)] {
                if shared.ty() == Some(w.ty.vec_dot_type()) {
                    product(w, shared, out)?;
                } else {
                    mul_new(w, down_acts, x, 1, out)?;
                }
            }
            ops::swiglu(gate, up, ff);
            mul_new(&d.down, down_acts, ff, 1, y)
        })
        .collect()
}

/// Quantizes `x` (`n` rows) to the activation format `w` takes.
fn quantize_for(
    acts: &mut QuantizedActs,
    w: &Matrix,
    x: &[f32],
    n: usize,
) -> Result<(), BackendError> {
    acts.quantize(w.ty.vec_dot_type(), x, n, w.cols)?;
    Ok(())
}

/// `y = x · Wᵀ` for `n` rows of a new input `x`: quantizes it, then [`mul`].
pub(super) fn mul_new(
    w: &Matrix,
    acts: &mut QuantizedActs,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), BackendError> {
    quantize_for(acts, w, x, n)?;
    mul(w, acts, x, n, y)
}

/// `y = x · Wᵀ` for `n` rows, using the quantized `acts` of `x` when they are in the
/// format `w` takes (q/k/v and gate/up share one), else quantizing `x` again. `acts` must
/// hold this `x` or another format of it: a caller with a new input uses [`mul_new`].
fn mul(
    w: &Matrix,
    acts: &mut QuantizedActs,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), BackendError> {
    if acts.ty() != Some(w.ty.vec_dot_type()) || acts.n() != n || acts.cols() != w.cols {
        quantize_for(acts, w, x, n)?;
    }
    product(w, acts, y)
}

/// `y = x · Wᵀ` for the `acts.n()` rows whose activations `acts` already hold in `w`'s
/// format: the packed or row-major kernel, matvec for one row, matmul for more.
fn product(w: &Matrix, acts: &QuantizedActs, y: &mut [f32]) -> Result<(), BackendError> {
    match (w.packed, acts.n()) {
        (true, 1) => matvec_packed(&Packed::new(w.ty, w.rows, w.cols, w.data)?, acts, y)?,
        (true, _) => matmul_packed(&Packed::new(w.ty, w.rows, w.cols, w.data)?, acts, y)?,
        (false, 1) => matvec_quantized(w.ty, w.data, w.rows, w.cols, acts, y)?,
        (false, _) => matmul_quantized(w.ty, w.data, w.rows, w.cols, acts, y)?,
    }
    Ok(())
}

/// Adds `b` to every row of `x`.
fn add_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        ops::add(row, b);
    }
}

/// RMSNorm of every head of `x` with the per-head weight `w` (qwen3's q/k norm); `tmp`
/// is scratch of `x`'s length.
fn norm_heads(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    ops::rms_norm_rows(x, w, eps, tmp);
    x.copy_from_slice(tmp);
}
