use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_1d, need};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

impl Gpu {
    /// a += b (equal lengths).
    pub fn add(&self, a: &mut DeviceBuffer<f32>, b: &DeviceBuffer<f32>) -> Result<(), CudaError> {
        const OP: &str = "add";
        if a.len() != b.len() {
            return Err(CudaError::shape(
                OP,
                format!("lengths differ: {} and {}", a.len(), b.len()),
            ));
        }
        let n = a.len() as i64;
        let cfg = grid_1d(a.len(), 256);
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(a.slice_mut()).arg(b.slice()).arg(&n);
        // SAFETY: matches add(a, b, n); lengths checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// out = silu(gate) · up (equal lengths).
    pub fn swiglu(
        &self,
        gate: &DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "swiglu";
        if gate.len() != up.len() || up.len() != out.len() {
            return Err(CudaError::shape(
                OP,
                format!(
                    "gate, up and out lengths differ: {}, {}, {}",
                    gate.len(),
                    up.len(),
                    out.len()
                ),
            ));
        }
        let n = gate.len() as i64;
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(gate.slice())
            .arg(up.slice())
            .arg(out.slice_mut())
            .arg(&n);
        // SAFETY: matches swiglu(gate, up, out, n); lengths checked above.
        unsafe { l.launch(grid_1d(gate.len(), 256)) }.during(OP)?;
        Ok(())
    }

    /// `n` f32 from `src` to f16 bits at `dst[offset..offset + n]` (e.g. a token's keys into
    /// an f16 KV cache at its position).
    pub fn convert_f32_to_f16(
        &self,
        src: &DeviceBuffer<f32>,
        dst: &mut DeviceBuffer<u16>,
        offset: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "convert_f32_to_f16";
        need(OP, "src", src.len(), n)?;
        need(OP, "dst", dst.len(), offset + n)?;
        let n64 = n as i64;
        let mut view = dst.slice_mut().slice_mut(offset..offset + n);
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(src.slice()).arg(&mut view).arg(&n64);
        // SAFETY: matches convert_f32_to_f16(src, dst, n); the view has exactly n elements.
        unsafe { l.launch(grid_1d(n, 256)) }.during(OP)?;
        Ok(())
    }

    /// Softmax of each of `nrows` rows of `ncols`, in place.
    pub fn softmax(
        &self,
        x: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "softmax";
        need(OP, "x", x.len(), ncols * nrows)?;
        let nc = as_i32(OP, "ncols", ncols)?;
        let cfg = LaunchConfig {
            grid_dim: (as_i32(OP, "nrows", nrows)?.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("softmax", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(x.slice_mut()).arg(&nc);
        // SAFETY: matches softmax(x, ncols); size checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
