use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::GgmlType;

use super::moe::ExpertStack;
use super::{as_i32, grid_yz, kernel_suffix, need, weight_kernel};
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

impl Gpu {
    /// The experts' products for a batch (prefill), grouped: `xg` (`nx × ncols`) and `yg`
    /// (`nx × nrows`) hold rows sorted by expert ([`moe_sort`](Gpu::moe_sort),
    /// [`moe_gather`](Gpu::moe_gather)), expert e's being rows `offsets[e] .. offsets[e + 1]`
    /// (`offsets`: `n_expert + 1`, in device memory), and each expert's rows are multiplied
    /// by its matrix of the stack `w` as [`matmul`](Gpu::matmul) does (same tiles, same
    /// rounding). `max_rows` is the most rows one expert can have (ntok where every token
    /// chooses an expert at most once, as moe_route's choices do): the grid covers that
    /// many, and an expert with more still has all its rows done. Offsets past `nx` are
    /// clamped to it in the kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_experts(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        stack: &ExpertStack,
        offsets: &DeviceBuffer<u32>,
        xg: &DeviceBuffer<f32>,
        yg: &mut DeviceBuffer<f32>,
        nx: usize,
        max_rows: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "matmul_experts";
        let name = format!("{OP}_{}", kernel_suffix(OP, ty)?);
        need(OP, "w (bytes)", w.len(), stack.bytes(OP, ty)?)?;
        need(OP, "offsets", offsets.len(), stack.n_expert + 1)?;
        need(OP, "xg", xg.len(), nx * stack.ncols)?;
        need(OP, "yg", yg.len(), nx * stack.nrows)?;
        let (nc, nr, n) = (
            as_i32(OP, "ncols", stack.ncols)?,
            as_i32(OP, "nrows", stack.nrows)?,
            as_i32(OP, "nx", nx)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (
                stack.nrows.div_ceil(TILE) as u32,
                grid_yz(OP, "max_rows / 64", max_rows.div_ceil(TILE))?,
                grid_yz(OP, "n_expert", stack.n_expert)?,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("matmul", &name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w.slice())
            .arg(offsets.slice())
            .arg(xg.slice())
            .arg(yg.slice_mut())
            .arg(&nc)
            .arg(&nr)
            .arg(&n);
        // SAFETY: matches matmul_experts_*(w, offsets, x, y, ncols, nrows, nx); sizes
        // checked above, offsets clamped to nx in the kernel.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
