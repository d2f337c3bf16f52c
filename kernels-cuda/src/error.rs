//! What can go wrong on the GPU side, as values: no driver, no device, a driver error, a
//! shape that does not fit a kernel.

use thiserror::Error;

use strata_kernels_cpu::GgmlType;

#[derive(Debug, Error)]
pub enum CudaError {
    /// No usable CUDA: the driver library is missing, no device is visible, or the crate was
    /// built without kernels. The text says which.
    #[error("no CUDA device: {0}")]
    Unavailable(String),
    #[error("CUDA driver error in {op}: {err}")]
    Driver {
        op: &'static str,
        err: cudarc::driver::DriverError,
    },
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },
    #[error("{op}: format {ty} is not supported")]
    Format { op: &'static str, ty: GgmlType },
}

impl CudaError {
    pub(crate) fn shape(op: &'static str, what: impl Into<String>) -> CudaError {
        CudaError::Shape {
            op,
            what: what.into(),
        }
    }
}

/// Attaches the operation's name to a driver error.
pub(crate) trait DriverContext<T> {
    fn during(self, op: &'static str) -> Result<T, CudaError>;
}

impl<T> DriverContext<T> for Result<T, cudarc::driver::DriverError> {
    fn during(self, op: &'static str) -> Result<T, CudaError> {
        self.map_err(|err| CudaError::Driver { op, err })
    }
}
