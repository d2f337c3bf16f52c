//! The sizes of every buffer the runner allocates besides the weights: the KV cache of each
//! block and the scratch (activations) of each device.
//!
//! The planner costs a device with these same functions, and the runner allocates exactly
//! what they return (a test checks it), so the plan and the allocation cannot drift apart.

use strata_kernels_cpu::ops::{KvCache, KvType};
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

/// Bytes of one block's KV cache (K and V) for `n_ctx` positions stored as `kv_type`:
/// exactly what the runner's [`KvCache::new`] allocates for that block.
/// Panics if `kv_type` is not F32 or F16 (check with [`kv_elem_bytes`] first).
pub fn kv_cache_bytes(cfg: &ModelConfig, n_ctx: usize, kv_type: GgmlType) -> u64 {
    let t = kv_type_of(kv_type).expect("KV cache type must be F32 or F16");
    KvCache::bytes(t, n_ctx, cfg.n_head_kv, cfg.head_dim) as u64
}

/// How the runner's per-device scratch is cut up, in f32 elements (except `act_q`, bytes).
/// Built by [`ScratchLayout::new`]; [`ScratchLayout::bytes`] is what the device holds.
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
    pub q: usize,
    pub k: usize,
    pub v: usize,
    /// Attention output (all heads), `n_batch × q_dim`.
    pub attn: usize,
    pub gate: usize,
    pub up: usize,
    /// SwiGLU output, `n_batch × n_ff`.
    pub ff: usize,
    /// Sub-layer output before it is added to the residual, `n_batch × n_embd`.
    pub out: usize,
    /// Activations quantized for the dot products: the widest input (`max(n_embd, q_dim,
    /// n_ff)`) at 4 bytes per element. `QuantizedActs` grows its own buffers on first use,
    /// so this is a reservation, not an allocation: Q8_0/Q8_1/Q8_K take 1.1–2.4 bytes per
    /// element and f32 inputs 4, which it covers when a model's matrices take one
    /// activation format; a model mixing F16/F32 with quantized matrices can hold a few
    /// bytes per element more.
    pub act_q_bytes: usize,
    pub logits: usize,
}

impl ScratchLayout {
    pub fn new(cfg: &ModelConfig, n_batch: usize, n_outputs: usize) -> Self {
        let widest_in = cfg.n_embd.max(cfg.q_dim()).max(cfg.n_ff);
        ScratchLayout {
            n_batch,
            n_outputs,
            x: n_batch * cfg.n_embd,
            xn: n_batch * cfg.n_embd,
            q: n_batch * cfg.q_dim(),
            k: n_batch * cfg.kv_dim(),
            v: n_batch * cfg.kv_dim(),
            attn: n_batch * cfg.q_dim(),
            gate: n_batch * cfg.n_ff,
            up: n_batch * cfg.n_ff,
            ff: n_batch * cfg.n_ff,
            out: n_batch * cfg.n_embd,
            act_q_bytes: n_batch * widest_in * 4,
            logits: n_outputs * cfg.n_vocab,
        }
    }

    pub fn f32_elems(&self) -> usize {
        self.x
            + self.xn
            + self.q
            + self.k
            + self.v
            + self.attn
            + self.gate
            + self.up
            + self.ff
            + self.out
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
