use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::GgmlType;

use super::{as_i32, grid_yz, kernel_suffix, need, q8_1_bytes, weight_bytes};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "matvec";
const THREADS: u32 = 128;

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

impl Gpu {
    /// y[v][r] = Σ_c W[r][c]·x[v][c] for `nvec` vectors: W is `nrows × ncols` of `ty`.
    ///
    /// Quantized weights take the activations as q8_1 (ggml's CUDA pairing for every quant
    /// format): `x` is quantized into `xq_scratch` (at least [`q8_1_bytes`]`(ncols, nvec)`
    /// bytes) first. F32/F16/BF16 weights read `x` directly and leave `xq_scratch` alone.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        x: &DeviceBuffer<f32>,
        xq_scratch: &mut DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        nvec: usize,
    ) -> Result<(), CudaError> {
        kernel_suffix(OP, ty)?;
        if is_float(ty) {
            return self.matvec_float(ty, w, x, y, ncols, nrows, nvec);
        }
        self.quantize_q8_1(x, xq_scratch, ncols, nvec)?;
        self.matvec_q8_1(ty, w, xq_scratch, y, ncols, nrows, nvec)
    }

    /// The quantized-weight kernel on activations already in q8_1 (`xq`).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_q8_1(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        xq: &DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        nvec: usize,
    ) -> Result<(), CudaError> {
        if is_float(ty) {
            return Err(CudaError::Format {
                op: "matvec_q8_1 (float weights take f32 activations)",
                ty,
            });
        }
        let name = format!("matvec_{}", kernel_suffix(OP, ty)?);
        need(
            OP,
            "w (bytes)",
            w.len(),
            weight_bytes(OP, ty, ncols, nrows)?,
        )?;
        need(OP, "xq (bytes)", xq.len(), q8_1_bytes(ncols, nvec))?;
        need(OP, "y", y.len(), nrows * nvec)?;
        self.launch_matvec(&name, w.slice(), xq.slice(), y, ncols, nrows, nvec)
    }

    #[allow(clippy::too_many_arguments)]
    fn matvec_float(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        nvec: usize,
    ) -> Result<(), CudaError> {
        if !ncols.is_multiple_of(4) {
            // Each thread reads 4 weights with one vector load.
            return Err(CudaError::shape(
                OP,
                format!("{ty} ncols = {ncols} is not a multiple of 4"),
            ));
        }
        let name = format!("matvec_{}", kernel_suffix(OP, ty)?);
        need(
            OP,
            "w (bytes)",
            w.len(),
            weight_bytes(OP, ty, ncols, nrows)?,
        )?;
        need(OP, "x", x.len(), ncols * nvec)?;
        need(OP, "y", y.len(), nrows * nvec)?;
        self.launch_matvec(&name, w.slice(), x.slice(), y, ncols, nrows, nvec)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_matvec<X>(
        &self,
        name: &str,
        w: &cudarc::driver::CudaSlice<u8>,
        x: &cudarc::driver::CudaSlice<X>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        nvec: usize,
    ) -> Result<(), CudaError> {
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows)?);
        let cfg = LaunchConfig {
            grid_dim: (nr.max(1) as u32, grid_yz(OP, "nvec", nvec)?, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("matvec", name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w).arg(x).arg(y.slice_mut()).arg(&nc).arg(&nr);
        // SAFETY: matvec.cu's kernels all take (w, x, y, ncols, nrows); sizes checked by callers.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
