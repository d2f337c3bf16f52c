//! The forward pass of the llama family on a host-side device (the CPU, or a CPU device
//! posing as a GPU), top to bottom, for a batch of `n` tokens at
//! positions `pos..pos + n`:
//!
//! ```text
//! x = token_embd[tokens]
//! for each block:                                   (on the block's device)
//!     h = rms_norm(x) · attn_norm
//!     q, k, v = h·Wq (+bq), h·Wk (+bk), h·Wv (+bv)  (one quantization of h for all three)
//!     q, k = rms_norm per head (qwen3)
//!     q, k = rope(q, k)
//!     cache ← k, v;  a = attention(q, cache)         (causal, grouped-query)
//!     x += a·Wo
//!     h = rms_norm(x) · ffn_norm
//!     x += (silu(h·Wgate) ⊙ h·Wup) · Wdown            (one quantization of h for both)
//! logits = (rms_norm(x) · output_norm) · Wout        (last row, or every row for tests)
//! ```
//!
//! A matrix product quantizes its input to the weight's activation format first (Q8_1 for
//! Q4_1, Q8_0 for Q8_0/Q4_0, Q8_K for K-quants), as ggml does.

use strata_kernels_cpu::ops::{self, KvCache, Rope};
use strata_kernels_cpu::{
    matmul_packed, matmul_quantized, matvec_packed, matvec_quantized, Packed, QuantizedActs,
};

use super::scratch::Scratch;
use crate::backend::interface::BackendError;
use crate::config::ModelConfig;
use crate::model::{BlockWeights, Matrix};

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

/// One block on the CPU (or a device posing as an accelerator) with weights `w`.
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
    cache: &mut KvCache,
    rope: &Rope,
    n: usize,
    pos: usize,
) -> Result<(), BackendError> {
    if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| cpu_block_body(cfg, w, s, cache, rope, n, pos))
    } else {
        cpu_block_body(cfg, w, s, cache, rope, n, pos)
    }
}

fn cpu_block_body(
    cfg: &ModelConfig,
    w: &BlockWeights,
    s: &mut Scratch,
    cache: &mut KvCache,
    rope: &Rope,
    n: usize,
    pos: usize,
) -> Result<(), BackendError> {
    let (e, qd, kvd, ff, hd) = (
        cfg.n_embd,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.n_ff,
        cfg.head_dim,
    );
    let x = &mut s.x[..n * e];
    let xn = &mut s.xn[..n * e];
    let (q, k, v) = (&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]);

    // Attention.
    ops::rms_norm_rows(x, &w.attn_norm, cfg.rms_eps, xn);
    quantize_for(&mut s.acts, &w.wq, xn, n)?;
    mul(&w.wq, &mut s.acts, xn, n, q)?;
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
    ops::rope_rows(q, n, cfg.n_head, hd, pos, rope);
    ops::rope_rows(k, n, cfg.n_head_kv, hd, pos, rope);
    cache.append(pos, k, v)?;
    let attn = &mut s.attn[..n * qd];
    ops::attention(q, cache, pos, n, cfg.n_head, attn);
    let out = &mut s.out[..n * e];
    quantize_for(&mut s.acts, &w.wo, attn, n)?;
    mul(&w.wo, &mut s.acts, attn, n, out)?;
    ops::add(x, out);

    // Feed-forward.
    ops::rms_norm_rows(x, &w.ffn_norm, cfg.rms_eps, xn);
    let (gate, up, hidden) = (
        &mut s.gate[..n * ff],
        &mut s.up[..n * ff],
        &mut s.ff[..n * ff],
    );
    quantize_for(&mut s.acts, &w.w_gate, xn, n)?;
    mul(&w.w_gate, &mut s.acts, xn, n, gate)?;
    mul(&w.w_up, &mut s.acts, xn, n, up)?;
    ops::swiglu(gate, up, hidden);
    quantize_for(&mut s.acts, &w.w_down, hidden, n)?;
    mul(&w.w_down, &mut s.acts, hidden, n, out)?;
    ops::add(x, out);
    Ok(())
}

/// Quantizes `x` (`n` rows) to the activation format `w` takes.
pub(super) fn quantize_for(
    acts: &mut QuantizedActs,
    w: &Matrix,
    x: &[f32],
    n: usize,
) -> Result<(), BackendError> {
    acts.quantize(w.ty.vec_dot_type(), x, n, w.cols)?;
    Ok(())
}

/// `y = x · Wᵀ` for `n` rows, using the quantized `acts` of `x` when they are in the
/// format `w` takes (q/k/v and gate/up share one), else quantizing `x` again.
pub(super) fn mul(
    w: &Matrix,
    acts: &mut QuantizedActs,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), BackendError> {
    if acts.ty() != Some(w.ty.vec_dot_type()) || acts.n() != n || acts.cols() != w.cols {
        quantize_for(acts, w, x, n)?;
    }
    match (w.packed, n) {
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
