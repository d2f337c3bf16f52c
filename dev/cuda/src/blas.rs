//! cuBLAS where the machine has it: the f16 GEMM (f32 accumulation) that `cuda-bench`
//! measures against Strata's tensor-core `matmul`, weights dequantized to f16 first (the
//! alternative for prefill: dequantize to f16, then cuBLAS, where that is faster).
//!
//! libcublas is opened at run time, by cudarc, under the names it knows (`libcublas.so`,
//! `libcublas.so.12`, …); [`Blas::new`] checks that it can be before any cuBLAS call, so a
//! machine without it gets an error that says so, never a panic.

use std::ffi::{c_int, c_void};

use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use strata_kernels_cuda::{CudaError, DeviceBuffer, Gpu};

const OP: &str = "cuBLAS gemm_f16";

/// Why a cuBLAS call did not run.
#[derive(Debug)]
pub enum BlasError {
    /// libcublas cannot be loaded here (the kernels themselves may still run).
    Missing(String),
    /// A shape that does not fit, or a driver error.
    Cuda(CudaError),
    Cublas {
        op: &'static str,
        err: cudarc::cublas::result::CublasError,
    },
}

impl std::fmt::Display for BlasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlasError::Missing(why) => write!(f, "no cuBLAS: {why}"),
            BlasError::Cuda(e) => e.fmt(f),
            BlasError::Cublas { op, err } => write!(f, "cuBLAS error in {op}: {err}"),
        }
    }
}

impl std::error::Error for BlasError {}

impl From<CudaError> for BlasError {
    fn from(e: CudaError) -> BlasError {
        BlasError::Cuda(e)
    }
}

fn shape(what: String) -> BlasError {
    BlasError::Cuda(CudaError::Shape { op: OP, what })
}

/// A cuBLAS handle bound to one [`Gpu`]'s stream: its work queues in order with the
/// `Gpu`'s kernels.
pub struct Blas {
    blas: CudaBlas,
}

impl Blas {
    /// A cuBLAS handle on `gpu`'s stream; [`BlasError::Missing`] if libcublas cannot be
    /// loaded here.
    pub fn new(gpu: &Gpu) -> Result<Blas, BlasError> {
        // SAFETY: only tries to open the library under its candidate names.
        if !unsafe { sys::is_culib_present() } {
            return Err(BlasError::Missing(
                "libcublas (cuBLAS) is not installed or not on the loader path".to_string(),
            ));
        }
        let blas = CudaBlas::new(gpu.stream().clone()).map_err(|err| BlasError::Cublas {
            op: "creating a cuBLAS handle",
            err,
        })?;
        Ok(Blas { blas })
    }

    /// y[t][r] = Σ_c w[r][c]·x[t][c] for `ntok` tokens: `w` is `nrows × ncols` and `x`
    /// `ntok × ncols`, both f16 (bits in `u16`, row-major); `y` is `ntok × nrows` f32. Products
    /// of f16 values summed in f32 (`CUBLAS_COMPUTE_32F`), as the tensor-core `matmul` does.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(
        &self,
        gpu: &Gpu,
        w: &DeviceBuffer<u16>,
        x: &DeviceBuffer<u16>,
        y: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
        ntok: usize,
    ) -> Result<(), BlasError> {
        for (what, len, need) in [
            ("w", w.len(), ncols * nrows),
            ("x", x.len(), ncols * ntok),
            ("y", y.len(), nrows * ntok),
        ] {
            if len < need {
                return Err(shape(format!("{what} holds {len} elements, needs {need}")));
            }
        }
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| shape(format!("{what} = {v} exceeds i32")))
        };
        let (k, m, n) = (
            int("ncols", ncols)?,
            int("nrows", nrows)?,
            int("ntok", ntok)?,
        );
        if k == 0 || m == 0 || n == 0 {
            return Err(shape("an empty matrix".to_string()));
        }
        let stream = gpu.stream();
        let (wp, _w) = w.slice().device_ptr(stream);
        let (xp, _x) = x.slice().device_ptr(stream);
        let (yp, _y) = y.slice_mut().device_ptr_mut(stream);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major view: y is nrows × ntok (ld nrows) = Wᵀ-view · x-view, where w's
        // row-major nrows × ncols is a column-major ncols × nrows (ld ncols), taken
        // transposed, and x's row-major ntok × ncols a column-major ncols × ntok (ld ncols).
        // SAFETY: the sizes were checked above; the pointers are device allocations of this
        // handle's context, alive until the call returns (it only queues the work, on the
        // stream that later work on these buffers also goes to).
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha) as *const f32 as *const c_void,
                wp as *const c_void,
                sys::cudaDataType::CUDA_R_16F,
                k as c_int,
                xp as *const c_void,
                sys::cudaDataType::CUDA_R_16F,
                k as c_int,
                (&beta) as *const f32 as *const c_void,
                yp as *mut c_void,
                sys::cudaDataType::CUDA_R_32F,
                m as c_int,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|err| BlasError::Cublas { op: OP, err })
    }
}
