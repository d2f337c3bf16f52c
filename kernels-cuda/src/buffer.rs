//! [`DeviceBuffer`]: device memory that knows its length and size in bytes.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::device::Gpu;
use crate::error::{CudaError, DriverContext};

/// `len` elements of `T` in one device's memory (a whole allocation: the start is aligned
/// to at least 256 bytes, which the kernels' vector loads rely on).
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    slice: CudaSlice<T>,
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.slice.num_bytes()
    }

    pub fn slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    pub fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }

    /// Copies the buffer to the host (waits for the stream).
    pub fn to_host(&self, gpu: &Gpu) -> Result<Vec<T>, CudaError> {
        gpu.stream().clone_dtoh(&self.slice).during("copy to host")
    }

    /// Overwrites the buffer with `src` (same length).
    pub fn copy_from_host(&mut self, gpu: &Gpu, src: &[T]) -> Result<(), CudaError> {
        if src.len() != self.len() {
            return Err(CudaError::shape(
                "copy to device",
                format!(
                    "{} host elements into a buffer of {}",
                    src.len(),
                    self.len()
                ),
            ));
        }
        gpu.stream()
            .memcpy_htod(src, &mut self.slice)
            .during("copy to device")
    }
}

impl Gpu {
    /// A new buffer holding a copy of `src`.
    pub fn upload<T: DeviceRepr>(&self, src: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        let slice = self.stream().clone_htod(src).during("copy to device")?;
        Ok(DeviceBuffer { slice })
    }

    /// A new buffer of `len` zeroed elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>, CudaError> {
        let slice = self
            .stream()
            .alloc_zeros(len)
            .during("allocating device memory")?;
        Ok(DeviceBuffer { slice })
    }
}
