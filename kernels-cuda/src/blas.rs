//! cuBLAS where the machine has it: the f16 GEMM (f32 accumulation) that `cuda-bench`
//! measures against Strata's tensor-core `matmul`, weights dequantized to f16 first (the
//! issue's alternative for prefill: "dequantize to f16 + cuBLAS, where that is faster").
//!
//! libcublas is opened at run time, by cudarc, under the names it knows (`libcublas.so`,
//! `libcublas.so.12`, …); [`Gpu::blas`] checks that it can be before any cuBLAS call, so a
//! machine without it gets an error that says so, never a panic.

use std::ffi::{c_int, c_void};

use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use crate::error::CudaError;
use crate::ops::{as_i32, need};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "cuBLAS gemm_f16";

/// A cuBLAS handle bound to one [`Gpu`]'s stream: its work queues in order with the
/// `Gpu`'s kernels.
pub struct Blas {
    blas: CudaBlas,
}

impl Gpu {
    /// A cuBLAS handle on this device's stream; [`CudaError::NoBlas`] if libcublas cannot
    /// be loaded here.
    pub fn blas(&self) -> Result<Blas, CudaError> {
        // SAFETY: only tries to open the library under its candidate names.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoBlas(
                "libcublas (cuBLAS) is not installed or not on the loader path".to_string(),
            ));
        }
        let blas = CudaBlas::new(self.stream().clone()).map_err(|err| CudaError::Blas {
            op: "creating a cuBLAS handle",
            err,
        })?;
        Ok(Blas { blas })
    }
}

impl Blas {
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
    ) -> Result<(), CudaError> {
        need(OP, "w", w.len(), ncols * nrows)?;
        need(OP, "x", x.len(), ncols * ntok)?;
        need(OP, "y", y.len(), nrows * ntok)?;
        let (k, m, n) = (
            as_i32(OP, "ncols", ncols)?,
            as_i32(OP, "nrows", nrows)?,
            as_i32(OP, "ntok", ntok)?,
        );
        if k == 0 || m == 0 || n == 0 {
            return Err(CudaError::shape(OP, "an empty matrix"));
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
        .map_err(|err| CudaError::Blas { op: OP, err })
    }
}
