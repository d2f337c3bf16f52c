use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, need};
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
}
