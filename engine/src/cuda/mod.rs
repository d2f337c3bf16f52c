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

use strata_kernels_cuda::{CudaError, Gpu, GpuGraph};

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
        Ok(CudaDevice {
            gpu: Gpu::new(ordinal)?,
            blocks: BTreeMap::new(),
            output: None,
            scratch: None,
            graphs: HashMap::new(),
            use_graphs: std::env::var("STRATA_CUDA_GRAPHS").map_or(true, |v| v != "0"),
        })
    }

    /// The blocks whose weights it holds.
    pub fn blocks(&self) -> Vec<usize> {
        self.blocks.keys().copied().collect()
    }
}
