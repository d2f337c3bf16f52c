//! The CUDA backend of an accelerator: a real GPU holds its blocks' weights, their f16 KV
//! caches and its own scratch in device memory, and runs its blocks (and the output layer,
//! if placed there) with `strata-kernels-cuda`. Activations cross to and from it only at
//! the runner's explicit copies, as with any device.
//!
//! Arithmetic differs from the CPU's in the order of f32 sums and in one pairing: the GPU
//! quantizes activations to q8_1 for every quantized weight format (ggml's CUDA choice),
//! where the CPU uses Q8_K for K-quants; for the legacy formats the activation bytes are the
//! CPU's. Batches of more than [`MATVEC_MAX_BATCH`] tokens (prefill) go through the tiled
//! f32 matmul instead, on unquantized activations.

mod forward;
mod weights;

pub use weights::{GpuBlock, GpuKv, GpuOutput, GpuScratch};

use std::collections::{BTreeMap, HashMap};

use strata_kernels_cuda::{CudaError, Gpu, GpuGraph, MATVEC_MAX_COLS, MAX_HEAD_DIM};

use crate::config::ModelConfig;

use crate::plan::{Device, DeviceKind};

/// Batches up to this many tokens run the matvec kernels once per token vector (sharing one
/// q8_1 quantization of the input); larger ones the tiled matmul.
pub const MATVEC_MAX_BATCH: usize = 8;

/// A CUDA device as the planner and the loader see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaAccel {
    pub ordinal: usize,
    /// The driver's name, e.g. "NVIDIA H100 80GB HBM3".
    pub model: String,
    /// Free memory when it was asked (the planner's budget for it).
    pub free_bytes: u64,
}

impl CudaAccel {
    /// Every visible CUDA device, or why there is none usable (no driver, no device, a build
    /// without kernels).
    pub fn discover() -> Result<Vec<CudaAccel>, CudaError> {
        if let Some(why) = strata_kernels_cuda::unavailable_reason() {
            return Err(CudaError::Unavailable(why));
        }
        Ok(strata_kernels_cuda::devices()?
            .into_iter()
            .map(|d| CudaAccel {
                ordinal: d.ordinal,
                model: d.name,
                free_bytes: d.free_bytes as u64,
            })
            .collect())
    }

    /// `CUDA0`, the name the plan and the ledger use.
    pub fn name(&self) -> String {
        format!("CUDA{}", self.ordinal)
    }

    pub fn plan_device(&self) -> Device {
        Device {
            name: self.name(),
            kind: DeviceKind::Gpu,
            free_bytes: self.free_bytes,
        }
    }
}

/// One GPU's share of a run: the weights of its blocks and of the output layer (if placed
/// there) and its scratch. Its blocks' KV caches are the runner's, one per block.
pub struct CudaDevice {
    pub gpu: Gpu,
    pub(crate) blocks: BTreeMap<usize, GpuBlock>,
    pub(crate) output: Option<GpuOutput>,
    pub(crate) scratch: Option<GpuScratch>,
    /// Per range of blocks, the one-token decode step as a graph: `None` once the range
    /// has run eagerly (kernels loaded), then the graph captured on the next step.
    pub(crate) graphs: HashMap<(usize, usize), Option<GpuGraph>>,
    /// Off with `STRATA_CUDA_GRAPHS=0`: every launch queued one by one.
    pub(crate) use_graphs: bool,
}

impl CudaDevice {
    pub fn new(ordinal: usize) -> Result<CudaDevice, CudaError> {
        let gpu = Gpu::new(ordinal)?;
        Ok(CudaDevice {
            gpu,
            blocks: BTreeMap::new(),
            output: None,
            scratch: None,
            graphs: HashMap::new(),
            use_graphs: std::env::var("STRATA_CUDA_GRAPHS").map_or(true, |v| v != "0"),
        })
    }

    /// Why the GPU kernels cannot run a model of `cfg`, if they cannot: said at load, not at
    /// the first token.
    pub fn unsupported(cfg: &ModelConfig) -> Option<String> {
        let widest = cfg.n_embd.max(cfg.q_dim()).max(cfg.n_ff);
        if cfg.head_dim > MAX_HEAD_DIM {
            Some(format!(
                "head_dim {} (the CUDA attention takes at most {MAX_HEAD_DIM})",
                cfg.head_dim
            ))
        } else if !cfg.head_dim.is_multiple_of(2) || !cfg.n_rot.is_multiple_of(2) {
            Some(format!(
                "head_dim {} and n_rot {} (the CUDA RoPE rotates pairs)",
                cfg.head_dim, cfg.n_rot
            ))
        } else if widest > MATVEC_MAX_COLS {
            Some(format!(
                "rows of {widest} values (the CUDA matvec takes at most {MATVEC_MAX_COLS})"
            ))
        } else {
            None
        }
    }

    /// The blocks whose weights it holds.
    pub fn blocks(&self) -> Vec<usize> {
        self.blocks.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

    fn smollm2_like() -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            n_layer: 30,
            n_embd: 576,
            n_ff: 1536,
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            n_rot: 64,
            rms_eps: 1e-5,
            rope_freq_base: 10000.0,
            rope_freq_scale: 1.0,
            n_ctx_train: 8192,
            n_vocab: 49152,
            tied_output: true,
            qkv_bias: false,
            qk_norm: false,
        }
    }

    #[test]
    fn models_the_kernels_cannot_run_are_named_at_load() {
        assert_eq!(CudaDevice::unsupported(&smollm2_like()), None);
        let wide_heads = ModelConfig {
            head_dim: 512,
            n_rot: 512,
            ..smollm2_like()
        };
        let e = CudaDevice::unsupported(&wide_heads).unwrap();
        assert!(e.contains("head_dim 512") && e.contains("256"), "{e}");
        let odd_rot = ModelConfig {
            n_rot: 33,
            ..smollm2_like()
        };
        assert!(CudaDevice::unsupported(&odd_rot)
            .unwrap()
            .contains("n_rot 33"));
        let huge_ff = ModelConfig {
            n_ff: 65536,
            ..smollm2_like()
        };
        let e = CudaDevice::unsupported(&huge_ff).unwrap();
        assert!(
            e.contains("65536") && e.contains(&MATVEC_MAX_COLS.to_string()),
            "{e}"
        );
    }
}
