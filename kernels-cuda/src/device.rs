//! Device discovery that never panics, and [`Gpu`]: one device's context, its stream and its
//! kernels.
//!
//! cudarc panics when it first touches a driver library that is absent, so every entry point
//! here checks `is_culib_present` before any other driver call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{CudaError, DriverContext};
use crate::ptx::{self, PtxModule};

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
    /// Loaded modules, by the address of their embedded PTX (unique per module).
    modules: Mutex<HashMap<usize, Arc<CudaModule>>>,
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

    /// Waits for everything queued on this device's stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().during("synchronize")
    }

    /// Kernel `name` from this crate's module `module` (a `kernels/<module>.cu` file).
    pub(crate) fn function(
        &self,
        module: &'static str,
        name: &str,
    ) -> Result<CudaFunction, CudaError> {
        let m = ptx::module(module).ok_or_else(|| {
            CudaError::Unavailable(format!("kernel module {module} is not embedded"))
        })?;
        self.kernel(m, name)
    }

    /// Kernel `name` from `module`, which is loaded on first use and kept. Besides this
    /// crate's own modules, for dev/cuda's trials: they embed their variants of the kernels
    /// as `PtxModule`s of their own and launch them on a `Gpu` through this.
    pub fn kernel(
        &self,
        module: &'static PtxModule,
        name: &str,
    ) -> Result<CudaFunction, CudaError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let key = module.deflated.as_ptr() as usize;
        let m = match modules.get(&key) {
            Some(m) => m.clone(),
            None => {
                let m = self
                    .ctx
                    .load_module(Ptx::from_src(module.ptx()?))
                    .during("loading PTX")?;
                modules.insert(key, m.clone());
                m
            }
        };
        m.load_function(name).during("finding a kernel")
    }
}
