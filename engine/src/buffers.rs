//! The sizes of every buffer the runner allocates besides the weights: the KV cache of each
//! block and the scratch (activations) of each device.
//!
//! The planner costs a device with these same functions, and the runner allocates exactly
//! what they return (a test checks it), so the plan and the allocation cannot drift apart.

use strata_kernels_cpu::ops::{KvCache, KvType, LatentCache};
use strata_kernels_cpu::GgmlType;

use crate::config::ModelConfig;

/// The KV cache element type for a GGUF type name, or `None` if a cache cannot be stored
/// in it (only F32 and F16).
pub fn kv_type_of(ty: GgmlType) -> Option<KvType> {
    match ty {
        GgmlType::F32 => Some(KvType::F32),
        GgmlType::F16 => Some(KvType::F16),
        _ => None,
    }
}

/// Bytes per element of a KV cache of type `ty`, or `None` if unsupported.
pub fn kv_elem_bytes(ty: GgmlType) -> Option<u64> {
    kv_type_of(ty).map(|t| t.bytes_per_element() as u64)
}

/// Bytes of one block's KV cache for `n_ctx` positions stored as `kv_type`: exactly what
/// the runner allocates for that block — K and V ([`KvCache`]), or under MLA one row of
/// rotary key and latent per position ([`LatentCache`]).
/// Panics if `kv_type` is not F32 or F16 (check with [`kv_elem_bytes`] first).
pub fn kv_cache_bytes(cfg: &ModelConfig, n_ctx: usize, kv_type: GgmlType) -> u64 {
    let t = kv_type_of(kv_type).expect("KV cache type must be F32 or F16");
    match &cfg.mla {
        Some(m) => LatentCache::bytes(t, n_ctx, m.row_width()) as u64,
        None => KvCache::bytes(t, n_ctx, cfg.n_head_kv, cfg.head_dim) as u64,
    }
}

/// How the runner's per-device scratch is cut up, in f32 elements (except `act_q`, bytes).
/// Built by [`ScratchLayout::new`]; [`ScratchLayout::bytes`] is what the device holds.
/// Pieces an architecture does not use are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchLayout {
    /// Rows (tokens) one forward call processes at most.
    pub n_batch: usize,
    /// Rows whose logits are computed (1 when only the last position is wanted).
    pub n_outputs: usize,
    /// The residual stream, `n_batch × n_embd`.
    pub x: usize,
    /// Normalised input of a sub-layer, `n_batch × n_embd`.
    pub xn: usize,
    /// Queries as projected, `n_batch × n_head × head_dim`.
    pub q: usize,
    /// Keys (`n_batch × kv_dim`); under MLA the low-rank projections (q's, then the
    /// latent with the rotary key), the wider of the two.
    pub k: usize,
    /// Values (`n_batch × kv_dim`); under MLA each head's value expanded from the
    /// attention's latent output, `n_batch × n_head × v_head` (and q's normalised low-rank
    /// projection before that).
    pub v: usize,
    /// Attention output (all heads), `n_batch × q_dim`; under MLA in the latent space,
    /// `n_batch × n_head × kv_lora_rank`.
    pub attn: usize,
    /// MLA: the rows appended to the cache, `n_batch × (qk_rope + kv_lora_rank)`.
    pub kv_row: usize,
    /// MLA: each head's query in the latent space, `n_batch × n_head × (qk_rope + kv_lora_rank)`.
    pub q_latent: usize,
    pub gate: usize,
    pub up: usize,
    /// SwiGLU output, `n_batch × ffn_width`.
    pub ff: usize,
    /// Sub-layer output before it is added to the residual, `n_batch × n_embd`.
    pub out: usize,
    /// MoE: router logits, `n_batch × n_expert`.
    pub router: usize,
    /// MoE: each token's chosen experts and their weights, `n_batch × n_expert_used` each
    /// (the ids are u32, 4 bytes like an f32).
    pub route_ids: usize,
    pub route_weights: usize,
    /// Rows gathered for a product over part of the batch or part of a matrix (one expert's
    /// tokens, one head's slice), and that product's output: `n_batch × widest`.
    pub gathered_in: usize,
    pub gathered_out: usize,
    /// Activations quantized for the dot products: the widest input at 4 bytes per
    /// element. `QuantizedActs` grows its own buffers on first use, so this is a
    /// reservation, not an allocation: Q8_0/Q8_1/Q8_K take 1.1–2.4 bytes per element and
    /// f32 inputs 4, which it covers when a model's matrices take one activation format; a
    /// model mixing F16/F32 with quantized matrices can hold a few bytes per element more.
    pub act_q_bytes: usize,
    pub logits: usize,
}

impl ScratchLayout {
    pub fn new(cfg: &ModelConfig, n_batch: usize, n_outputs: usize) -> Self {
        let b = n_batch;
        let ffn = cfg.ffn_width();
        // `gather`: the width of rows gathered per expert or per head; none without either.
        let (k, v, attn, kv_row, q_latent, gather) = match &cfg.mla {
            None => {
                let gather = if cfg.moe.is_some() { cfg.n_embd } else { 0 };
                (cfg.kv_dim(), cfg.kv_dim(), cfg.q_dim(), 0, 0, gather)
            }
            Some(m) => (
                m.q_lora_rank.max(m.kv_lora_rank + m.qk_rope),
                (cfg.n_head * m.v_head).max(m.q_lora_rank),
                cfg.n_head * m.kv_lora_rank,
                m.row_width(),
                cfg.n_head * m.row_width(),
                cfg.n_embd.max(m.kv_lora_rank).max(m.qk_nope).max(m.v_head),
            ),
        };
        let (router, routes) = match &cfg.moe {
            Some(m) => (m.n_expert, m.n_expert_used),
            None => (0, 0),
        };
        // One token's experts run side by side, each in its own row of the FFN buffers.
        let ffn_rows = b.max(routes);
        let heads_in = cfg
            .mla
            .map_or(0, |m| cfg.n_head * m.kv_lora_rank.max(m.qk_nope));
        let widest_in = [cfg.n_embd, cfg.q_dim(), ffn, v, gather]
            .into_iter()
            .max()
            .unwrap_or(0);
        ScratchLayout {
            n_batch,
            n_outputs,
            x: b * cfg.n_embd,
            xn: b * cfg.n_embd,
            q: b * cfg.q_dim(),
            k: b * k,
            v: b * v,
            attn: b * attn,
            kv_row: b * kv_row,
            q_latent: b * q_latent,
            gate: ffn_rows * ffn,
            up: ffn_rows * ffn,
            ff: ffn_rows * ffn,
            out: b * cfg.n_embd,
            router: b * router,
            route_ids: b * routes,
            route_weights: b * routes,
            gathered_in: b * gather,
            gathered_out: ffn_rows * gather,
            // One token's experts each quantize their hidden row besides the batch's input,
            // and under MLA one token's heads each their own slice.
            act_q_bytes: ((b + routes) * widest_in + heads_in) * 4,
            logits: n_outputs * cfg.n_vocab,
        }
    }

    /// Where an [`Exchange::Route`](crate::backend::Exchange) buffer of `len` values is cut:
    /// after its rows' normalised inputs (`n_embd` each), then after their weights
    /// (`n_expert_used` each); the ids' bits follow.
    pub fn route_cuts(&self, len: usize) -> (usize, usize) {
        let (e, k) = (self.x / self.n_batch, self.route_ids / self.n_batch);
        let rows = len / (e + 2 * k);
        (rows * e, rows * k)
    }

    pub fn f32_elems(&self) -> usize {
        self.x
            + self.xn
            + self.q
            + self.k
            + self.v
            + self.attn
            + self.kv_row
            + self.q_latent
            + self.gate
            + self.up
            + self.ff
            + self.out
            + self.router
            + self.route_ids
            + self.route_weights
            + self.gathered_in
            + self.gathered_out
            + self.logits
    }

    pub fn bytes(&self) -> u64 {
        self.f32_elems() as u64 * 4 + self.act_q_bytes as u64
    }
}

/// Bytes of scratch one device needs to run blocks (and the output layer) on batches of up
/// to `n_batch` tokens, computing logits for `n_outputs` rows.
///
/// `n_ctx` is taken so callers size with the run's settings, but the scratch does not grow
/// with it today: attention keeps its own per-thread row of scores (threads × n_ctx f32,
/// transient), which is not part of this figure.
pub fn scratch_bytes(cfg: &ModelConfig, n_batch: usize, n_ctx: usize, n_outputs: usize) -> u64 {
    let _ = n_ctx;
    ScratchLayout::new(cfg, n_batch, n_outputs).bytes()
}
