//! A timeline of the forward passes, kept only while tracing is on
//! ([`super::Runner::set_tracing`]): one [`Span`] per run of blocks, output layer and copy,
//! on the device that did the work — what a bench turns into busy, idle and transfer shares
//! and into a trace a timeline viewer opens.

use std::sync::Mutex;
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

/// The spans recorded since tracing was turned on, timed from that moment. Devices that
/// compute side by side record from their own threads.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(super) epoch: Instant,
    spans: Mutex<Vec<Span>>,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            epoch: Instant::now(),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// The spans so far, in order of their end; recording goes on.
    pub(super) fn take(&self) -> Vec<Span> {
        let mut spans = std::mem::take(&mut *self.spans.lock().unwrap_or_else(|e| e.into_inner()));
        spans.sort_by_key(|s| s.end);
        spans
    }

    fn push(&self, device: DeviceId, kind: SpanKind, what: String, start: Instant) {
        let end = Instant::now();
        let span = Span {
            device,
            what,
            kind,
            start: start.saturating_duration_since(self.epoch),
            end: end.saturating_duration_since(self.epoch),
        };
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(span);
    }
}

/// Records `what` computed by `backend` from `start` until its queued work is done: a GPU's
/// kernels run after `run` returns, so without the wait they would land in the next copy's
/// span. Nothing is waited for or recorded when tracing is off.
pub(super) fn compute<B: Backend + ?Sized>(
    trace: Option<&Recorder>,
    backend: &B,
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
    trace: Option<&Recorder>,
    to: DeviceId,
    start: Instant,
    what: impl FnOnce() -> String,
) {
    if let Some(t) = trace {
        t.push(to, SpanKind::Transfer, what(), start);
    }
}
