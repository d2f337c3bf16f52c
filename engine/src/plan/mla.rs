//! Buffer sizes for DeepSeek-V2/V3/R1 (`deepseek2`): multi-head latent attention (MLA) and
//! mixture-of-experts blocks.
//!
//! Strata's runner does not run this architecture; the planner knows it so that the
//! motivating case (DeepSeek-R1 671B on 8×80 GB) can be planned on paper. The sizes follow
//! the layout of [`crate::buffers`] (one KV cache per block, one scratch per device cut
//! into per-activation pieces for `n_ubatch` rows), with MLA's shapes:
//!
//! - KV cache: per position, the compressed latent `c_kv` (`kv_lora_rank` values) and the
//!   shared rotary key `k_pe` (`qk_rope` values) — what llama.cpp caches for MLA since it
//!   stores the latent instead of per-head K and V (V is read from the latent's first
//!   `kv_lora_rank` values, so it needs no storage of its own).
//! - Scratch: attention runs in the latent space (q_nope absorbed through `attn_kv_b`), so
//!   per head q is `kv_lora_rank + qk_rope` wide and the attention output `kv_lora_rank`
//!   wide before it is expanded to `v_head_dim`. The FFN is the widest of the dense FFN
//!   and the routed experts in use plus the shared ones.

use super::error::PlanError;
use super::header::HeaderSource;
use super::settings::RunSettings;
use crate::buffers::kv_elem_bytes;
use crate::config::{check_block_count, ModelSource};

/// The hyperparameters of a `deepseek2` model that size its buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Per-head width of q and k: `qk_nope + qk_rope` (192 for DeepSeek-V3/R1).
    pub key_length: usize,
    /// Per-head width of v (128).
    pub value_length: usize,
    /// `qk_rope_head_dim` (64): the rotary part of q and k.
    pub qk_rope: usize,
    /// 0 when q is projected directly (DeepSeek-V2-Lite).
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub n_ff: usize,
    pub n_ff_exp: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_expert_shared: usize,
    pub n_vocab: usize,
}

impl MlaConfig {
    pub(crate) fn from_header(src: &HeaderSource) -> Result<MlaConfig, PlanError> {
        let key = |s: &str| format!("deepseek2.{s}");
        let need = |s: &str| src.uint(&key(s)).ok_or_else(|| missing(&key(s)));
        let n_head = need("attention.head_count")?;
        let n_vocab = src
            .tensor_dims("token_embd.weight")
            .and_then(|d| d.get(1).copied())
            .ok_or_else(|| PlanError::Model {
                why: "tensor 'token_embd.weight' is missing".into(),
            })? as usize;
        let n_layer = need("block_count")?;
        check_block_count(&key("block_count"), n_layer, src.blocks_present())?;
        Ok(MlaConfig {
            n_layer,
            n_embd: need("embedding_length")?,
            n_head,
            key_length: need("attention.key_length")?,
            value_length: need("attention.value_length")?,
            qk_rope: need("rope.dimension_count")?,
            q_lora_rank: src.uint(&key("attention.q_lora_rank")).unwrap_or(0),
            kv_lora_rank: need("attention.kv_lora_rank")?,
            n_ff: need("feed_forward_length")?,
            n_ff_exp: need("expert_feed_forward_length")?,
            n_expert: need("expert_count")?,
            n_expert_used: need("expert_used_count")?,
            n_expert_shared: src.uint(&key("expert_shared_count")).unwrap_or(0),
            n_vocab,
        })
    }

    /// Values one position stores in one block's cache: the latent and the rotary key.
    pub fn kv_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope
    }

    /// Bytes of one block's KV cache.
    pub fn kv_cache_bytes(&self, s: &RunSettings) -> Result<u64, PlanError> {
        let elem = kv_elem_bytes(s.kv_type).ok_or_else(|| PlanError::BadSettings {
            why: format!("KV cache type {} (only F32 and F16)", s.kv_type),
        })?;
        Ok((s.kv_cells() * self.kv_width()) as u64 * elem)
    }

    /// Bytes of one device's scratch, in f32 except the quantized activations.
    pub fn scratch_bytes(&self, s: &RunSettings) -> u64 {
        let b = s.n_ubatch;
        let ffn = self
            .n_ff
            .max((self.n_expert_used + self.n_expert_shared) * self.n_ff_exp);
        let q_full = self.n_head * self.key_length;
        let v_full = self.n_head * self.value_length;
        let widest_in = [
            self.n_embd,
            self.q_lora_rank,
            self.kv_lora_rank,
            v_full,
            ffn,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let f32_elems = 3 * b * self.n_embd         // residual, normed input, sub-layer out
            + b * self.q_lora_rank                  // q_a
            + b * q_full                            // q (nope + rope per head)
            + b * self.kv_width()                   // kv_a: latent + rotary key
            + b * self.n_head * self.kv_width()     // q absorbed into the latent space
            + b * self.n_head * self.kv_lora_rank   // attention output in the latent space
            + b * v_full                            // attention output expanded to v
            + self.n_head * s.kv_cells()            // one row of scores per head
            + b * self.n_expert                     // router logits
            + 2 * b * ffn                           // gate, up
            + s.n_outputs * self.n_vocab; // logits
        f32_elems as u64 * 4 + (b * widest_in * 4) as u64
    }
}

fn missing(key: &str) -> PlanError {
    PlanError::Model {
        why: format!("metadata key '{key}' is missing"),
    }
}
