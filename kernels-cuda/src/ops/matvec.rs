use std::ffi::c_void;

use cudarc::driver::{
    sys, CudaFunction, CudaStream, DevicePtr, DevicePtrMut, DriverError, LaunchConfig,
    PushKernelArg,
};
use strata_kernels_cpu::GgmlType;

use super::{as_i32, grid_yz, kernel_suffix, need, q8_1_bytes, weight_kernel};
use crate::error::{CudaError, DriverContext};
use crate::ptx::{MatvecShape, MATVEC_PDL_MODULE};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "matvec";
/// (threads, rows) per CTA of the quantized kernels of `shape` (build.rs compiled each
/// module with its shape's MV_WARPS and MV_RPW).
fn quant_cta(shape: &MatvecShape, ty: GgmlType) -> (u32, usize) {
    let per_warp = if ty.block_size() == 32 {
        shape.rows_per_warp_legacy
    } else {
        shape.rows_per_warp_k
    };
    (32 * shape.warps, (per_warp * shape.warps) as usize)
}
/// matvec.cu's MV_FLOAT_THREADS: one CTA of this many threads per row of float weights.
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
        let name = weight_kernel(OP, ty, w, ncols, nrows)?;
        need(OP, "xq (bytes)", xq.len(), q8_1_bytes(ncols, nvec))?;
        need(OP, "y", y.len(), nrows * nvec)?;
        let x_shared = ncols / 32 * X_SHARED_BYTES_PER_BLOCK;
        if x_shared > MAX_X_SHARED_BYTES {
            return Err(CudaError::shape(
                OP,
                format!(
                    "{ty} ncols = {ncols}: the q8_1 vector and its sums ({x_shared} bytes) \
                     exceed the {MAX_X_SHARED_BYTES} bytes of shared memory the kernel has"
                ),
            ));
        }
        // Alignment: w and xq are whole allocations (DeviceBuffer), so 256-byte aligned; the
        // kernel's aligned 32-bit word loads need W to start 4-byte aligned, the x staging
        // needs xq 4-byte aligned (36-byte blocks keep every vector so).
        self.launch_matvec(
            &name,
            w.slice(),
            xq.slice(),
            y,
            (ncols, nrows, nvec),
            quant_cta(self.matvec_shape(), ty),
            x_shared as u32,
        )
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
        let name = weight_kernel(OP, ty, w, ncols, nrows)?;
        need(OP, "x", x.len(), ncols * nvec)?;
        need(OP, "y", y.len(), nrows * nvec)?;
        // w and x are whole allocations (DeviceBuffer, 256-byte aligned) and ncols is a
        // multiple of 4, so every row of W and every vector of x is 16-byte aligned.
        self.launch_matvec(
            &name,
            w.slice(),
            x.slice(),
            y,
            (ncols, nrows, nvec),
            (FLOAT_THREADS, 1),
            0,
        )
    }

    /// CTAs of `threads` that take `rows_per_cta` rows each (the last CTA's spare warps
    /// return at once), one CTA column per vector; `shared` bytes of dynamic shared memory.
    #[allow(clippy::too_many_arguments)]
    fn launch_matvec<X>(
        &self,
        name: &str,
        w: &cudarc::driver::CudaSlice<u8>,
        x: &cudarc::driver::CudaSlice<X>,
        y: &mut DeviceBuffer<f32>,
        (ncols, nrows, nvec): (usize, usize, usize),
        (threads, rows_per_cta): (u32, usize),
        shared: u32,
    ) -> Result<(), CudaError> {
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows)?);
        let ctas = nrows.div_ceil(rows_per_cta).max(1) as u32;
        let cfg = LaunchConfig {
            grid_dim: (ctas, grid_yz(OP, "nvec", nvec)?, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: shared,
        };
        let prefetch = self.matvec_prefetch();
        if self.matvec_pdl() {
            let f = self.function(MATVEC_PDL_MODULE, name)?;
            let stream = self.stream();
            let (wp, _w) = w.device_ptr(stream);
            let (xp, _x) = x.device_ptr(stream);
            let (yp, _y) = y.slice_mut().device_ptr_mut(stream);
            let args = [wp, xp, yp];
            let ints = [nc, nr, prefetch];
            // SAFETY: the same kernel arguments as below, by address: the three device
            // pointers, then (ncols, nrows, prefetch) as i32, all alive until the call
            // returns (the driver copies them at launch).
            return unsafe { launch_dependent(&f, stream, &cfg, &args, &ints) }.during(OP);
        }
        let f = self.function(self.matvec_shape().module, name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w)
            .arg(x)
            .arg(y.slice_mut())
            .arg(&nc)
            .arg(&nr)
            .arg(&prefetch);
        // SAFETY: matvec.cu's kernels all take (w, x, y, ncols, nrows, prefetch); sizes
        // checked by callers; the prefetch requests stay inside each row.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}

/// Launches `f` on `stream` with the programmatic-stream-serialization attribute
/// (cuLaunchKernelEx), which lets it start before the kernel ahead of it in the stream
/// completes; the kernel must wait (griddepcontrol.wait) before it touches what that kernel
/// writes. Arguments: `ptrs` then `ints`, in that order.
///
/// # Safety
///
/// `f` must take exactly those arguments, and the pointers must be valid for what it does.
unsafe fn launch_dependent(
    f: &CudaFunction,
    stream: &CudaStream,
    cfg: &LaunchConfig,
    ptrs: &[sys::CUdeviceptr],
    ints: &[i32],
) -> Result<(), DriverError> {
    stream.context().bind_to_thread()?;
    let mut params: Vec<*mut c_void> = ptrs
        .iter()
        .map(|p| p as *const sys::CUdeviceptr as *mut c_void)
        .chain(ints.iter().map(|i| i as *const i32 as *mut c_void))
        .collect();
    // SAFETY: all-zero is a valid value of this plain C union.
    let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
    value.programmaticStreamSerializationAllowed = 1;
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        value,
    };
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: config, attr and params outlive the call; the caller vouches for the
    // arguments.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
}
