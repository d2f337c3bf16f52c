//! CUDA GPUs as the driver reports them.

use strata_kernels_cuda::CudaError;

use crate::plan::{Device, DeviceKind};

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

    /// Whether the driver shows a GPU that [`CudaAccel::discover`] cannot offer (a build
    /// without kernels, a failing driver): a GPU a user would expect to be used.
    pub fn present_but_unusable() -> bool {
        strata_kernels_cuda::device_count().is_ok_and(|n| n > 0)
            && strata_kernels_cuda::unavailable_reason().is_some()
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
