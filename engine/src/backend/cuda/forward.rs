//! A block and the output layer on the GPU: the same steps as the host's forward pass
//! (`backend::host::block`), with `strata-kernels-cuda` launches on the device's one stream.

use strata_kernels_cuda::{AttentionShape, CudaError, DeviceBuffer, Gpu, RopeParams};

use std::ops::Range;

use super::weights::GpuKv;
use super::weights::{GpuBlock, GpuMatrix, GpuScratch};
use super::{CudaBackend, MATVEC_MAX_BATCH};
use crate::config::ModelConfig;

fn missing(what: &str) -> CudaError {
    CudaError::Unavailable(format!("this GPU holds no {what}"))
}

impl CudaBackend {
    /// Blocks `range` (consecutive, all placed on this GPU) on the `n`
    /// rows of the residual stream in the GPU's scratch, at positions `pos..pos + n`.
    ///
    /// A one-token step replays a CUDA graph of the whole range once the range has run
    /// eagerly once (which also loads every kernel module): one launch instead of ~20 a
    /// block. Positions are the only inputs that change between steps, and the kernels
    /// read them from device memory.
    pub(super) fn run_blocks(
        &mut self,
        range: Range<usize>,
        cfg: &ModelConfig,
        rope: &RopeParams,
        n: usize,
        pos: usize,
    ) -> Result<(), CudaError> {
        let CudaBackend {
            gpu: g,
            blocks,
            kvs,
            scratch,
            graphs,
            use_graphs,
            ..
        } = self;
        let s = scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        write_positions(g, s, pos, n)?;
        let key = (range.start, range.end);
        let mut queue = |s: &mut GpuScratch| -> Result<(), CudaError> {
            for i in range.clone() {
                let w = blocks
                    .get(&i)
                    .ok_or_else(|| missing(&format!("weights of block {i}")))?;
                let kv = kvs
                    .get_mut(&i)
                    .ok_or_else(|| missing(&format!("KV cache of block {i}")))?;
                queue_block(g, w, s, kv, cfg, rope, n)?;
            }
            Ok(())
        };
        if n != 1 || !*use_graphs {
            return queue(s);
        }
        match graphs.get(&key) {
            Some(Some(graph)) => graph.launch(),
            Some(None) => {
                let graph = g.capture(|| queue(s))?;
                graph.launch()?;
                graphs.insert(key, Some(graph));
                Ok(())
            }
            None => {
                graphs.insert(key, None);
                queue(s)
            }
        }
    }

    /// The output layer on the last `n_out` of the `n` rows in scratch, into the scratch's
    /// logits (`n_out × n_vocab`).
    pub(super) fn run_output(
        &mut self,
        cfg: &ModelConfig,
        n: usize,
        n_out: usize,
    ) -> Result<(), CudaError> {
        let g = &self.gpu;
        let o = self
            .output
            .as_ref()
            .ok_or_else(|| missing("output layer"))?;
        let s = self.scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        let e = cfg.n_embd;
        // The rows wanted, at the start of `out` (the kernels read from a buffer's start).
        let rows = if n_out < n {
            s.out
                .copy_within_device(g, 0, &s.x, (n - n_out) * e, n_out * e)?;
            &s.out
        } else {
            &s.x
        };
        g.rms_norm(rows, &o.norm, &mut s.xn, n_out, cfg.rms_eps)?;
        let mut xq_ready = false;
        mul(
            g,
            &o.w,
            &s.xn,
            &mut s.xq,
            &mut xq_ready,
            n_out,
            &mut s.logits,
        )
    }

    /// The first `out.len()` logits, from the GPU's scratch to the host.
    pub(super) fn logits_to_host(&self, out: &mut [f32]) -> Result<(), CudaError> {
        let s = self.scratch.as_ref().ok_or_else(|| missing("scratch"))?;
        s.logits.read_at(&self.gpu, 0, out)
    }

    /// The residual stream's first `len` values, from the host into the GPU's scratch.
    pub(super) fn x_from_host(&mut self, x: &[f32]) -> Result<(), CudaError> {
        let s = self.scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        s.x.write_at(&self.gpu, 0, x)
    }

    /// The residual stream's first `x.len()` values, from the GPU's scratch to the host.
    pub(super) fn x_to_host(&self, x: &mut [f32]) -> Result<(), CudaError> {
        let s = self.scratch.as_ref().ok_or_else(|| missing("scratch"))?;
        s.x.read_at(&self.gpu, 0, x)
    }
}

/// One block's launches: the CPU's `cpu_block` step for step.
fn queue_block(
    g: &Gpu,
    w: &GpuBlock,
    s: &mut GpuScratch,
    kv: &mut GpuKv,
    cfg: &ModelConfig,
    rope: &RopeParams,
    n: usize,
) -> Result<(), CudaError> {
    let (e, qd, kvd, ff, hd) = (
        cfg.n_embd,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.n_ff,
        cfg.head_dim,
    );

    // Attention.
    let mut xq_ready = norm(g, &w.attn_norm, &w.wq, s, n, cfg.rms_eps)?;
    mul(g, &w.wq, &s.xn, &mut s.xq, &mut xq_ready, n, &mut s.q)?;
    mul(g, &w.wk, &s.xn, &mut s.xq, &mut xq_ready, n, &mut s.k)?;
    mul(g, &w.wv, &s.xn, &mut s.xq, &mut xq_ready, n, &mut s.v)?;
    if let (Some(bq), Some(bk), Some(bv)) = (&w.bq, &w.bk, &w.bv) {
        g.add_rows(&mut s.q, bq, n * qd)?;
        g.add_rows(&mut s.k, bk, n * kvd)?;
        g.add_rows(&mut s.v, bv, n * kvd)?;
    }
    if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
        // Per-head RMSNorm through `attn` as scratch, as on the CPU.
        g.rms_norm(&s.q, qn, &mut s.attn, n * cfg.n_head, cfg.rms_eps)?;
        s.q.copy_within_device(g, 0, &s.attn, 0, n * qd)?;
        g.rms_norm(&s.k, kn, &mut s.attn, n * cfg.n_head_kv, cfg.rms_eps)?;
        s.k.copy_within_device(g, 0, &s.attn, 0, n * kvd)?;
    }
    let shape = AttentionShape {
        ntok: n,
        nhead: cfg.n_head,
        nkv: cfg.n_head_kv,
        head_dim: hd,
    };
    g.rope_store_kv(
        &mut s.q, &mut s.k, &s.v, &mut kv.k, &mut kv.v, &s.pos, &shape, rope,
    )?;
    let mut xq_ready = reads_q8_1(&w.wo, n) && hd.is_multiple_of(32);
    if xq_ready {
        g.attention_q8_1(&s.q, &kv.k, &kv.v, &s.pos, &mut s.attn, &mut s.xq, &shape)?;
    } else {
        g.attention(&s.q, &kv.k, &kv.v, &s.pos, &mut s.attn, &shape)?;
    }
    mul(g, &w.wo, &s.attn, &mut s.xq, &mut xq_ready, n, &mut s.out)?;
    g.add(&mut s.x, &s.out, n * e)?;

    // Feed-forward.
    let mut xq_ready = norm(g, &w.ffn_norm, &w.w_gate, s, n, cfg.rms_eps)?;
    mul(
        g,
        &w.w_gate,
        &s.xn,
        &mut s.xq,
        &mut xq_ready,
        n,
        &mut s.gate,
    )?;
    mul(g, &w.w_up, &s.xn, &mut s.xq, &mut xq_ready, n, &mut s.up)?;
    let xq_ready = if reads_q8_1(&w.w_down, n) {
        g.swiglu_q8_1(&s.gate, &s.up, &mut s.ff, &mut s.xq, ff, n)?;
        true
    } else {
        g.swiglu(&s.gate, &s.up, &mut s.ff, n * ff)?;
        false
    };
    mul(
        g,
        &w.w_down,
        &s.ff,
        &mut s.xq,
        &mut { xq_ready },
        n,
        &mut s.out,
    )?;
    g.add(&mut s.x, &s.out, n * e)
}

/// `s.xn = rms_norm(s.x) · weight` for `n` rows, quantized to q8_1 into `s.xq` in the same
/// launch when `m`, the next product, reads q8_1. Returns whether it did.
fn norm(
    g: &Gpu,
    weight: &DeviceBuffer<f32>,
    m: &GpuMatrix,
    s: &mut GpuScratch,
    n: usize,
    eps: f32,
) -> Result<bool, CudaError> {
    if reads_q8_1(m, n) {
        g.rms_norm_q8_1(&s.x, weight, &mut s.xn, &mut s.xq, n, eps)?;
        Ok(true)
    } else {
        g.rms_norm(&s.x, weight, &mut s.xn, n, eps)?;
        Ok(false)
    }
}

/// Whether a product with `m` on `n` rows takes q8_1 activations (see [`mul`]).
fn reads_q8_1(m: &GpuMatrix, n: usize) -> bool {
    use strata_kernels_cpu::GgmlType::{BF16, F16, F32};
    n <= MATVEC_MAX_BATCH && !matches!(m.ty, F32 | F16 | BF16)
}

/// Positions `pos..pos + n` (RoPE, the KV store and attention read them), copied only when
/// they change: once per forward call, before any launch or graph of the step.
fn write_positions(g: &Gpu, s: &mut GpuScratch, pos: usize, n: usize) -> Result<(), CudaError> {
    if s.pos_written == Some((pos, n)) {
        return Ok(());
    }
    let p: Vec<i32> = (pos..pos + n)
        .map(|p| {
            i32::try_from(p).map_err(|_| CudaError::Shape {
                op: "rope",
                what: format!("position {p} exceeds i32"),
            })
        })
        .collect::<Result<_, _>>()?;
    s.pos.write_at(g, 0, &p)?;
    s.pos_written = Some((pos, n));
    Ok(())
}

/// `y = x · Wᵀ` for `n` rows. Quantized weights on up to [`MATVEC_MAX_BATCH`] rows read
/// q8_1 activations, quantized into `xq` once for the products that share the input
/// (`xq_ready` says whether they are there); float weights read `x`; larger batches go to
/// the tiled matmul.
fn mul(
    g: &Gpu,
    m: &GpuMatrix,
    x: &DeviceBuffer<f32>,
    xq: &mut DeviceBuffer<u8>,
    xq_ready: &mut bool,
    n: usize,
    y: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    if n > MATVEC_MAX_BATCH {
        return g.matmul(m.ty, &m.data, x, y, m.cols, m.rows, n);
    }
    if !reads_q8_1(m, n) {
        return g.matvec(m.ty, &m.data, x, xq, y, m.cols, m.rows, n);
    }
    if !*xq_ready {
        g.quantize_q8_1(x, xq, m.cols, n)?;
        *xq_ready = true;
    }
    g.matvec_q8_1(m.ty, &m.data, xq, y, m.cols, m.rows, n)
}
