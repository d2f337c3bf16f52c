//! Backends: what computes on a device. One interface ([`Backend`]) over every kind — the
//! host CPU, a CPU device posing as a GPU, a CUDA GPU — with the same operations on each:
//! hold weights, allocate KV caches and scratch (each reserved on the [`Ledger`] first, so
//! that the bytes allocated are the bytes planned), take the residual stream in and give
//! it back, and run a piece of the forward pass on it. The runner and the loader above
//! never ask which kind they hold; adding a backend is one more `impl Backend` and one arm
//! in [`open`].
//!
//! The unit a backend holds and runs is a [`Unit`]: consecutive whole blocks, the output
//! layer, or one part of a block whose parts ([`Parts`]: attention, FFN, routed experts by
//! range) sit on different devices; what moves between those is an [`Exchange`].

pub mod cuda;
pub mod host;
mod interface;

pub use interface::{
    At, Backend, BackendError, Exchange, Holdings, OwnThreads, Parts, QueueMark, Segment, Source,
    Unit,
};

use crate::devices::Accelerator;
use crate::ledger::{DeviceId, Ledger};
use crate::model::Model;

/// The backend of device `id`: the host for the CPU, else the one `accel` calls for.
/// `model` is checked against what the backend can run.
pub fn open(
    id: DeviceId,
    accel: Option<&Accelerator>,
    model: &Model,
    ledger: &Ledger,
) -> Result<Box<dyn Backend>, BackendError> {
    Ok(match accel {
        None => Box::new(host::HostBackend::new(id, ledger, true)),
        Some(Accelerator::Posing(p)) => {
            let mut b = host::HostBackend::new(id, ledger, false);
            if let Some(t) = p.threads {
                b.own_threads(t, &p.name)?;
            }
            Box::new(b)
        }
        Some(Accelerator::Cuda(c)) => {
            if let Some(why) = cuda::CudaBackend::unsupported(&model.cfg) {
                return Err(BackendError::Unsupported(format!(
                    "layers on {}: {why}; run with -ngl 0",
                    c.name()
                )));
            }
            Box::new(cuda::CudaBackend::new(id, c.ordinal, ledger)?)
        }
    })
}
