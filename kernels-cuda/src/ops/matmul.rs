use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::GgmlType;

use super::{as_i32, grid_yz, need, weight_kernel};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "matmul";
/// Output tile of matmul.cu: 64 weight rows × 64 tokens (8 warps of mma.sync).
const TILE: usize = 64;

impl Gpu {
    /// Y[t][r] = Σ_c W[r][c]·X[t][c] for `ntok` tokens (prefill): W is `nrows × ncols` of
    /// `ty`, X and Y f32. On the tensor cores: weights (dequantized exactly) and activations
    /// are rounded to f16, products are exact and sums f32. Activations beyond f16's range
    /// (±65504) become infinite.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        let name = weight_kernel(OP, ty, w, ncols, nrows)?;
        need(OP, "x", x.len(), ncols * ntok)?;
        need(OP, "y", y.len(), nrows * ntok)?;
        let (nc, nr, nt) = (
            as_i32(OP, "ncols", ncols)?,
            as_i32(OP, "nrows", nrows)?,
            as_i32(OP, "ntok", ntok)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (
                nrows.div_ceil(TILE) as u32,
                grid_yz(OP, "ntok / 64", ntok.div_ceil(TILE))?,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("matmul", &name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w.slice())
            .arg(x.slice())
            .arg(y.slice_mut())
            .arg(&nc)
            .arg(&nr)
            .arg(&nt);
        // SAFETY: matches matmul.cu's (w, x, y, ncols, nrows, ntok); sizes checked above.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
