use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, need, q8_1_grid};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

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
        self.launch_norm(x, weight, out, None, nrows, eps)
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
        self.launch_norm(x, weight, out, Some(outq), nrows, eps)
    }

    /// rms_norm, or rms_norm_q8_1 when there is a q8_1 output: one CTA of 256 a row.
    fn launch_norm(
        &self,
        x: &DeviceBuffer<f32>,
        weight: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        outq: Option<&mut DeviceBuffer<u8>>,
        nrows: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let op = if outq.is_some() {
            "rms_norm_q8_1"
        } else {
            "rms_norm"
        };
        let ncols = weight.len();
        need(op, "x", x.len(), ncols * nrows)?;
        need(op, "out", out.len(), ncols * nrows)?;
        if let Some(q) = &outq {
            q8_1_grid(op, q, ncols, nrows)?;
        }
        let nc = as_i32(op, "ncols", ncols)?;
        let cfg = LaunchConfig {
            grid_dim: (as_i32(op, "nrows", nrows)?.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("norm", op)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice()).arg(weight.slice()).arg(out.slice_mut());
        if let Some(q) = outq {
            b.arg(q.slice_mut());
        }
        b.arg(&nc).arg(&eps);
        // SAFETY: matches norm.cu's rms_norm(x, w, y, ncols, eps) and rms_norm_q8_1(x, w, y,
        // yq, ncols, eps); sizes checked above.
        unsafe { b.launch(cfg) }.during(op)?;
        Ok(())
    }
}
