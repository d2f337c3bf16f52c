use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, need, q8_1_grid};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "rms_norm";

impl Gpu {
    /// out[r] = x[r] / √(mean(x[r]²) + eps) · weight for `nrows` rows of `weight.len()`.
    pub fn rms_norm(
        &self,
        x: &DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        nrows: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let ncols = weight.len();
        need(OP, "x", x.len(), ncols * nrows)?;
        need(OP, "out", out.len(), ncols * nrows)?;
        let nc = as_i32(OP, "ncols", ncols)?;
        let cfg = LaunchConfig {
            grid_dim: (as_i32(OP, "nrows", nrows)?.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("norm", OP)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice())
            .arg(weight.slice())
            .arg(out.slice_mut())
            .arg(&nc)
            .arg(&eps);
        // SAFETY: matches norm.cu's (x, w, y, ncols, eps); sizes checked above.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// [`rms_norm`](Gpu::rms_norm) and the q8_1 quantization of its output (`outq`,
    /// [`q8_1_bytes`](crate::q8_1_bytes) bytes; `weight.len()` a multiple of 32) in one
    /// launch: both bit for bit what the two separate kernels give.
    pub fn rms_norm_q8_1(
        &self,
        x: &DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        outq: &mut DeviceBuffer<u8>,
        nrows: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        const OP: &str = "rms_norm_q8_1";
        let ncols = weight.len();
        need(OP, "x", x.len(), ncols * nrows)?;
        need(OP, "out", out.len(), ncols * nrows)?;
        q8_1_grid(OP, outq, ncols, nrows)?;
        let nc = as_i32(OP, "ncols", ncols)?;
        let cfg = LaunchConfig {
            grid_dim: (as_i32(OP, "nrows", nrows)?.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("norm", OP)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice())
            .arg(weight.slice())
            .arg(out.slice_mut())
            .arg(outq.slice_mut())
            .arg(&nc)
            .arg(&eps);
        // SAFETY: matches norm.cu's rms_norm_q8_1(x, w, y, yq, ncols, eps); sizes checked.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
