//! A block and the output layer on the GPU: the same steps as the host's forward pass
//! (`backend::host::block`), with `strata-kernels-cuda` launches on the device's one stream.

use strata_kernels_cpu::ops::MlaShape;
use strata_kernels_cuda::{
    AttentionShape, CacheRows, CudaError, DeviceBuffer, ExpertSlots, ExpertStack, Gpu, MlaDims,
    RopeParams,
};

use std::ops::Range;

use super::weights::{
    AttentionKind, FfnKind, GpuAttention, GpuBlock, GpuDense, GpuFfn, GpuGqa, GpuKv, GpuMatrix,
    GpuMla, GpuScratch, MlaQuery,
};
use super::{CudaBackend, MATVEC_MAX_BATCH};
use crate::backend::{Exchange, Segment};
use crate::config::ModelConfig;

fn missing(what: &str) -> CudaError {
    CudaError::Unavailable(format!("this GPU holds no {what}"))
}

impl CudaBackend {
    /// Blocks `range` (consecutive, all placed on this GPU) on the `n` rows of the residual
    /// stream in the GPU's scratch, in runs of one sequence `segs` (one sequence or several).
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
        segs: &[Segment],
    ) -> Result<(), CudaError> {
        let CudaBackend {
            gpu: g,
            blocks,
            kvs,
            kv_shape,
            scratch,
            graphs,
            use_graphs,
            ..
        } = self;
        let s = scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        write_positions(g, s, segs, *kv_shape)?;
        let n_ctx = kv_shape.0;
        let key = (range.start, range.end);
        let mut queue = |s: &mut GpuScratch| -> Result<(), CudaError> {
            for i in range.clone() {
                let w = blocks
                    .get(&i)
                    .ok_or_else(|| missing(&format!("weights of block {i}")))?;
                let kv = cache(kvs, i)?;
                queue_block(g, w, s, (kv, n_ctx), cfg, rope, n)?;
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

    /// [`Unit::Attention`](crate::backend::Unit): block `i`'s attention on the `n` rows, in
    /// runs of one sequence `segs`.
    pub(super) fn run_attention(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        rope: &RopeParams,
        n: usize,
        segs: &[Segment],
    ) -> Result<(), CudaError> {
        let CudaBackend {
            gpu: g,
            blocks,
            kvs,
            kv_shape,
            scratch,
            ..
        } = self;
        let s = scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        let a = blocks
            .get(&i)
            .and_then(|w| w.attn.as_ref())
            .ok_or_else(|| missing(&format!("attention of block {i}")))?;
        let kv = cache(kvs, i)?;
        write_positions(g, s, segs, *kv_shape)?;
        queue_attention(g, a, s, (kv, kv_shape.0), cfg, rope, n)
    }

    /// [`Unit::FfnRoute`](crate::backend::Unit): block `i`'s FFN input for the last `m` of
    /// the `n` rows, and their routing.
    pub(super) fn run_ffn_route(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        n: usize,
        m: usize,
    ) -> Result<(), CudaError> {
        let f = self
            .blocks
            .get(&i)
            .and_then(|w| w.ffn.as_ref())
            .ok_or_else(|| missing(&format!("FFN of block {i}")))?;
        let s = self.scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        ffn_input(&self.gpu, f, s, cfg, n, m).map(|_| ())
    }

    /// [`Unit::FfnLocal`](crate::backend::Unit): this GPU's share of block `i`'s FFN for the
    /// `m` routed rows, into `out`. Holding every expert and the router, it reads the
    /// routing where the router left it; holding some, it takes the routing to the host
    /// (from its own router, or as imported) and keeps the slots of its experts.
    pub(super) fn run_ffn_local(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        m: usize,
    ) -> Result<(), CudaError> {
        let CudaBackend {
            gpu: g,
            blocks,
            scratch,
            route,
            ..
        } = self;
        let w = blocks
            .get(&i)
            .ok_or_else(|| missing(&format!("any part of block {i}")))?;
        let s = scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        let nx = cfg.moe.as_ref().map_or(0, |x| x.n_expert);
        let k = cfg.moe.as_ref().map_or(0, |x| x.n_expert_used);
        let own: (Vec<u32>, Vec<f32>);
        let routing = match (&w.experts, &w.ffn) {
            (None, _) => Routing::Device,
            (Some(x), Some(_)) if x.range.len() == nx => Routing::Device,
            (Some(_), Some(_)) => {
                let ms = s.moe.as_ref().ok_or_else(|| missing("expert scratch"))?;
                let (mut ids, mut weights) = (vec![0u32; m * k], vec![0f32; m * k]);
                ms.ids.read_at(g, 0, &mut ids)?;
                ms.weights.read_at(g, 0, &mut weights)?;
                own = (ids, weights);
                Routing::Host {
                    ids: &own.0,
                    weights: &own.1,
                }
            }
            (Some(_), None) => {
                let (ids, weights) = route
                    .as_ref()
                    .ok_or_else(|| missing(&format!("routing of block {i}")))?;
                Routing::Host { ids, weights }
            }
        };
        ffn_share(g, w, s, cfg, m, false, routing)
    }

    /// [`Unit::FfnEnd`](crate::backend::Unit): `x += out` for the last `m` of the `n` rows.
    pub(super) fn run_ffn_end(
        &mut self,
        cfg: &ModelConfig,
        n: usize,
        m: usize,
    ) -> Result<(), CudaError> {
        let s = self.scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        let e = cfg.n_embd;
        self.gpu.add_at(&mut s.x, (n - m) * e, &s.out, m * e)
    }

    /// The first `out.len()` values of `what`, to the host: the routing as
    /// [`Exchange::Route`] lays it out, or this GPU's share of the FFN.
    pub(super) fn export_exchange(&self, what: Exchange, out: &mut [f32]) -> Result<(), CudaError> {
        let g = &self.gpu;
        let s = self.scratch.as_ref().ok_or_else(|| missing("scratch"))?;
        match what {
            Exchange::Route => {
                let ms = s.moe.as_ref().ok_or_else(|| missing("expert scratch"))?;
                let (xe, wk) = s.layout.route_cuts(out.len());
                let (xn, rest) = out.split_at_mut(xe);
                let (weights, ids) = rest.split_at_mut(wk);
                s.xn.read_at(g, 0, xn)?;
                ms.weights.read_at(g, 0, weights)?;
                let mut raw = vec![0u32; wk];
                ms.ids.read_at(g, 0, &mut raw)?;
                for (o, id) in ids.iter_mut().zip(raw) {
                    *o = f32::from_bits(id);
                }
                Ok(())
            }
            Exchange::Partial => s.out.read_at(g, 0, out),
        }
    }

    /// `data` into `what`: the routing (the rows into `xn`, the ids and weights kept on the
    /// host for [`run_ffn_local`](Self::run_ffn_local)), or another device's share added to
    /// this GPU's.
    pub(super) fn import_exchange(
        &mut self,
        what: Exchange,
        data: &[f32],
    ) -> Result<(), CudaError> {
        let g = &self.gpu;
        let s = self.scratch.as_mut().ok_or_else(|| missing("scratch"))?;
        match what {
            Exchange::Route => {
                let (xe, wk) = s.layout.route_cuts(data.len());
                let (xn, rest) = data.split_at(xe);
                let (weights, ids) = rest.split_at(wk);
                s.xn.write_at(g, 0, xn)?;
                self.route = Some((ids.iter().map(|v| v.to_bits()).collect(), weights.to_vec()));
                Ok(())
            }
            // Through `xn`, which the FFN's device no longer reads once its share is done.
            Exchange::Partial => {
                s.xn.write_at(g, 0, data)?;
                g.add(&mut s.out, &s.xn, data.len())
            }
        }
    }
}

/// Block `i`'s cache (every sequence's rows).
fn cache(
    kvs: &mut std::collections::BTreeMap<usize, GpuKv>,
    i: usize,
) -> Result<&mut GpuKv, CudaError> {
    kvs.get_mut(&i)
        .ok_or_else(|| missing(&format!("KV cache of block {i}")))
}

/// One block's launches: the CPU's `cpu_block` step for step.
fn queue_block(
    g: &Gpu,
    w: &GpuBlock,
    s: &mut GpuScratch,
    kv: (&mut GpuKv, usize),
    cfg: &ModelConfig,
    rope: &RopeParams,
    n: usize,
) -> Result<(), CudaError> {
    let a = w
        .attn
        .as_ref()
        .ok_or_else(|| missing("attention of the block"))?;
    let f = w.ffn.as_ref().ok_or_else(|| missing("FFN of the block"))?;
    queue_attention(g, a, s, kv, cfg, rope, n)?;
    let xq_ready = ffn_input(g, f, s, cfg, n, n)?;
    ffn_share(g, w, s, cfg, n, xq_ready, Routing::Device)?;
    g.add(&mut s.x, &s.out, n * cfg.n_embd)
}

/// `x += attention(rms_norm(x))` for the `n` rows of `s.x`, with the block's cache `kv.0`
/// of sequences of `kv.1` positions (each row's place in the scratch's `pos` and `base`).
pub(super) fn queue_attention(
    g: &Gpu,
    w: &GpuAttention,
    s: &mut GpuScratch,
    (kv, n_ctx): (&mut GpuKv, usize),
    cfg: &ModelConfig,
    rope: &RopeParams,
    n: usize,
) -> Result<(), CudaError> {
    match (&w.kind, kv) {
        (AttentionKind::Gqa(a), GpuKv::Gqa { k, v }) => {
            queue_gqa(g, &w.norm, a, s, (k, v, n_ctx), cfg, rope, n)?
        }
        (AttentionKind::Mla(a), GpuKv::Latent(cache)) => {
            queue_mla(g, &w.norm, a, s, (cache, n_ctx), cfg, rope, n)?
        }
        _ => return Err(missing("KV cache of this block's kind of attention")),
    }
    g.add(&mut s.x, &s.out, n * cfg.n_embd)
}

/// Grouped-query attention of `rms_norm(x)` into `s.out`.
#[allow(clippy::too_many_arguments)]
fn queue_gqa(
    g: &Gpu,
    norm_w: &DeviceBuffer<f32>,
    w: &GpuGqa,
    s: &mut GpuScratch,
    (kc, vc, n_ctx): (&mut DeviceBuffer<u16>, &mut DeviceBuffer<u16>, usize),
    cfg: &ModelConfig,
    rope: &RopeParams,
    n: usize,
) -> Result<(), CudaError> {
    let (qd, kvd, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let mut xq_ready = norm(g, norm_w, &w.wq, s, n, cfg.rms_eps)?;
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
    let at = CacheRows {
        pos: &s.pos,
        base: &s.base,
        n_ctx,
    };
    g.rope_store_kv(&mut s.q, &mut s.k, &s.v, kc, vc, &at, &shape, rope)?;
    let mut xq_ready = reads_q8_1(&w.wo, n) && hd.is_multiple_of(32);
    if xq_ready {
        g.attention_q8_1(&s.q, kc, vc, &at, &mut s.attn, &mut s.xq, &shape)?;
    } else {
        g.attention(&s.q, kc, vc, &at, &mut s.attn, &shape)?;
    }
    mul(g, &w.wo, &s.attn, &mut s.xq, &mut xq_ready, n, &mut s.out)
}

/// Multi-head latent attention of `rms_norm(x)` into `s.out`, in the absorbed form, as the
/// CPU's `mla`: the queries (through q_lora's norm where the file has one) and the latent
/// with the rotary key from the same normalised rows; the cache row stored; each head's
/// query split, its nope part absorbed into the latent space (through attn_k_b, or attn_kv_b
/// read transposed) into `q_lat` while `q_pe` holds the rotated part; attention over the
/// cached rows into `s.attn` (each head's latent output); each head's value through its v
/// rows into `s.v`; the output projection. A head's product is an expert product: the heads
/// an expert stack, a (token, head) pair a slot, all in one launch.
#[allow(clippy::too_many_arguments)]
fn queue_mla(
    g: &Gpu,
    norm_w: &DeviceBuffer<f32>,
    w: &GpuMla,
    s: &mut GpuScratch,
    (cache, n_ctx): (&mut DeviceBuffer<u16>, usize),
    cfg: &ModelConfig,
    rope: &RopeParams,
    n: usize,
) -> Result<(), CudaError> {
    let m = cfg.mla.as_ref().ok_or_else(|| missing("MLA widths"))?;
    let nh = cfg.n_head;
    let d = MlaDims {
        n_heads: nh,
        nope: m.qk_nope,
        pe: m.qk_rope,
        kvr: m.kv_lora_rank,
    };
    // attn_q (or attn_q_a) and attn_kv_a_mqa share the normalised rows' q8_1.
    let first = match &w.q {
        MlaQuery::Full(wq) => wq,
        MlaQuery::LowRank { a, .. } => a,
    };
    let mut xq_ready = norm(g, norm_w, first, s, n, cfg.rms_eps)?;
    let GpuScratch {
        xn,
        xq,
        q,
        k,
        v,
        attn,
        out,
        pos,
        base,
        mla: ms,
        ..
    } = s;
    let at = CacheRows { pos, base, n_ctx };
    let ms = ms.as_mut().ok_or_else(|| missing("MLA scratch"))?;
    match &w.q {
        MlaQuery::Full(wq) => mul(g, wq, xn, xq, &mut xq_ready, n, q)?,
        MlaQuery::LowRank { a, .. } => mul(g, a, xn, xq, &mut xq_ready, n, k)?,
    }
    mul(g, &w.kv_a, xn, xq, &mut xq_ready, n, &mut ms.kv_a)?;
    if let MlaQuery::LowRank {
        norm: qa_norm, b, ..
    } = &w.q
    {
        g.rms_norm(k, qa_norm, v, n, cfg.rms_eps)?;
        let mut ready = false;
        mul(g, b, v, xq, &mut ready, n, q)?;
    }
    g.mla_store_latent(&ms.kv_a, &w.kv_a_norm, cache, &at, n, &d, cfg.rms_eps, rope)?;

    // Each head's nope part into `attn` (free until the attention writes it), then absorbed.
    g.mla_split_q(q, attn, &mut ms.q_pe, pos, n, &d, rope)?;
    let slots = ExpertSlots {
        n_slot: n * nh,
        slots_per_x: 1,
    };
    if w.k_transposed {
        g.mla_absorb_t(w.k.ty, &w.k.data, attn, &mut ms.q_lat, n * nh, &d)?;
    } else {
        let mut ready = false;
        experts(
            g,
            &w.k,
            nh,
            &ms.heads,
            attn,
            xq,
            &mut ready,
            &mut ms.q_lat,
            &slots,
        )?;
    }
    let shape = MlaShape {
        n_tokens: n,
        n_heads: nh,
        v_off: d.pe,
        scale: cfg.mla_scale(),
    };
    g.mla_attention(&ms.q_pe, &ms.q_lat, cache, d.pe + d.kvr, &at, attn, &shape)?;
    let mut ready = false;
    experts(g, &w.v, nh, &ms.heads, attn, xq, &mut ready, v, &slots)?;
    let mut ready = false;
    mul(g, &w.wo, v, xq, &mut ready, n, out)
}

/// The FFN's input, as the CPU's `ffn_route`: the last `m` of the `n` rows of `s.x`
/// normalised at the front of `s.xn`, and in a MoE block each row's experts and weights
/// (`ids`, `weights` of the expert scratch; on the device, so a one-token step stays one
/// graph). Returns whether `s.xq` holds `s.xn` in q8_1.
pub(super) fn ffn_input(
    g: &Gpu,
    f: &GpuFfn,
    s: &mut GpuScratch,
    cfg: &ModelConfig,
    n: usize,
    m: usize,
) -> Result<bool, CudaError> {
    let first = match &f.kind {
        FfnKind::Dense(d) => &d.gate,
        FfnKind::Moe { router, .. } => router,
    };
    let mut xq_ready = if m == n {
        norm(g, &f.norm, first, s, n, cfg.rms_eps)?
    } else {
        let e = cfg.n_embd;
        s.out.copy_within_device(g, 0, &s.x, (n - m) * e, m * e)?;
        g.rms_norm(&s.out, &f.norm, &mut s.xn, m, cfg.rms_eps)?;
        false
    };
    if let FfnKind::Moe {
        router, probs_bias, ..
    } = &f.kind
    {
        let moe = cfg
            .moe
            .as_ref()
            .ok_or_else(|| missing("expert configuration"))?;
        let ms = s.moe.as_mut().ok_or_else(|| missing("expert scratch"))?;
        mul(
            g,
            router,
            &s.xn,
            &mut s.xq,
            &mut xq_ready,
            m,
            &mut ms.router,
        )?;
        let r = moe.router();
        g.moe_route(
            &ms.router,
            probs_bias.as_ref(),
            &r,
            m,
            &mut ms.ids,
            &mut ms.weights,
        )?;
    }
    Ok(xq_ready)
}

/// Where a share of a MoE FFN finds each row's experts and weights.
#[derive(Clone, Copy)]
pub(super) enum Routing<'a> {
    /// In the expert scratch, as [`ffn_input`] left them (this GPU holds every expert).
    Device,
    /// On the host, `n_expert_used` a row, ids counting every expert of the block.
    Host { ids: &'a [u32], weights: &'a [f32] },
}

/// This GPU's share of the FFN of the `m` rows at the front of `s.xn` into `s.out`, as the
/// CPU's `ffn_local`: the dense FFN or the shared experts where it holds the FFN (else
/// zeros), plus its routed experts' weighted outputs. The experts go in passes of at most
/// `chunk` tokens, whose slots fill the FFN buffers: up to [`MATVEC_MAX_BATCH`] tokens by
/// the expert matvec, larger passes grouped by expert (sort, gather, grouped matmul: each
/// chosen expert's weights read once a pass). A pass's sum is added after the shared
/// experts' output (two terms: the CPU's order gives the same bits).
pub(super) fn ffn_share(
    g: &Gpu,
    w: &GpuBlock,
    s: &mut GpuScratch,
    cfg: &ModelConfig,
    m: usize,
    mut xq_ready: bool,
    routing: Routing,
) -> Result<(), CudaError> {
    let e = cfg.n_embd;
    let GpuScratch {
        xn,
        xq,
        gate,
        up,
        ff,
        out,
        moe: ms,
        ..
    } = s;
    let dense = match w.ffn.as_ref().map(|f| &f.kind) {
        Some(FfnKind::Dense(d)) => Some(d),
        Some(FfnKind::Moe { shared, .. }) => shared.as_ref(),
        None => None,
    };
    match dense {
        Some(d) => {
            ffn_into(g, d, xn, xq, xq_ready, (gate, up, ff), m, out)?;
            xq_ready = false;
        }
        None => out.zero_prefix(g, m * e)?,
    }
    let Some(x) = &w.experts else {
        return Ok(());
    };
    let moe = cfg
        .moe
        .as_ref()
        .ok_or_else(|| missing("expert configuration"))?;
    let ms = ms.as_mut().ok_or_else(|| missing("expert scratch"))?;
    let (k, held) = (moe.n_expert_used, x.range.len());
    let f = x.gate.rows / held;
    let mut t0 = 0;
    while t0 < m {
        let c = ms.chunk.min(m - t0);
        let one_by_one = c <= MATVEC_MAX_BATCH;
        // The pass's routing at the front of a buffer, where the kernels read.
        let (kk, own) = match routing {
            Routing::Device if c == m => (k, true),
            Routing::Device => {
                ms.pass_ids
                    .copy_within_device(g, 0, &ms.ids, t0 * k, c * k)?;
                ms.pass_weights
                    .copy_within_device(g, 0, &ms.weights, t0 * k, c * k)?;
                (k, false)
            }
            Routing::Host { ids, weights } => {
                let rows = t0 * k..(t0 + c) * k;
                // A pad the grouped product skips (an id past the stack), or one the matvec
                // can read (expert 0 here), weighted 0 either way.
                let pad = if one_by_one { 0 } else { held as u32 };
                let l = local_slots(&ids[rows.clone()], &weights[rows], k, &x.range, pad);
                if l.k == 0 {
                    t0 += c;
                    continue;
                }
                ms.pass_ids.write_at(g, 0, &l.ids)?;
                ms.pass_weights.write_at(g, 0, &l.weights)?;
                (l.k, false)
            }
        };
        let (ids, wts) = if own {
            (&ms.ids, &ms.weights)
        } else {
            (&ms.pass_ids, &ms.pass_weights)
        };
        let slots = c * kk;
        // The pass's rows at the front of a buffer: `xn` itself for one pass, else a copy
        // at the front of `yg`, which only the down product writes.
        let copied = c < m;
        if copied {
            ms.yg.copy_within_device(g, 0, xn, t0 * e, c * e)?;
            xq_ready = false;
        }
        {
            let xin: &DeviceBuffer<f32> = if copied { &ms.yg } else { xn };
            if one_by_one {
                let per = ExpertSlots {
                    n_slot: slots,
                    slots_per_x: kk,
                };
                experts(g, &x.gate, held, ids, xin, xq, &mut xq_ready, gate, &per)?;
                experts(g, &x.up, held, ids, xin, xq, &mut xq_ready, up, &per)?;
            } else {
                g.moe_sort(ids, slots, held, &mut ms.offsets, &mut ms.perm, &mut ms.inv)?;
                g.moe_gather(xin, &ms.perm, &mut ms.xg, e, slots, kk)?;
            }
        }
        if one_by_one {
            let mut ff_ready = if quantized(x.down.ty) {
                g.swiglu_q8_1(gate, up, ff, xq, f, slots)?;
                true
            } else {
                g.swiglu(gate, up, ff, slots * f)?;
                false
            };
            let per = ExpertSlots {
                n_slot: slots,
                slots_per_x: 1,
            };
            experts(
                g,
                &x.down,
                held,
                ids,
                ff,
                xq,
                &mut ff_ready,
                &mut ms.yg,
                &per,
            )?;
            g.moe_weighted_sum(&ms.yg, None, wts, &mut ms.xg, e, kk, c)?;
        } else {
            let offsets = &ms.offsets;
            for (mat, y) in [(&x.gate, &mut *gate), (&x.up, &mut *up)] {
                let st = stack(mat, held);
                g.matmul_experts(mat.ty, &mat.data, &st, offsets, &ms.xg, y, slots, c)?;
            }
            g.swiglu(gate, up, ff, slots * f)?;
            // Padded slots' rows are never computed: zeros, weighted 0.
            ms.yg.zero_prefix(g, slots * e)?;
            let st = stack(&x.down, held);
            g.matmul_experts(
                x.down.ty,
                &x.down.data,
                &st,
                offsets,
                ff,
                &mut ms.yg,
                slots,
                c,
            )?;
            g.moe_weighted_sum(&ms.yg, Some(&ms.inv), wts, &mut ms.xg, e, kk, c)?;
        }
        g.add_at(out, t0 * e, &ms.xg, c * e)?;
        xq_ready = false;
        t0 += c;
    }
    Ok(())
}

/// One pass's routing for a GPU holding experts `held` of a block: per row, the slots that
/// chose one of them (in slot order, the id counted from `held.start`), padded to the same
/// count `k` for every row with id `pad` and weight 0.
#[derive(Debug, PartialEq)]
pub(super) struct LocalSlots {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
    pub k: usize,
}

/// [`LocalSlots`] of rows of `k` slots (`ids` counting every expert of the block).
pub(super) fn local_slots(
    ids: &[u32],
    weights: &[f32],
    k: usize,
    held: &Range<usize>,
    pad: u32,
) -> LocalSlots {
    let rows = ids.len() / k.max(1);
    let mine = |t: usize| (t * k..(t + 1) * k).filter(|&s| held.contains(&(ids[s] as usize)));
    let kk = (0..rows).map(|t| mine(t).count()).max().unwrap_or(0);
    let mut out = LocalSlots {
        ids: Vec::with_capacity(rows * kk),
        weights: Vec::with_capacity(rows * kk),
        k: kk,
    };
    for t in 0..rows {
        let mut c = 0;
        for s in mine(t) {
            out.ids.push(ids[s] - held.start as u32);
            out.weights.push(weights[s]);
            c += 1;
        }
        for _ in c..kk {
            out.ids.push(pad);
            out.weights.push(0.0);
        }
    }
    out
}

/// `out = (silu(x·gate) ⊙ x·up) · down` for `n` rows of `x`, the hidden layer in `gate`,
/// `up` and `ff`; `xq_ready` says whether `xq` holds `x` in q8_1 already.
#[allow(clippy::too_many_arguments)]
fn ffn_into(
    g: &Gpu,
    d: &GpuDense,
    x: &DeviceBuffer<f32>,
    xq: &mut DeviceBuffer<u8>,
    mut xq_ready: bool,
    (gate, up, ff): Hidden,
    n: usize,
    out: &mut DeviceBuffer<f32>,
) -> Result<(), CudaError> {
    let f = d.gate.rows;
    mul(g, &d.gate, x, xq, &mut xq_ready, n, gate)?;
    mul(g, &d.up, x, xq, &mut xq_ready, n, up)?;
    let mut ff_ready = if reads_q8_1(&d.down, n) {
        g.swiglu_q8_1(gate, up, ff, xq, f, n)?;
        true
    } else {
        g.swiglu(gate, up, ff, n * f)?;
        false
    };
    mul(g, &d.down, ff, xq, &mut ff_ready, n, out)
}

/// The `gate`, `up` and `ff` buffers of an FFN's hidden layer.
type Hidden<'a> = (
    &'a mut DeviceBuffer<f32>,
    &'a mut DeviceBuffer<f32>,
    &'a mut DeviceBuffer<f32>,
);

/// The stack of `n_expert` matrices `m` holds.
fn stack(m: &GpuMatrix, n_expert: usize) -> ExpertStack {
    ExpertStack {
        n_expert,
        nrows: m.rows / n_expert,
        ncols: m.cols,
    }
}

/// The chosen experts' products of `m` (a stack of `n_expert`) for `slots`: quantized
/// weights read `x` in q8_1 from `xq`, quantized there first unless `xq_ready`.
#[allow(clippy::too_many_arguments)]
fn experts(
    g: &Gpu,
    m: &GpuMatrix,
    n_expert: usize,
    ids: &DeviceBuffer<u32>,
    x: &DeviceBuffer<f32>,
    xq: &mut DeviceBuffer<u8>,
    xq_ready: &mut bool,
    y: &mut DeviceBuffer<f32>,
    slots: &ExpertSlots,
) -> Result<(), CudaError> {
    let st = stack(m, n_expert);
    if quantized(m.ty) && *xq_ready {
        return g.matvec_experts_q8_1(m.ty, &m.data, &st, ids, xq, y, slots);
    }
    g.matvec_experts(m.ty, &m.data, &st, ids, x, xq, y, slots)?;
    *xq_ready |= quantized(m.ty);
    Ok(())
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
    n <= MATVEC_MAX_BATCH && quantized(m.ty)
}

/// Whether weights of `ty` are quantized (their matvec reads q8_1 activations).
fn quantized(ty: strata_kernels_cpu::GgmlType) -> bool {
    use strata_kernels_cpu::GgmlType::{BF16, F16, F32};
    !matches!(ty, F32 | F16 | BF16)
}

/// Each row's position and its sequence's first cache row (RoPE, the KV store and
/// attention read them), from the runs `segs`, copied only when they change: once per
/// forward call, before any launch or graph of the step.
fn write_positions(
    g: &Gpu,
    s: &mut GpuScratch,
    segs: &[Segment],
    (n_ctx, n_seq): (usize, usize),
) -> Result<(), CudaError> {
    if s.pos_written == segs {
        return Ok(());
    }
    let int = |v: usize, what: &str| {
        i32::try_from(v).map_err(|_| CudaError::Shape {
            op: "rope",
            what: format!("{what} {v} exceeds i32"),
        })
    };
    let (mut pos, mut base) = (Vec::new(), Vec::new());
    for seg in segs {
        if seg.seq >= n_seq {
            return Err(missing(&format!(
                "KV cache of sequence {} (it holds {n_seq})",
                seg.seq
            )));
        }
        let first = int(seg.seq * n_ctx, "cache row")?;
        for p in seg.pos..seg.pos + seg.n {
            pos.push(int(p, "position")?);
            base.push(first);
        }
    }
    s.pos.write_at(g, 0, &pos)?;
    s.base.write_at(g, 0, &base)?;
    s.pos_written = segs.to_vec();
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
