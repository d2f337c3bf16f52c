use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_yz, need};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

/// Bytes of q8_1 activations for `nrows` rows of `ncols` values (36 bytes per 32 values).
pub fn q8_1_bytes(ncols: usize, nrows: usize) -> usize {
    ncols / 32 * 36 * nrows
}

const OP: &str = "quantize_q8_1";

impl Gpu {
    /// Quantizes `nrows` rows of `ncols` f32 (`ncols` a multiple of 32) to q8_1 blocks in `y`
    /// (at least [`q8_1_bytes`] bytes).
    pub fn quantize_q8_1(
        &self,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<u8>,
        ncols: usize,
        nrows: usize,
    ) -> Result<(), CudaError> {
        need(OP, "x", x.len(), ncols * nrows)?;
        let cfg = q8_1_grid(OP, y, ncols, nrows)?;
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows)?);
        let f = self.function("quantize", OP)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice()).arg(y.slice_mut()).arg(&nc).arg(&nr);
        // SAFETY: the arguments match quantize.cu's signature; sizes were checked above.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}

/// Checks a q8_1 output (`ncols` a multiple of 32, `y` large enough) and returns the grid
/// of a one-warp-per-block kernel over it: 4 warps a CTA, one row per grid row.
pub(crate) fn q8_1_grid(
    op: &'static str,
    y: &DeviceBuffer<u8>,
    ncols: usize,
    nrows: usize,
) -> Result<LaunchConfig, CudaError> {
    if ncols == 0 || !ncols.is_multiple_of(32) {
        return Err(CudaError::shape(
            op,
            format!("ncols = {ncols} is not a multiple of 32"),
        ));
    }
    need(op, "q8_1 output (bytes)", y.len(), q8_1_bytes(ncols, nrows))?;
    let blocks_per_cta = 4; // 128 threads = 4 warps, one 32-value block each
    Ok(LaunchConfig {
        grid_dim: (
            (ncols / 32).div_ceil(blocks_per_cta) as u32,
            grid_yz(op, "nrows", nrows)?,
            1,
        ),
        block_dim: (32 * blocks_per_cta as u32, 1, 1),
        shared_mem_bytes: 0,
    })
}
