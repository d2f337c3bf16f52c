//! Trials of Strata's CUDA kernels, kept out of the product as llm.c keeps its `dev/cuda`:
//! variants of the matvec kernels that none of has yet won on a GPU, each launched on the
//! product's [`Gpu`], each checked to give the product kernel's bits (this crate's tests,
//! and cuda-bench's validation against the product and a CPU reference), and each timed by
//! `cuda-bench` beside the product's kernel.
//!
//! - [`shapes::VARIANTS`]: the product's matvec.cu compiled in other shapes (warps a CTA,
//!   rows a warp, iterations in flight);
//! - [`Matvec::Trial`]: the product's kernel bodies with an L2 prefetch of each row and, on
//!   sm_90 and later, programmatic dependent launch (kernels/matvec_trial.cu);
//! - [`probe`]: an empty kernel and a pure read of the weight bytes, the floors a matvec's
//!   time is measured against;
//! - [`blas`]: cuBLAS's f16 GEMM, the alternative for prefill that cuda-bench times beside
//!   the product's `matmul`.
//!
//! A winner moves into kernels-cuda (its kernel, its launch) and out of here.

pub mod blas;
pub mod probe;
pub mod shapes;

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};
use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::ptx::PtxModule;
use strata_kernels_cuda::{matvec_config, CudaError, DeviceBuffer, Gpu, MatvecShape};

use shapes::Variant;

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The module `name` of this crate, or why it is not embedded.
pub fn module(name: &str) -> Result<&'static PtxModule, CudaError> {
    MODULES.iter().find(|m| m.name == name).ok_or_else(|| {
        CudaError::Unavailable(format!(
            "dev/cuda module {name} is not embedded (built without NVRTC?)"
        ))
    })
}

/// The module compiled for sm_90 and later, with programmatic dependent launch.
const PDL_MODULE: &str = "matvec_trial_sm90";

/// Why `gpu` cannot run [`Matvec::Trial`] with `pdl`, or `None` if it can: that needs
/// compute capability 9.0 or later.
pub fn pdl_unsupported(gpu: &Gpu) -> Option<String> {
    let (major, minor) = match gpu.context().compute_capability() {
        Ok(cc) => cc,
        Err(e) => return Some(format!("compute capability unknown: {e}")),
    };
    let cc = u32::try_from(major * 10 + minor).unwrap_or(0);
    match module(PDL_MODULE).map(|m| m.min_compute_capability) {
        Err(e) => Some(e.to_string()),
        Ok(None) => Some(format!("module {PDL_MODULE}: architecture unknown")),
        Ok(Some(need)) if cc < need => Some(format!(
            "programmatic dependent launch needs compute capability {}.{} (this device has \
             {major}.{minor})",
            need / 10,
            need % 10
        )),
        Ok(Some(_)) => None,
    }
}

impl Variant {
    /// Its launch geometry.
    pub fn shape(&self) -> MatvecShape {
        MatvecShape {
            warps: self.warps,
            rows_per_warp_legacy: self.rows_per_warp_legacy,
            rows_per_warp_k: self.rows_per_warp_k,
        }
    }
}

/// Which kernel a matvec runs. Every one gives the product's bits; only the speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matvec {
    /// The product's kernel ([`Gpu::matvec`]), as the engine runs it.
    Product,
    /// matvec.cu's kernels in another shape (quantized weights; the float kernels are the
    /// product's).
    Shape(&'static Variant),
    /// matvec_trial.cu: first asks L2 for `prefetch` bytes of each weight row (0: none);
    /// with `pdl`, launched with programmatic dependent launch (see [`pdl_unsupported`]).
    /// A CUDA graph keeps the launch attribute its launches were captured with.
    Trial { prefetch: u32, pdl: bool },
}

impl Matvec {
    /// y = W·x for `nvec` vectors, as [`Gpu::matvec`] (quantized weights: `x` quantized into
    /// `xq_scratch` first).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        self,
        gpu: &Gpu,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        x: &DeviceBuffer<f32>,
        xq_scratch: &mut DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        (ncols, nrows, nvec): (usize, usize, usize),
    ) -> Result<(), CudaError> {
        let Some(target) = self.target() else {
            return gpu.matvec(ty, w, x, xq_scratch, y, ncols, nrows, nvec);
        };
        if is_float(ty) {
            let x = (x.slice(), x.len());
            return self.launch(target, gpu, ty, w, x, y, (ncols, nrows, nvec));
        }
        gpu.quantize_q8_1(x, xq_scratch, ncols, nvec)?;
        self.run_q8_1(gpu, ty, w, xq_scratch, y, (ncols, nrows, nvec))
    }

    /// The quantized-weight kernel on activations already in q8_1, as [`Gpu::matvec_q8_1`].
    pub fn run_q8_1(
        self,
        gpu: &Gpu,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        xq: &DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        (ncols, nrows, nvec): (usize, usize, usize),
    ) -> Result<(), CudaError> {
        match self.target() {
            // The product's kernel, and its error for float weights.
            Some(target) if !is_float(ty) => {
                let x = (xq.slice(), xq.len());
                self.launch(target, gpu, ty, w, x, y, (ncols, nrows, nvec))
            }
            _ => gpu.matvec_q8_1(ty, w, xq, y, ncols, nrows, nvec),
        }
    }

    /// The module and shape of a trial's kernels; `None` for the product's.
    fn target(self) -> Option<(String, MatvecShape)> {
        match self {
            Matvec::Product => None,
            Matvec::Shape(v) => Some((v.module(), v.shape())),
            Matvec::Trial { pdl: false, .. } => {
                Some(("matvec_trial".to_string(), MatvecShape::DEFAULT))
            }
            Matvec::Trial { pdl: true, .. } => Some((PDL_MODULE.to_string(), MatvecShape::DEFAULT)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch<X>(
        self,
        (module_name, shape): (String, MatvecShape),
        gpu: &Gpu,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        (x, x_len): (&CudaSlice<X>, usize),
        y: &mut DeviceBuffer<f32>,
        dims: (usize, usize, usize),
    ) -> Result<(), CudaError> {
        const OP: &str = "dev matvec";
        // Before its module is loaded: compute_90 PTX does not load on an older device.
        if let Matvec::Trial { pdl: true, .. } = self {
            if let Some(why) = pdl_unsupported(gpu) {
                return Err(CudaError::Unavailable(why));
            }
        }
        let (name, cfg) = matvec_config(ty, &shape, w, (x_len, y.len()), dims)?;
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| CudaError::Shape {
                op: OP,
                what: format!("{what} = {v} exceeds i32"),
            })
        };
        let (nc, nr) = (int("ncols", dims.0)?, int("nrows", dims.1)?);
        let f = gpu.kernel(module(&module_name)?, &name)?;
        let driver = |err| CudaError::Driver { op: OP, err };
        match self {
            Matvec::Trial {
                prefetch,
                pdl: true,
            } => {
                let stream = gpu.stream();
                let (wp, _w) = w.slice().device_ptr(stream);
                let (xp, _x) = x.device_ptr(stream);
                let (yp, _y) = y.slice_mut().device_ptr_mut(stream);
                let prefetch = int("prefetch", prefetch as usize)?;
                // SAFETY: matvec_trial.cu's kernels take (w, x, y, ncols, nrows, prefetch),
                // sizes checked by matvec_config; the pointers and ints live until the call
                // returns (the driver copies them at launch).
                unsafe { launch_dependent(&f, gpu, &cfg, &[wp, xp, yp], &[nc, nr, prefetch]) }
                    .map_err(driver)
            }
            Matvec::Trial { prefetch, .. } => {
                let prefetch = int("prefetch", prefetch as usize)?;
                let mut b = gpu.stream().launch_builder(&f);
                b.arg(w.slice()).arg(x).arg(y.slice_mut());
                b.arg(&nc).arg(&nr).arg(&prefetch);
                // SAFETY: as above, launched plainly; the prefetch requests stay inside
                // each row.
                unsafe { b.launch(cfg) }.map(drop).map_err(driver)
            }
            _ => {
                let mut b = gpu.stream().launch_builder(&f);
                b.arg(w.slice()).arg(x).arg(y.slice_mut()).arg(&nc).arg(&nr);
                // SAFETY: matvec.cu's kernels take (w, x, y, ncols, nrows), sizes checked by
                // matvec_config for this shape's geometry.
                unsafe { b.launch(cfg) }.map(drop).map_err(driver)
            }
        }
    }
}

fn is_float(ty: GgmlType) -> bool {
    ty.is_float()
}

/// Launches `f` on `gpu`'s stream with the programmatic-stream-serialization attribute
/// (cuLaunchKernelEx), which lets it start before the kernel ahead of it in the stream
/// completes; the kernel must wait (griddepcontrol.wait) before it touches what that kernel
/// writes. Arguments: `ptrs` then `ints`, in that order.
///
/// # Safety
///
/// `f` must take exactly those arguments, and the pointers must be valid for what it does.
unsafe fn launch_dependent(
    f: &CudaFunction,
    gpu: &Gpu,
    cfg: &cudarc::driver::LaunchConfig,
    ptrs: &[sys::CUdeviceptr],
    ints: &[i32],
) -> Result<(), cudarc::driver::DriverError> {
    let stream = gpu.stream();
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
