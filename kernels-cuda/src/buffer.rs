//! [`DeviceBuffer`]: device memory that knows its length and size in bytes.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::device::Gpu;
use crate::error::{CudaError, DriverContext};

/// `len` elements of `T` in one device's memory (a whole allocation: the start is aligned
/// to at least 256 bytes, which the kernels' vector loads rely on).
///
/// A buffer belongs to the [`Gpu`] that made it: pass it only to that `Gpu`'s launchers and
/// copies, which all go to its one stream in order (cudarc's cross-stream event tracking
/// is off).
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

    /// Copies `src` into the buffer at element `offset`.
    pub fn write_at(&mut self, gpu: &Gpu, offset: usize, src: &[T]) -> Result<(), CudaError> {
        self.check_range("copy to device", offset, src.len())?;
        let mut view = self.slice.slice_mut(offset..offset + src.len());
        gpu.stream()
            .memcpy_htod(src, &mut view)
            .during("copy to device")
    }

    /// Sets the first `n` elements to zero (queued on the stream, as a kernel is).
    pub fn zero_prefix(&mut self, gpu: &Gpu, n: usize) -> Result<(), CudaError>
    where
        T: ValidAsZeroBits,
    {
        self.check_range("zeroing device memory", 0, n)?;
        let mut view = self.slice.slice_mut(0..n);
        gpu.stream()
            .memset_zeros(&mut view)
            .during("zeroing device memory")
    }

    /// Copies `dst.len()` elements from element `offset` into `dst`, and waits for them.
    pub fn read_at(&self, gpu: &Gpu, offset: usize, dst: &mut [T]) -> Result<(), CudaError> {
        self.check_range("copy to host", offset, dst.len())?;
        let view = self.slice.slice(offset..offset + dst.len());
        gpu.stream()
            .memcpy_dtoh(&view, dst)
            .during("copy to host")?;
        gpu.synchronize()
    }

    /// Copies `n` elements of `src` from `src_offset` into this buffer at `offset` (both on
    /// `gpu`).
    pub fn copy_within_device(
        &mut self,
        gpu: &Gpu,
        offset: usize,
        src: &DeviceBuffer<T>,
        src_offset: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "copy on device";
        src.check_range(OP, src_offset, n)?;
        self.check_range(OP, offset, n)?;
        let from = src.slice.slice(src_offset..src_offset + n);
        let mut to = self.slice.slice_mut(offset..offset + n);
        gpu.stream().memcpy_dtod(&from, &mut to).during(OP)
    }

    /// `n` elements at `src_offset` copied to `offset` within this buffer, the two ranges
    /// apart (a sequence's KV cache rows to another sequence's).
    pub fn copy_range(
        &mut self,
        gpu: &Gpu,
        offset: usize,
        src_offset: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "copy within a buffer";
        self.check_range(OP, src_offset, n)?;
        self.check_range(OP, offset, n)?;
        if offset < src_offset + n && src_offset < offset + n {
            return Err(CudaError::shape(
                OP,
                format!("{n} elements from {src_offset} to {offset} overlap"),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let s = gpu.stream();
        if src_offset < offset {
            let (lo, mut hi) = self.slice.split_at_mut(offset);
            let from = lo.slice(src_offset..src_offset + n);
            s.memcpy_dtod(&from, &mut hi.slice_mut(..n)).during(OP)
        } else {
            let (mut lo, hi) = self.slice.split_at_mut(src_offset);
            let from = hi.slice(..n);
            s.memcpy_dtod(&from, &mut lo.slice_mut(offset..offset + n))
                .during(OP)
        }
    }

    fn check_range(&self, op: &'static str, offset: usize, n: usize) -> Result<(), CudaError> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(CudaError::shape(
                op,
                format!("{n} elements at {offset} in a buffer of {}", self.len()),
            )),
        }
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
