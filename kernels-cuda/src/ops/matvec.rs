use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::GgmlType;

use super::moe::{ExpertSlots, ExpertStack};
use super::{as_i32, grid_yz, kernel_suffix, need, q8_1_bytes, weight_kernel};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "matvec";

/// The launch geometry of matvec.cu's quantized kernels: kernels/matvec_lane.cuh's MV_WARPS,
/// MV_RPW_LEGACY and MV_RPW_K. The crate compiles and launches one,
/// [`MatvecShape::DEFAULT`]; dev/cuda compiles matvec.cu in others to time them (launching
/// them with [`matvec_config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatvecShape {
    /// Warps per CTA.
    pub warps: u32,
    /// Rows per warp, for the 32-weight legacy blocks and for the K-quants.
    pub rows_per_warp_legacy: u32,
    pub rows_per_warp_k: u32,
}

impl MatvecShape {
    /// The shape of the crate's `matvec` module (matvec_lane.cuh's defaults).
    pub const DEFAULT: MatvecShape = MatvecShape {
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
    };

    /// (threads, rows) per CTA of the quantized kernels of weights `ty`.
    fn cta(&self, ty: GgmlType) -> (u32, usize) {
        let per_warp = if ty.block_size() == 32 {
            self.rows_per_warp_legacy
        } else {
            self.rows_per_warp_k
        };
        (32 * self.warps, (per_warp * self.warps) as usize)
    }
}

/// matvec_body.cuh's MV_FLOAT_THREADS: one CTA of this many threads per row of float weights.
const FLOAT_THREADS: u32 = 128;
/// Shared memory the quantized kernels take for one vector: one 48-byte xblock (formats.cuh)
/// per 32 columns. A CTA may use 48 KiB without opting in: 32 768 columns (Llama-70B's
/// 28 672 fit).
const MAX_X_SHARED_BYTES: usize = 48 << 10;
const X_SHARED_BYTES_PER_BLOCK: usize = 48;
/// The widest row (columns) the quantized matvec kernels take: the q8_1 vector and its sums
/// must fit [`MAX_X_SHARED_BYTES`].
pub const MATVEC_MAX_COLS: usize = MAX_X_SHARED_BYTES / X_SHARED_BYTES_PER_BLOCK * 32;

fn is_float(ty: GgmlType) -> bool {
    ty.is_float()
}

/// The kernel name and launch configuration of a matvec of weights `ty` in `shape`, after
/// checking the operands: `w` holds `nrows × ncols` of `ty`, `x_len` is x's length (f32
/// elements for float weights, q8_1 bytes for quantized ones), `y_len` is y's; CTAs of
/// `shape` (float weights: one of 128 threads a row), one CTA column per vector. For the
/// crate's own launches, and for dev/cuda's, which launch matvec.cu's kernels from their
/// own modules (other shapes, other launch steps).
pub fn matvec_config(
    ty: GgmlType,
    shape: &MatvecShape,
    w: &DeviceBuffer<u8>,
    (x_len, y_len): (usize, usize),
    (ncols, nrows, nvec): (usize, usize, usize),
) -> Result<(String, LaunchConfig), CudaError> {
    float_cols(OP, ty, ncols)?;
    let name = weight_kernel(OP, ty, w, ncols, nrows)?;
    need_x(OP, ty, x_len, ncols, nvec)?;
    need(OP, "y", y_len, nrows * nvec)?;
    let cfg = geometry(OP, ty, shape, (ncols, nrows), ("nvec", nvec))?;
    Ok((name, cfg))
}

/// Float weights are read 4 at a time with one vector load: `ncols` must be a multiple of 4.
fn float_cols(op: &'static str, ty: GgmlType, ncols: usize) -> Result<(), CudaError> {
    if is_float(ty) && !ncols.is_multiple_of(4) {
        return Err(CudaError::shape(
            op,
            format!("{ty} ncols = {ncols} is not a multiple of 4"),
        ));
    }
    Ok(())
}

/// `x_len` holds `nvec` vectors of `ncols`: f32 elements for float weights, q8_1 bytes for
/// quantized ones.
fn need_x(
    op: &'static str,
    ty: GgmlType,
    x_len: usize,
    ncols: usize,
    nvec: usize,
) -> Result<(), CudaError> {
    if is_float(ty) {
        need(op, "x", x_len, ncols * nvec)
    } else {
        need(op, "xq (bytes)", x_len, q8_1_bytes(ncols, nvec))
    }
}

/// The grid of a matvec kernel of `shape` over `nrows` rows, with grid.y = `ny` (the vectors,
/// or the expert slots, named `what`) and the shared memory of one q8_1 vector.
fn geometry(
    op: &'static str,
    ty: GgmlType,
    shape: &MatvecShape,
    (ncols, nrows): (usize, usize),
    (what, ny): (&str, usize),
) -> Result<LaunchConfig, CudaError> {
    let ((threads, rows_per_cta), shared) = if is_float(ty) {
        ((FLOAT_THREADS, 1), 0)
    } else {
        let x_shared = ncols / 32 * X_SHARED_BYTES_PER_BLOCK;
        if x_shared > MAX_X_SHARED_BYTES {
            return Err(CudaError::shape(
                op,
                format!(
                    "{ty} ncols = {ncols}: the q8_1 vector and its sums ({x_shared} bytes) \
                     exceed the {MAX_X_SHARED_BYTES} bytes of shared memory the kernel has"
                ),
            ));
        }
        (shape.cta(ty), x_shared as u32)
    };
    // The last CTA's spare warps return at once.
    let ctas = nrows.div_ceil(rows_per_cta).max(1) as u32;
    Ok(LaunchConfig {
        grid_dim: (ctas, grid_yz(op, what, ny)?, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: shared,
    })
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
        let dims = (ncols, nrows, nvec);
        let (name, cfg) = matvec_config(ty, &MatvecShape::DEFAULT, w, (xq.len(), y.len()), dims)?;
        // Alignment: w and xq are whole allocations (DeviceBuffer), so 256-byte aligned; the
        // kernel's aligned 32-bit word loads need W to start 4-byte aligned, the x staging
        // needs xq 4-byte aligned (36-byte blocks keep every vector so).
        self.launch_matvec(&name, cfg, w, xq.slice(), y, (ncols, nrows))
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
        let dims = (ncols, nrows, nvec);
        let (name, cfg) = matvec_config(ty, &MatvecShape::DEFAULT, w, (x.len(), y.len()), dims)?;
        // w and x are whole allocations (DeviceBuffer, 256-byte aligned) and ncols is a
        // multiple of 4, so every row of W and every vector of x is 16-byte aligned.
        self.launch_matvec(&name, cfg, w, x.slice(), y, (ncols, nrows))
    }

    /// Kernel `name` of module `matvec`, as [`matvec_config`] configured it.
    fn launch_matvec<X>(
        &self,
        name: &str,
        cfg: LaunchConfig,
        w: &DeviceBuffer<u8>,
        x: &cudarc::driver::CudaSlice<X>,
        y: &mut DeviceBuffer<f32>,
        (ncols, nrows): (usize, usize),
    ) -> Result<(), CudaError> {
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows)?);
        let f = self.function("matvec", name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w.slice()).arg(x).arg(y.slice_mut()).arg(&nc).arg(&nr);
        // SAFETY: matvec.cu's kernels all take (w, x, y, ncols, nrows); sizes checked by
        // matvec_config.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}

const EXPERTS_OP: &str = "matvec_experts";

impl Gpu {
    /// The chosen experts' products for decode: `y[s] = W[ids[s]] · x[s / slots_per_x]` for
    /// the slots `s < n_slot` (`slots`), W a stack of expert matrices of `ty`, the ids in
    /// device memory (where [`moe_route`](Gpu::moe_route) writes them: nothing goes through
    /// the host). `slots_per_x` is k for the gate and up projections (a token's k slots
    /// share its x) and 1 for the down projection (each slot its own hidden vector); `y` is
    /// `n_slot × nrows`. Each slot's row is bit for bit what [`matvec`](Gpu::matvec) gives
    /// on that expert's matrix (the same kernel body); an id ≥ `n_expert` gives NaN rows.
    ///
    /// Quantized weights take x as q8_1: `x` (n_x = ⌈n_slot / slots_per_x⌉ vectors) is
    /// quantized into `xq_scratch` (at least [`q8_1_bytes`]`(ncols, n_x)` bytes) first.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_experts(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        stack: &ExpertStack,
        ids: &DeviceBuffer<u32>,
        x: &DeviceBuffer<f32>,
        xq_scratch: &mut DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        slots: &ExpertSlots,
    ) -> Result<(), CudaError> {
        if is_float(ty) {
            let launch = experts_config(ty, w, stack, ids, (x.len(), y.len()), slots)?;
            return self.launch_experts(launch, w, ids, x.slice(), y);
        }
        // Every operand checked before anything is queued.
        let dims = (xq_scratch.len(), y.len());
        let launch = experts_config(ty, w, stack, ids, dims, slots)?;
        self.quantize_q8_1(x, xq_scratch, stack.ncols, slots.n_x())?;
        self.launch_experts(launch, w, ids, xq_scratch.slice(), y)
    }

    /// [`matvec_experts`](Gpu::matvec_experts) of quantized weights on activations already
    /// in q8_1 (`xq`: ⌈n_slot / slots_per_x⌉ vectors).
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_experts_q8_1(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        stack: &ExpertStack,
        ids: &DeviceBuffer<u32>,
        xq: &DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        slots: &ExpertSlots,
    ) -> Result<(), CudaError> {
        if is_float(ty) {
            return Err(CudaError::Format {
                op: "matvec_experts_q8_1 (float weights take f32 activations)",
                ty,
            });
        }
        let launch = experts_config(ty, w, stack, ids, (xq.len(), y.len()), slots)?;
        // Alignment as matvec's: whole allocations, and every expert's matrix starts on a row
        // boundary of the stack, so its rows are aligned as a single matrix's.
        self.launch_experts(launch, w, ids, xq.slice(), y)
    }

    fn launch_experts<X>(
        &self,
        (name, cfg, [nc, nr, ne, ns, spx]): ExpertsLaunch,
        w: &DeviceBuffer<u8>,
        ids: &DeviceBuffer<u32>,
        x: &cudarc::driver::CudaSlice<X>,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<(), CudaError> {
        let op = EXPERTS_OP;
        let f = self.function("matvec_experts", &name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w.slice())
            .arg(ids.slice())
            .arg(x)
            .arg(y.slice_mut())
            .arg(&nc)
            .arg(&nr)
            .arg(&ne)
            .arg(&ns)
            .arg(&spx);
        // SAFETY: matvec_experts.cu's kernels take (w, ids, x, y, ncols, nrows, n_expert,
        // n_slot, slots_per_x); sizes checked by experts_config, ids checked in the kernel.
        unsafe { b.launch(cfg) }.during(op)?;
        Ok(())
    }
}

/// An expert matvec's kernel, launch, and (ncols, nrows, n_expert, n_slot, slots_per_x) as
/// `int`s.
type ExpertsLaunch = (String, LaunchConfig, [i32; 5]);

/// The kernel and launch of an expert matvec, after checking the operands: `w` holds the
/// stack, `ids` the slots, `x_len` and `y_len` the vectors read and written.
fn experts_config(
    ty: GgmlType,
    w: &DeviceBuffer<u8>,
    stack: &ExpertStack,
    ids: &DeviceBuffer<u32>,
    (x_len, y_len): (usize, usize),
    slots: &ExpertSlots,
) -> Result<ExpertsLaunch, CudaError> {
    let op = EXPERTS_OP;
    float_cols(op, ty, stack.ncols)?;
    let name = format!("{op}_{}", kernel_suffix(op, ty)?);
    need(op, "w (bytes)", w.len(), stack.bytes(op, ty)?)?;
    if slots.slots_per_x == 0 {
        return Err(CudaError::shape(op, "slots_per_x = 0 must be at least 1"));
    }
    need(op, "ids", ids.len(), slots.n_slot)?;
    need_x(op, ty, x_len, stack.ncols, slots.n_x())?;
    need(op, "y", y_len, stack.nrows * slots.n_slot)?;
    // Slots past 65535 go on along grid.z (matvec_experts.cu).
    let (y, z) = (slots.n_slot.min(65535), slots.n_slot.div_ceil(65535));
    let mut cfg = geometry(
        op,
        ty,
        &MatvecShape::DEFAULT,
        (stack.ncols, stack.nrows),
        ("n_slot", y),
    )?;
    cfg.grid_dim.2 = grid_yz(op, "n_slot / 65535", z)?;
    let ints = [
        as_i32(op, "ncols", stack.ncols)?,
        as_i32(op, "nrows", stack.nrows)?,
        as_i32(op, "n_expert", stack.n_expert)?,
        as_i32(op, "n_slot", slots.n_slot)?,
        as_i32(op, "slots_per_x", slots.slots_per_x)?,
    ];
    Ok((name, cfg, ints))
}
