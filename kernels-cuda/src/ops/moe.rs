//! Mixture-of-experts: the router (`moe_route`), and for a batch the sort of its slots by
//! expert (`moe_sort`), the gather of their rows (`moe_gather`) and the weighted sum back
//! (`moe_weighted_sum`); the experts' products are [`Gpu::matvec_experts`] (decode) and
//! [`Gpu::matmul_experts`] (prefill). Kernels in `kernels/moe.cu`.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::ops::{Gating, Router};
use strata_kernels_cpu::GgmlType;

use super::{as_i32, need, weight_bytes};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

/// The most experts [`Gpu::moe_route`] and [`Gpu::moe_sort`] take (moe.cu: 8 a lane of one
/// warp; the sort's buckets are its threads).
pub const MOE_MAX_EXPERTS: usize = 256;
/// The most experts a token chooses in [`Gpu::moe_route`] (moe.cu: lane j keeps choice j).
pub const MOE_MAX_USED: usize = 32;
/// Threads a CTA of moe_gather and moe_weighted_sum (one CTA a row; any multiple of 32).
const ROW_THREADS: u32 = 128;
/// moe.cu's SORT_THREADS.
const SORT_THREADS: u32 = 256;

/// A stack of expert matrices in one buffer: `n_expert` matrices of `nrows × ncols`, each
/// one contiguous run of bytes (a GGUF expert tensor, `ffn_{gate,up,down}_exps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertStack {
    pub n_expert: usize,
    pub nrows: usize,
    pub ncols: usize,
}

impl ExpertStack {
    /// The stack's bytes in format `ty`, or an error if a row is not whole blocks, there are
    /// no experts, or the size overflows.
    pub(crate) fn bytes(&self, op: &'static str, ty: GgmlType) -> Result<usize, CudaError> {
        if self.n_expert == 0 {
            return Err(CudaError::shape(op, "n_expert = 0: no experts"));
        }
        weight_bytes(op, ty, self.ncols, self.nrows)?
            .checked_mul(self.n_expert)
            .ok_or_else(|| CudaError::shape(op, format!("{self:?} overflows usize")))
    }
}

/// The slots of an expert product and the vectors they read: `n_slot` slots (ntok·k, a
/// token's k choices in order), slot s reading vector s / `slots_per_x` of x (k for the
/// gate and up projections, whose input is one row a token; 1 for the down projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertSlots {
    pub n_slot: usize,
    pub slots_per_x: usize,
}

impl ExpertSlots {
    /// Vectors of x the slots read.
    pub(crate) fn n_x(&self) -> usize {
        self.n_slot.div_ceil(self.slots_per_x.max(1))
    }
}

/// One CTA of `threads` per item: `n` (1 ..= i32::MAX) CTAs along x.
pub(super) fn row_grid(
    op: &'static str,
    what: &str,
    n: usize,
    threads: u32,
) -> Result<LaunchConfig, CudaError> {
    if n == 0 {
        return Err(CudaError::shape(op, format!("{what} = 0: nothing to do")));
    }
    Ok(LaunchConfig {
        grid_dim: (as_i32(op, what, n)? as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// A null pointer argument: the kernels read an optional buffer only where it is given.
const NULL: u64 = 0;

impl Gpu {
    /// Each of `ntok` tokens' router `logits` (`ntok × n_expert`) → its `r.n_used` experts
    /// (`ids`, in order of choice) and their weights (`weights`), both `ntok × n_used`, as
    /// kernels-cpu's [`route`](strata_kernels_cpu::ops::route) chooses them: softmax or
    /// sigmoid, the selection `bias` (`n_expert`) if any, expert groups, top-k with ties to
    /// the lower index, weights normalised (sum clamped below at 2⁻¹⁴) and scaled. Unlike
    /// the CPU's, `logits` is left as it was. At most [`MOE_MAX_EXPERTS`] experts and
    /// [`MOE_MAX_USED`] choices.
    pub fn moe_route(
        &self,
        logits: &DeviceBuffer<f32>,
        bias: Option<&DeviceBuffer<f32>>,
        r: &Router,
        ntok: usize,
        ids: &mut DeviceBuffer<u32>,
        weights: &mut DeviceBuffer<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "moe_route";
        let (n, k) = (r.n_expert, r.n_used);
        if n == 0 || n > MOE_MAX_EXPERTS {
            return Err(CudaError::shape(
                OP,
                format!("n_expert = {n} not in 1..={MOE_MAX_EXPERTS}"),
            ));
        }
        if k == 0 || k > n.min(MOE_MAX_USED) {
            return Err(CudaError::shape(
                OP,
                format!("n_used = {k} not in 1..={}", n.min(MOE_MAX_USED)),
            ));
        }
        let (n_group, group_used) = r.groups.unwrap_or((0, 0));
        if r.groups.is_some()
            && !(n_group > 0
                && n.is_multiple_of(n_group)
                && group_used > 0
                && group_used <= n_group
                && group_used * (n / n_group) >= k)
        {
            return Err(CudaError::shape(
                OP,
                format!("{group_used} of {n_group} groups of {n} experts cannot hold {k} choices"),
            ));
        }
        need(OP, "logits", logits.len(), ntok * n)?;
        if let Some(b) = bias {
            need(OP, "bias", b.len(), n)?;
        }
        need(OP, "ids", ids.len(), ntok * k)?;
        need(OP, "weights", weights.len(), ntok * k)?;
        let cfg = row_grid(OP, "ntok", ntok, 32)?;
        let (ni, ki) = (n as i32, k as i32);
        let (gi, gu) = (n_group as i32, group_used as i32);
        let sigmoid = i32::from(r.gating == Gating::Sigmoid);
        let norm = i32::from(r.norm);
        let f = self.function("moe", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(logits.slice());
        match bias {
            Some(b) => l.arg(b.slice()),
            None => l.arg(&NULL),
        };
        l.arg(ids.slice_mut())
            .arg(weights.slice_mut())
            .arg(&ni)
            .arg(&ki)
            .arg(&sigmoid)
            .arg(&norm)
            .arg(&r.scale)
            .arg(&gi)
            .arg(&gu);
        // SAFETY: matches moe_route(logits, bias, ids, weights, n_expert, n_used, sigmoid,
        // norm, scale, n_group, group_used); sizes checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// A stable counting sort of `n` slots by their expert `ids` (`n_expert` ≤
    /// [`MOE_MAX_EXPERTS`]), for prefill: `offsets` (`n_expert + 1`) gets each expert's
    /// first sorted row (expert e's rows are `offsets[e] .. offsets[e + 1]`; the last entry
    /// counts the slots with a valid id, the others are sorted after every expert's run),
    /// `perm` (`n`) the slot of each sorted row, `inv` (`n`) the sorted row of each slot.
    /// Slots of one expert keep their order. One CTA.
    pub fn moe_sort(
        &self,
        ids: &DeviceBuffer<u32>,
        n: usize,
        n_expert: usize,
        offsets: &mut DeviceBuffer<u32>,
        perm: &mut DeviceBuffer<u32>,
        inv: &mut DeviceBuffer<u32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "moe_sort";
        if n_expert == 0 || n_expert > MOE_MAX_EXPERTS {
            return Err(CudaError::shape(
                OP,
                format!("n_expert = {n_expert} not in 1..={MOE_MAX_EXPERTS}"),
            ));
        }
        need(OP, "ids", ids.len(), n)?;
        need(OP, "offsets", offsets.len(), n_expert + 1)?;
        need(OP, "perm", perm.len(), n)?;
        need(OP, "inv", inv.len(), n)?;
        let (ni, ne) = (as_i32(OP, "n", n)?, n_expert as i32);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (SORT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("moe", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(ids.slice())
            .arg(&ni)
            .arg(&ne)
            .arg(offsets.slice_mut())
            .arg(perm.slice_mut())
            .arg(inv.slice_mut());
        // SAFETY: matches moe_sort(ids, n, n_expert, offsets, perm, inv); sizes checked.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// `xg[p] = x[perm[p] / rows_per_x]` for the `n` sorted rows (`ncols` each): the input
    /// rows of a batch's slots in expert order, for [`Gpu::matmul_experts`]. `rows_per_x` is
    /// k where `x` holds a row per token, 1 where it holds one per slot. A `perm` entry past
    /// `x`'s rows gives a NaN row.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_gather(
        &self,
        x: &DeviceBuffer<f32>,
        perm: &DeviceBuffer<u32>,
        xg: &mut DeviceBuffer<f32>,
        ncols: usize,
        n: usize,
        rows_per_x: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "moe_gather";
        if ncols == 0 || rows_per_x == 0 {
            return Err(CudaError::shape(
                OP,
                format!("ncols = {ncols} and rows_per_x = {rows_per_x} must be at least 1"),
            ));
        }
        need(OP, "perm", perm.len(), n)?;
        need(OP, "xg", xg.len(), n * ncols)?;
        let cfg = row_grid(OP, "n", n, ROW_THREADS)?;
        let (nc, nx, rpx) = (
            as_i32(OP, "ncols", ncols)?,
            as_i32(OP, "rows of x", x.len() / ncols)?,
            as_i32(OP, "rows_per_x", rows_per_x)?,
        );
        let f = self.function("moe", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(x.slice())
            .arg(perm.slice())
            .arg(xg.slice_mut())
            .arg(&nc)
            .arg(&nx)
            .arg(&rpx);
        // SAFETY: matches moe_gather(x, perm, xg, ncols, nx, rows_per_x); sizes checked, the
        // rows perm names checked against nx in the kernel.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// Each of `ntok` tokens' output row (`ncols`): `out[t] = Σ_j weights[t·k + j] ·
    /// y[row(t·k + j)]`, j in order, where `row` is `rows` (prefill: [`moe_sort`]'s `inv`,
    /// y in expert order) or, without it, the slot itself (decode: y in slot order). A row
    /// past `y` gives NaN.
    ///
    /// [`moe_sort`]: Gpu::moe_sort
    #[allow(clippy::too_many_arguments)]
    pub fn moe_weighted_sum(
        &self,
        y: &DeviceBuffer<f32>,
        rows: Option<&DeviceBuffer<u32>>,
        weights: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        ncols: usize,
        k: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "moe_weighted_sum";
        if ncols == 0 || k == 0 {
            return Err(CudaError::shape(
                OP,
                format!("ncols = {ncols} and k = {k} must be at least 1"),
            ));
        }
        match rows {
            Some(r) => need(OP, "rows", r.len(), ntok * k)?,
            None => need(OP, "y", y.len(), ntok * k * ncols)?,
        }
        need(OP, "weights", weights.len(), ntok * k)?;
        need(OP, "out", out.len(), ntok * ncols)?;
        let cfg = row_grid(OP, "ntok", ntok, ROW_THREADS)?;
        let (nc, ki, ny) = (
            as_i32(OP, "ncols", ncols)?,
            as_i32(OP, "k", k)?,
            as_i32(OP, "rows of y", y.len() / ncols)?,
        );
        let f = self.function("moe", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(y.slice());
        match rows {
            Some(r) => l.arg(r.slice()),
            None => l.arg(&NULL),
        };
        l.arg(weights.slice())
            .arg(out.slice_mut())
            .arg(&nc)
            .arg(&ki)
            .arg(&ny);
        // SAFETY: matches moe_weighted_sum(y, rows, weights, out, ncols, k, ny); sizes
        // checked, the rows checked against ny in the kernel.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
