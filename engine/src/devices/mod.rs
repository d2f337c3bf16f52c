//! Which devices a run has and what each reports: the CPU (always), CUDA GPUs found by the
//! driver ([`CudaAccel`]), and CPU devices posing as GPUs ([`PseudoAccel`]) so that CI can
//! plan, load and split without one. The planner sees each as a [`Device`]; the backends
//! ([`crate::backend`]) are opened on them.

mod cuda;
mod posing;

pub use crate::ledger::DeviceId;
pub use cuda::CudaAccel;
pub use posing::PseudoAccel;

use crate::plan::Device;

/// An accelerator the loader can place work on: a real CUDA device, or a CPU device posing
/// as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accelerator {
    Posing(PseudoAccel),
    Cuda(CudaAccel),
}

impl Accelerator {
    pub fn name(&self) -> String {
        match self {
            Accelerator::Posing(p) => p.name.clone(),
            Accelerator::Cuda(c) => c.name(),
        }
    }

    /// What the loader lets the backends allocate on it.
    pub fn budget(&self) -> u64 {
        match self {
            Accelerator::Posing(p) => p.budget,
            Accelerator::Cuda(c) => c.free_bytes,
        }
    }

    /// The device as the planner sees it.
    pub fn plan_device(&self) -> Device {
        match self {
            Accelerator::Posing(p) => p.plan_device(),
            Accelerator::Cuda(c) => c.plan_device(),
        }
    }
}

impl From<PseudoAccel> for Accelerator {
    fn from(p: PseudoAccel) -> Accelerator {
        Accelerator::Posing(p)
    }
}

impl From<CudaAccel> for Accelerator {
    fn from(c: CudaAccel) -> Accelerator {
        Accelerator::Cuda(c)
    }
}
