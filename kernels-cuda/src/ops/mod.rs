//! Launchers: one per kernel family, as methods on [`Gpu`](crate::Gpu). Each checks shapes
//! and buffer sizes on the host (a bad shape is an error that names it, never an
//! out-of-bounds access on the device), then queues the kernel on the device's stream.

pub(crate) mod attention;
mod dequantize;
mod elementwise;
mod matmul;
pub(crate) mod matvec;
pub(crate) mod mla;
pub(crate) mod moe;
mod norm;
mod quantize;
pub(crate) mod rope;

pub use quantize::q8_1_bytes;
pub(crate) use quantize::q8_1_grid;

use cudarc::driver::LaunchConfig;

use crate::error::CudaError;
use crate::DeviceBuffer;

/// Where a batch's tokens sit in a KV cache that holds several sequences: token t at
/// position `pos[t]` of the sequence whose `n_ctx` rows start at row `base[t]` (both in
/// device memory, so that a captured step replays anywhere, and a batch may hold tokens of
/// several sequences).
#[derive(Clone, Copy)]
pub struct CacheRows<'a> {
    pub pos: &'a DeviceBuffer<i32>,
    pub base: &'a DeviceBuffer<i32>,
    pub n_ctx: usize,
}

impl CacheRows<'_> {
    /// Checks that the arrays cover `ntok` tokens and a sequence fits a cache of `rows`;
    /// (n_ctx, rows) as the kernels take them.
    pub(crate) fn check(
        &self,
        op: &'static str,
        ntok: usize,
        rows: usize,
    ) -> Result<(i32, i32), CudaError> {
        need(op, "pos", self.pos.len(), ntok)?;
        need(op, "base", self.base.len(), ntok)?;
        if self.n_ctx == 0 || self.n_ctx > rows {
            return Err(CudaError::shape(
                op,
                format!(
                    "sequences of {} positions in a cache of {rows} rows",
                    self.n_ctx
                ),
            ));
        }
        Ok((
            as_i32(op, "n_ctx", self.n_ctx)?,
            as_i32(op, "cache rows", rows)?,
        ))
    }
}
use strata_kernels_cpu::GgmlType;

/// The kernel-name suffix of a weight format (`q4_k`, `bf16`), or an error if the kernels
/// do not take it (activation-only formats).
pub(crate) fn kernel_suffix(op: &'static str, ty: GgmlType) -> Result<String, CudaError> {
    if !ty.is_weight() {
        return Err(CudaError::Format { op, ty });
    }
    Ok(ty.name().to_ascii_lowercase())
}

/// One thread per element, `threads` per CTA.
pub(crate) fn grid_1d(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(threads as usize).max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `v` as the `int` a kernel takes, or a shape error.
pub(crate) fn as_i32(op: &'static str, what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::shape(op, format!("{what} = {v} exceeds i32")))
}

/// A grid dimension y/z (at most 65535).
pub(crate) fn grid_yz(op: &'static str, what: &str, v: usize) -> Result<u32, CudaError> {
    if v == 0 || v > 65535 {
        return Err(CudaError::shape(
            op,
            format!("{what} = {v} must be in 1..=65535"),
        ));
    }
    Ok(v as u32)
}

/// Errors unless `len ≥ need`.
pub(crate) fn need(op: &'static str, what: &str, len: usize, need: usize) -> Result<(), CudaError> {
    if len < need {
        return Err(CudaError::shape(
            op,
            format!("{what} holds {len} elements, needs {need}"),
        ));
    }
    Ok(())
}

/// Bytes of `nrows` rows of `ncols` elements of `ty`, or an error if a row is not whole blocks.
pub(crate) fn weight_bytes(
    op: &'static str,
    ty: GgmlType,
    ncols: usize,
    nrows: usize,
) -> Result<usize, CudaError> {
    if ncols == 0 || !ncols.is_multiple_of(ty.block_size()) {
        return Err(CudaError::shape(
            op,
            format!(
                "{ty} rows of {ncols} columns are not whole blocks of {}",
                ty.block_size()
            ),
        ));
    }
    Ok(ncols / ty.block_size() * ty.type_size() * nrows)
}

/// The kernel `{op}_{format}` for weights of `ty`, after checking that `w` holds `nrows`
/// rows of `ncols` (whole blocks).
pub(crate) fn weight_kernel(
    op: &'static str,
    ty: GgmlType,
    w: &crate::DeviceBuffer<u8>,
    ncols: usize,
    nrows: usize,
) -> Result<String, CudaError> {
    let name = format!("{op}_{}", kernel_suffix(op, ty)?);
    need(
        op,
        "w (bytes)",
        w.len(),
        weight_bytes(op, ty, ncols, nrows)?,
    )?;
    Ok(name)
}
