//! Device discovery that never panics, and [`Gpu`]: one device's context, its stream and its
//! kernels.
//!
//! cudarc panics when it first touches a driver library that is absent, so every entry point
//! here checks `is_culib_present` before any other driver call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{CudaError, DriverContext};
use crate::ptx::{self, MATVEC_PDL_MODULE};

/// What the driver says about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub total_bytes: usize,
    pub free_bytes: usize,
}

/// Whether libcuda can be loaded at all. Safe to call anywhere, any number of times.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Why CUDA cannot be used here, or `None` if it can (driver present, at least one device,
/// kernels embedded).
pub fn unavailable_reason() -> Option<String> {
    match device_count() {
        Ok(0) => Some("the CUDA driver reports no devices".to_string()),
        Ok(_) => ptx::missing_kernels_reason().map(str::to_string),
        // The reason itself: callers wrap it in `Unavailable` again ("no CUDA device: …").
        Err(CudaError::Unavailable(why)) => Some(why),
        Err(e) => Some(e.to_string()),
    }
}

/// Number of visible devices; an error (never a panic) if the driver is missing or fails.
pub fn device_count() -> Result<usize, CudaError> {
    if !driver_present() {
        return Err(CudaError::Unavailable(
            "libcuda (the NVIDIA driver library) is not installed or not on the loader path"
                .to_string(),
        ));
    }
    let n = CudaContext::device_count()
        .map_err(|e| CudaError::Unavailable(format!("the CUDA driver failed to start: {e}")))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Every visible device with its free and total memory. Creates (and keeps: the driver
/// shares it) each device's primary context, since free memory is a context query.
pub fn devices() -> Result<Vec<DeviceInfo>, CudaError> {
    (0..device_count()?)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal).during("creating a context")?;
            info(&ctx)
        })
        .collect()
}

fn info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo, CudaError> {
    let (free_bytes, total_bytes) = ctx.mem_get_info().during("cuMemGetInfo")?;
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name().during("cuDeviceGetName")?,
        compute_capability: ctx.compute_capability().during("compute capability")?,
        total_bytes,
        free_bytes,
    })
}

/// One device, ready to run Strata's kernels: its primary context, one stream that every
/// launch and copy of this `Gpu` goes to (so they run in order), and the kernel modules,
/// loaded from the embedded PTX on first use.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Bytes of each weight row that a matvec asks L2 for before it starts (matvec.cu's
    /// `prefetch`; 0 = off).
    matvec_prefetch: AtomicU32,
    /// Whether matvecs launch with programmatic dependent launch (`set_matvec_pdl`).
    matvec_pdl: AtomicBool,
    /// Index in `ptx::MATVEC_SHAPES` of the quantized matvec kernels' shape
    /// (`set_matvec_shape`; 0, the default shape).
    matvec_shape: AtomicUsize,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Device `ordinal`; [`CudaError::Unavailable`] if there is no driver, no such device, or
    /// no embedded kernels.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(CudaError::Unavailable(format!(
                "device {ordinal} requested, {n} visible"
            )));
        }
        if let Some(why) = ptx::missing_kernels_reason() {
            return Err(CudaError::Unavailable(why.to_string()));
        }
        let ctx = CudaContext::new(ordinal).during("creating a context")?;
        // cudarc records and waits on an event per buffer argument of every launch once a
        // context has a second stream (7 µs a launch measured on an H100 with it on: decode
        // was launch-bound). Strata needs none of that: every buffer is made by a `Gpu` and
        // used only on that `Gpu`'s one stream, in order, and freed on it.
        // SAFETY: buffers of this context are never shared between streams (see
        // `DeviceBuffer`), so no cross-stream synchronization is needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().during("creating a stream")?;
        Ok(Gpu {
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            matvec_prefetch: AtomicU32::new(0),
            matvec_pdl: AtomicBool::new(false),
            matvec_shape: AtomicUsize::new(0),
        })
    }

    /// The first device, or why there is none: the usual way tests and tools start.
    pub fn first() -> Result<Gpu, CudaError> {
        Gpu::new(0)
    }

    pub fn info(&self) -> Result<DeviceInfo, CudaError> {
        info(&self.ctx)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Makes every later matvec launch ask L2 for the first `bytes` of each weight row
    /// before its first instruction that waits (matvec.cu's `prefetch`); 0, the default,
    /// turns that off. Results are bit for bit the same either way; only the speed can
    /// differ, which `cuda-bench` measures side by side. A CUDA graph keeps the setting
    /// its launches were captured with.
    pub fn set_matvec_prefetch(&self, bytes: u32) {
        self.matvec_prefetch.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn matvec_prefetch(&self) -> i32 {
        i32::try_from(self.matvec_prefetch.load(Ordering::Relaxed)).unwrap_or(i32::MAX)
    }

    /// Why this device cannot launch matvecs with programmatic dependent launch, or `None`
    /// if it can: that needs compute capability 9.0 or later and the `matvec_sm90` module.
    pub fn matvec_pdl_unsupported(&self) -> Option<String> {
        let (major, minor) = match self.ctx.compute_capability() {
            Ok(cc) => cc,
            Err(e) => return Some(format!("compute capability unknown: {e}")),
        };
        let cc = u32::try_from(major * 10 + minor).unwrap_or(0);
        match ptx::module(MATVEC_PDL_MODULE).and_then(|m| m.min_compute_capability) {
            None => Some(format!("module {MATVEC_PDL_MODULE} is not embedded")),
            Some(need) if cc < need => Some(format!(
                "programmatic dependent launch needs compute capability {}.{} (this device \
                 has {major}.{minor})",
                need / 10,
                need % 10
            )),
            Some(_) => None,
        }
    }

    /// Makes every later matvec launch with programmatic dependent launch (`on`) or plainly
    /// (the default): each matvec may then start while the kernel before it in the stream
    /// finishes, prefetching its weights, and waits for that kernel before it reads x
    /// (matvec.cu). Results are bit for bit the same either way; `cuda-bench` measures the
    /// speed. An error, and no change, where the device cannot (see
    /// [`Gpu::matvec_pdl_unsupported`]). A CUDA graph keeps the setting its launches were
    /// captured with.
    pub fn set_matvec_pdl(&self, on: bool) -> Result<(), CudaError> {
        if on {
            if let Some(why) = self.matvec_pdl_unsupported() {
                return Err(CudaError::Unavailable(why));
            }
            if self.matvec_shape.load(Ordering::Relaxed) != 0 {
                return Err(CudaError::shape(
                    "set_matvec_pdl",
                    format!(
                        "PDL launches the default shape; matvec shape {} is set",
                        self.matvec_shape().name
                    ),
                ));
            }
        }
        self.matvec_pdl.store(on, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn matvec_pdl(&self) -> bool {
        self.matvec_pdl.load(Ordering::Relaxed)
    }

    /// Makes later quantized matvecs use the shape named `name` of
    /// [`ptx::MATVEC_SHAPES`] ("default", or a variant that `cuda-bench` times beside it).
    /// Results are bit for bit the same in every shape (each row's lanes take the same units
    /// in the same order); only the speed differs. An error, and no change, for an unknown
    /// name, or a variant while programmatic dependent launch is on.
    pub fn set_matvec_shape(&self, name: &str) -> Result<(), CudaError> {
        const OP: &str = "set_matvec_shape";
        let Some(i) = ptx::MATVEC_SHAPES.iter().position(|s| s.name == name) else {
            let known: Vec<&str> = ptx::MATVEC_SHAPES.iter().map(|s| s.name).collect();
            return Err(CudaError::shape(
                OP,
                format!("no matvec shape {name:?} (known: {})", known.join(", ")),
            ));
        };
        if i != 0 && self.matvec_pdl() {
            return Err(CudaError::shape(
                OP,
                format!("PDL launches the default shape only, not {name:?}"),
            ));
        }
        self.matvec_shape.store(i, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn matvec_shape(&self) -> &'static ptx::MatvecShape {
        &ptx::MATVEC_SHAPES[self.matvec_shape.load(Ordering::Relaxed)]
    }

    /// Waits for everything queued on this device's stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().during("synchronize")
    }

    /// Kernel `name` from module `module` (a `kernels/<module>.cu` file).
    pub(crate) fn function(
        &self,
        module: &'static str,
        name: &str,
    ) -> Result<CudaFunction, CudaError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let m = match modules.get(module) {
            Some(m) => m.clone(),
            None => {
                let src = ptx::module(module).ok_or_else(|| {
                    CudaError::Unavailable(format!("kernel module {module} is not embedded"))
                })?;
                let m = self
                    .ctx
                    .load_module(Ptx::from_src(src.ptx()?))
                    .during("loading PTX")?;
                modules.insert(module, m.clone());
                m
            }
        };
        m.load_function(name).during("finding a kernel")
    }
}
