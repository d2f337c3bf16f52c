//! Kernel timing with CUDA events recorded on a [`Gpu`]'s stream.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

use crate::device::Gpu;
use crate::error::{CudaError, DriverContext};

/// A start event recorded now; [`GpuTimer::stop`] records the end and returns the device
/// time between them.
pub struct GpuTimer {
    start: CudaEvent,
    end: CudaEvent,
}

impl GpuTimer {
    pub fn start(gpu: &Gpu) -> Result<GpuTimer, CudaError> {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = gpu.context().new_event(flags).during("creating an event")?;
        let end = gpu.context().new_event(flags).during("creating an event")?;
        start.record(gpu.stream()).during("recording an event")?;
        Ok(GpuTimer { start, end })
    }

    /// Milliseconds of device time since `start` (waits for the stream to get there).
    pub fn stop(self, gpu: &Gpu) -> Result<f32, CudaError> {
        self.end.record(gpu.stream()).during("recording an event")?;
        self.start
            .elapsed_ms(&self.end)
            .during("reading event times")
    }
}
