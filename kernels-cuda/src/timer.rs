//! Timing with CUDA events recorded on a [`Gpu`]'s stream: points in its queue of work that
//! the device reaches once everything queued before them is done.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

use crate::device::Gpu;
use crate::error::{CudaError, DriverContext};

/// A point on a [`Gpu`]'s stream, with the device's time of reaching it.
pub struct GpuEvent {
    event: CudaEvent,
}

impl GpuEvent {
    /// An event recorded on `gpu`'s stream now, behind the work queued so far.
    pub fn record(gpu: &Gpu) -> Result<GpuEvent, CudaError> {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let event = gpu.context().new_event(flags).during("creating an event")?;
        event.record(gpu.stream()).during("recording an event")?;
        Ok(GpuEvent { event })
    }

    /// Waits until the device has reached it.
    pub fn wait(&self) -> Result<(), CudaError> {
        self.event.synchronize().during("waiting for an event")
    }

    /// Milliseconds of device time from this event to `later` (recorded after it on the
    /// same device), once the device has reached `later` (waits for it).
    pub fn ms_until(&self, later: &GpuEvent) -> Result<f32, CudaError> {
        self.event
            .elapsed_ms(&later.event)
            .during("reading event times")
    }
}

/// A start event recorded now; [`GpuTimer::stop`] records the end and returns the device
/// time between them.
pub struct GpuTimer {
    start: GpuEvent,
}

impl GpuTimer {
    pub fn start(gpu: &Gpu) -> Result<GpuTimer, CudaError> {
        Ok(GpuTimer {
            start: GpuEvent::record(gpu)?,
        })
    }

    /// Milliseconds of device time since `start` (waits for the stream to get there).
    pub fn stop(self, gpu: &Gpu) -> Result<f32, CudaError> {
        self.start.ms_until(&GpuEvent::record(gpu)?)
    }
}
