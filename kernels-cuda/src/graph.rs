//! CUDA graphs: a sequence of launches recorded once and replayed with one call, which
//! takes the per-launch CPU cost (a few µs each) out of a decode step of hundreds of small
//! kernels. What a replay reads that changes between steps (positions) must be in device
//! memory: the launches' arguments are frozen at capture.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use crate::error::{CudaError, DriverContext};
use crate::Gpu;

/// A recorded sequence of launches on one [`Gpu`]'s stream.
pub struct GpuGraph {
    graph: CudaGraph,
}

// SAFETY: CUDA asks that no two threads use one graph at the same time (driver API, "Graph
// object thread safety"); moving it to another thread is allowed. A `GpuGraph` is not Sync
// and `launch` takes it by reference from its one owner, so uses never overlap.
unsafe impl Send for GpuGraph {}

impl std::fmt::Debug for GpuGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuGraph").finish_non_exhaustive()
    }
}

impl Gpu {
    /// Records, without running them, the launches and device copies `queue` makes on this
    /// `Gpu`; they run when the graph is launched. `queue` must not copy to or from the host
    /// nor wait for the device (nothing would have run yet).
    pub fn capture(
        &self,
        queue: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<GpuGraph, CudaError> {
        const OP: &str = "graph capture";
        self.stream()
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .during(OP)?;
        let queued = queue();
        // The capture must end whatever happened, or the stream stays capturing.
        let ended = self
            .stream()
            .end_capture(CUgraphInstantiate_flags(0))
            .during(OP);
        queued?;
        match ended? {
            Some(graph) => Ok(GpuGraph { graph }),
            None => Err(CudaError::shape(OP, "nothing was queued")),
        }
    }
}

impl GpuGraph {
    /// Queues the recorded launches on the stream they were captured from.
    pub fn launch(&self) -> Result<(), CudaError> {
        self.graph.launch().during("graph launch")
    }
}
