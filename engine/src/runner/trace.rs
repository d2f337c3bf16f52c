//! A timeline of the forward passes, kept only while tracing is on
//! ([`super::Runner::set_tracing`]): one [`Span`] per run of blocks, output layer and copy,
//! on the device that did the work — what a bench turns into busy, idle and transfer shares
//! and into a trace a timeline viewer opens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError, QueueMark};
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
/// compute side by side record from their own threads; a device that queues its work (a
/// GPU) records marks in its queue, resolved into times when the spans are taken.
pub(crate) struct Recorder {
    pub(super) epoch: Instant,
    spans: Mutex<Vec<Span>>,
    queued: Mutex<Vec<Queued>>,
}

/// A span whose ends are marks in a device's queue.
struct Queued {
    device: DeviceId,
    what: String,
    start: Box<dyn QueueMark>,
    end: Box<dyn QueueMark>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            epoch: Instant::now(),
            spans: Mutex::new(Vec::new()),
            queued: Mutex::new(Vec::new()),
        }
    }

    /// The spans so far, in order of their end; recording goes on. Waits for the queued
    /// devices to reach the marks recorded so far.
    pub(super) fn take(&self) -> Result<Vec<Span>, BackendError> {
        let queued = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()));
        let mut spans = std::mem::take(&mut *self.spans.lock().unwrap_or_else(|e| e.into_inner()));
        for q in queued {
            spans.push(self.span(
                q.device,
                SpanKind::Compute,
                q.what,
                q.start.reached()?,
                q.end.reached()?,
            ));
        }
        spans.sort_by_key(|s| s.end);
        Ok(spans)
    }

    fn span(
        &self,
        device: DeviceId,
        kind: SpanKind,
        what: String,
        start: Instant,
        end: Instant,
    ) -> Span {
        Span {
            device,
            what,
            kind,
            start: start.saturating_duration_since(self.epoch),
            end: end.saturating_duration_since(self.epoch),
        }
    }

    fn push(&self, device: DeviceId, kind: SpanKind, what: String, start: Instant) {
        let span = self.span(device, kind, what, start, Instant::now());
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(span);
    }
}

/// When a traced piece of work began: the host's clock, or where the device queues its
/// work (a GPU) a mark in its queue.
pub(super) enum Start {
    At(Instant),
    Mark(Box<dyn QueueMark>),
}

/// The start of `backend`'s next piece of work, for [`compute`]: a mark in its queue where
/// it has one and tracing is on, else now.
pub(super) fn start<B: Backend + ?Sized>(
    trace: Option<&Recorder>,
    backend: &B,
) -> Result<Start, BackendError> {
    Ok(match trace.map(|_| backend.mark()).transpose()?.flatten() {
        Some(m) => Start::Mark(m),
        None => Start::At(Instant::now()),
    })
}

/// Records `what` computed by `backend` since `start`: up to now for a device whose calls
/// return when the work is done, or between two marks in the queue of one that runs it
/// later (a GPU: its kernels run after `run` returns), so that tracing waits for nothing
/// and the schedule traced is the one run. Nothing is recorded when tracing is off.
pub(super) fn compute<B: Backend + ?Sized>(
    trace: Option<&Recorder>,
    backend: &B,
    start: Start,
    what: impl FnOnce() -> String,
) -> Result<(), BackendError> {
    let Some(t) = trace else {
        return Ok(());
    };
    match (start, backend.mark()?) {
        (Start::Mark(start), Some(end)) => {
            let q = Queued {
                device: backend.id(),
                what: what(),
                start,
                end,
            };
            t.queued.lock().unwrap_or_else(|e| e.into_inner()).push(q);
        }
        (Start::At(at), _) => t.push(backend.id(), SpanKind::Compute, what(), at),
        (Start::Mark(_), None) => {
            return Err(BackendError::Unsupported(format!(
                "{} marked its queue at a span's start, not at its end",
                backend.id()
            )))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark the device reached at a fixed instant.
    struct At(Instant);

    impl QueueMark for At {
        fn reached(&self) -> Result<Instant, BackendError> {
            Ok(self.0)
        }
    }

    #[test]
    fn queued_spans_take_their_marks_times_and_sort_with_the_others() {
        let r = Recorder::new();
        let ms = |n| r.epoch + Duration::from_millis(n);
        let gpu = DeviceId::Accel(0);
        r.queued.lock().unwrap().push(Queued {
            device: gpu,
            what: "blocks 0-3".into(),
            start: Box::new(At(ms(2))),
            end: Box::new(At(ms(5))),
        });
        // A host span that ends now, after the queued one's end.
        std::thread::sleep(Duration::from_millis(6));
        r.push(DeviceId::Cpu, SpanKind::Transfer, "copy".into(), ms(1));
        let spans = r.take().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            (spans[0].device, spans[0].kind, spans[0].what.as_str()),
            (gpu, SpanKind::Compute, "blocks 0-3")
        );
        assert_eq!(
            (spans[0].start, spans[0].end),
            (Duration::from_millis(2), Duration::from_millis(5))
        );
        assert_eq!(spans[1].device, DeviceId::Cpu);
        assert!(spans[1].end >= Duration::from_millis(6));
        // Taken: nothing left.
        assert!(r.take().unwrap().is_empty());
    }
}
