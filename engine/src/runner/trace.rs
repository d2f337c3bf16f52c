//! A timeline of the forward passes, kept only while tracing is on
//! ([`super::Runner::set_tracing`]): one [`Span`] per run of blocks, output layer and copy,
//! on the device that did the work — what a bench turns into busy, idle and transfer shares
//! and into a trace a timeline viewer opens.

use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError};
use crate::ledger::DeviceId;

/// Whether a span is a device computing or a copy arriving at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Compute,
    Transfer,
}

/// One piece of work on one device, from `start` to `end` since the recorder's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub device: DeviceId,
    /// What ran: "blocks 0-7", "output", "copy x → ACCEL0", "logits → CPU".
    pub what: String,
    pub kind: SpanKind,
    pub start: Duration,
    pub end: Duration,
}

/// The spans recorded since tracing was turned on, timed from that moment.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(super) epoch: Instant,
    pub(super) spans: Vec<Span>,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            epoch: Instant::now(),
            spans: Vec::new(),
        }
    }

    fn push(&mut self, device: DeviceId, kind: SpanKind, what: String, start: Instant) {
        let end = Instant::now();
        self.spans.push(Span {
            device,
            what,
            kind,
            start: start.saturating_duration_since(self.epoch),
            end: end.saturating_duration_since(self.epoch),
        });
    }
}

/// Records `what` computed by `backend` from `start` until its queued work is done: a GPU's
/// kernels run after `run` returns, so without the wait they would land in the next copy's
/// span. Nothing is waited for or recorded when tracing is off.
pub(super) fn compute(
    trace: &mut Option<Recorder>,
    backend: &dyn Backend,
    start: Instant,
    what: impl FnOnce() -> String,
) -> Result<(), BackendError> {
    if let Some(t) = trace {
        backend.finish()?;
        t.push(backend.id(), SpanKind::Compute, what(), start);
    }
    Ok(())
}

/// Records a copy into `to` from `start` until now.
pub(super) fn transfer(
    trace: &mut Option<Recorder>,
    to: DeviceId,
    start: Instant,
    what: impl FnOnce() -> String,
) {
    if let Some(t) = trace {
        t.push(to, SpanKind::Transfer, what(), start);
    }
}
