//! The forward pass of the llama family, top to bottom, for a batch of `n` tokens at
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

use std::time::Instant;
use strata_kernels_cpu::ops::{self, KvCache, Rope};
use strata_kernels_cpu::{
    matmul_packed, matmul_quantized, matvec_packed, matvec_quantized, Packed, QuantizedActs,
};

use strata_kernels_cuda::RopeParams;

use super::{BlockCache, DeviceState, RunError};
use crate::accel::DeviceWeights;
use crate::config::ModelConfig;
use crate::device::{DeviceId, Placement};
use crate::model::{Matrix, Model};

pub(super) fn forward(
    model: &Model,
    placement: &Placement,
    caches: &mut [BlockCache],
    devices: &mut [DeviceState],
    tokens: &[u32],
    pos: usize,
    n_out: usize,
) -> Result<(), RunError> {
    let cfg = &model.cfg;
    let n = tokens.len();
    let e = cfg.n_embd;
    let rope = Rope {
        n_rot: cfg.n_rot,
        freq_base: cfg.rope_freq_base,
        freq_scale: cfg.rope_freq_scale,
        neox: cfg.arch.rope_neox(),
    };

    // The embedding lookup runs on the CPU.
    let mut here = DeviceId::Cpu;
    let mut since = Instant::now();
    {
        let d = device(devices, here);
        embed(model, &d.mem.weights, tokens, &mut d.scratch.x[..n * e])?;
    }

    // The blocks, a run of consecutive blocks on one device at a time.
    let mut start = 0;
    while start < caches.len() {
        let dev = placement.blocks[start];
        let end = (start..caches.len())
            .find(|&j| placement.blocks[j] != dev)
            .unwrap_or(caches.len());
        cross(devices, &mut here, dev, n * e, &mut since)?;
        let d = device(devices, here);
        let run = &mut caches[start..end];
        match &mut d.cuda {
            Some(gpu) => {
                let mut kvs = Vec::with_capacity(run.len());
                for (i, c) in (start..end).zip(run.iter_mut()) {
                    match c {
                        BlockCache::Cuda(kv) => kvs.push(kv),
                        BlockCache::Host(_) => return Err(elsewhere(i, dev)),
                    }
                }
                gpu.run_blocks(start..end, &mut kvs, cfg, &gpu_rope(&rope), n, pos)?;
            }
            None => {
                for (i, c) in (start..end).zip(run.iter_mut()) {
                    let BlockCache::Host(cache) = c else {
                        return Err(elsewhere(i, dev));
                    };
                    // The block's weights where its device holds them: an accelerator's
                    // own copy, or the mapped file for the CPU.
                    let copied;
                    let w = match d.mem.weights.block(i) {
                        Some(c) => {
                            copied = c;
                            &copied
                        }
                        None => &model.blocks[i],
                    };
                    cpu_block(cfg, w, &mut d.scratch, cache, &rope, n, pos)?;
                }
            }
        }
        start = end;
    }

    // Output layer, on the last `n_out` rows.
    cross(devices, &mut here, placement.output, n * e, &mut since)?;
    let len = n_out * cfg.n_vocab;
    if here == DeviceId::Cpu || device(devices, here).cuda.is_none() {
        let d = device(devices, here);
        let (norm, w_out) = d
            .mem
            .weights
            .output()
            .unwrap_or((&model.output_norm, model.output));
        let s = &mut d.scratch;
        let rows = (n - n_out) * e..n * e;
        let xn = &mut s.xn[..n_out * e];
        ops::rms_norm_rows(&s.x[rows], norm, cfg.rms_eps, xn);
        let logits = &mut s.logits[..len];
        quantize_for(&mut s.acts, &w_out, xn, n_out)?;
        mul(&w_out, &mut s.acts, xn, n_out, logits)?;
    }

    // The logits come back to the host: one more explicit copy when computed elsewhere.
    if here != DeviceId::Cpu {
        let (cpu, other) = pair(devices, DeviceId::Cpu, here);
        match &mut other.cuda {
            Some(gpu) => gpu.output(cfg, n, n_out, &mut cpu.scratch.logits)?,
            None => cpu.scratch.logits[..len].copy_from_slice(&other.scratch.logits[..len]),
        }
        cpu.mem.count_copy(DeviceId::Cpu, len as u64 * 4);
    }
    device(devices, here).busy += since.elapsed();
    Ok(())
}

/// The embedding rows of `tokens` into `out`: from the mapped file, or, when the output is
/// tied and the CPU holds it packed (the file's copy is then not kept), unpacked from there.
fn embed(
    model: &Model,
    cpu: &DeviceWeights,
    tokens: &[u32],
    out: &mut [f32],
) -> Result<(), RunError> {
    let emb = match cpu.output() {
        Some((_, m)) if model.cfg.tied_output && m.packed => m,
        _ => model.token_embd,
    };
    if !emb.packed {
        ops::get_rows(emb.ty, emb.data, emb.cols, tokens, out)?;
        return Ok(());
    }
    let p = Packed::new(emb.ty, emb.rows, emb.cols, emb.data)?;
    let mut row = vec![0u8; emb.data.len() / emb.rows];
    for (&id, out) in tokens.iter().zip(out.chunks_exact_mut(emb.cols)) {
        if id as usize >= emb.rows {
            return Err(RunError::BadToken {
                id,
                n_vocab: emb.rows,
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
fn cpu_block(
    cfg: &ModelConfig,
    w: &crate::model::BlockWeights,
    s: &mut super::Scratch,
    cache: &mut KvCache,
    rope: &Rope,
    n: usize,
    pos: usize,
) -> Result<(), RunError> {
    if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| cpu_block_body(cfg, w, s, cache, rope, n, pos))
    } else {
        cpu_block_body(cfg, w, s, cache, rope, n, pos)
    }
}

fn cpu_block_body(
    cfg: &ModelConfig,
    w: &crate::model::BlockWeights,
    s: &mut super::Scratch,
    cache: &mut KvCache,
    rope: &Rope,
    n: usize,
    pos: usize,
) -> Result<(), RunError> {
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

fn elsewhere(block: usize, device: DeviceId) -> RunError {
    RunError::CacheElsewhere { block, device }
}

fn gpu_rope(r: &Rope) -> RopeParams {
    RopeParams {
        n_rot: r.n_rot,
        freq_base: r.freq_base,
        freq_scale: r.freq_scale,
        neox: r.neox,
    }
}

/// The device states `a` and `b`, which must differ.
fn pair(
    devices: &mut [DeviceState],
    a: DeviceId,
    b: DeviceId,
) -> (&mut DeviceState, &mut DeviceState) {
    let ai = devices.iter().position(|d| d.id == a).expect("device a");
    let bi = devices.iter().position(|d| d.id == b).expect("device b");
    if bi < ai {
        let (l, r) = devices.split_at_mut(ai);
        (&mut r[0], &mut l[bi])
    } else {
        let (l, r) = devices.split_at_mut(bi);
        (&mut l[ai], &mut r[0])
    }
}

fn device(devices: &mut [DeviceState], id: DeviceId) -> &mut DeviceState {
    devices
        .iter_mut()
        .find(|d| d.id == id)
        .expect("every placed device has a scratch")
}

/// Moves the residual stream (`len` floats) to `to` if it is elsewhere: the one explicit
/// copy at a device boundary (between two GPUs, staged through the host). The time since
/// `since` is charged to the device left, the copy included.
fn cross(
    devices: &mut [DeviceState],
    here: &mut DeviceId,
    to: DeviceId,
    len: usize,
    since: &mut Instant,
) -> Result<(), RunError> {
    if *here == to {
        return Ok(());
    }
    let (b, a) = pair(devices, to, *here);
    match (&mut b.cuda, &a.cuda) {
        (None, None) => b.scratch.x[..len].copy_from_slice(&a.scratch.x[..len]),
        (Some(gb), None) => gb.write_x(&a.scratch.x[..len])?,
        (None, Some(ga)) => ga.read_x(&mut b.scratch.x[..len])?,
        (Some(gb), Some(ga)) => {
            let mut staged = vec![0.0f32; len];
            ga.read_x(&mut staged)?;
            gb.write_x(&staged)?;
        }
    }
    b.mem.count_copy(to, len as u64 * 4);
    let now = Instant::now();
    a.busy += now - *since;
    *since = now;
    *here = to;
    Ok(())
}

/// Quantizes `x` (`n` rows) to the activation format `w` takes.
fn quantize_for(acts: &mut QuantizedActs, w: &Matrix, x: &[f32], n: usize) -> Result<(), RunError> {
    acts.quantize(w.ty.vec_dot_type(), x, n, w.cols)?;
    Ok(())
}

/// `y = x · Wᵀ` for `n` rows, using the quantized `acts` of `x` when they are in the
/// format `w` takes (q/k/v and gate/up share one), else quantizing `x` again.
fn mul(
    w: &Matrix,
    acts: &mut QuantizedActs,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), RunError> {
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
