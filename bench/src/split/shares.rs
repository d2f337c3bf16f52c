//! Where the wall time of a phase went, from the runner's spans: each device's busy
//! (computing), transfer (copies arriving) and idle shares, and the share of the time in
//! which two or more devices computed at once (the overlap a pipelined schedule would
//! show; the runner takes turns, so today it is near zero).

use std::time::Duration;

use serde::Serialize;
use strata_engine::ledger::DeviceId;
use strata_engine::runner::{Span, SpanKind};

/// One timed run: from its start to its end, on the spans' clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

impl Window {
    fn len(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

/// One device's time in a window: each is the length of a union of spans (nested or
/// touching spans count once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub busy: Duration,
    pub transfer: Duration,
    /// Busy or transferring.
    pub active: Duration,
}

/// `intervals` clipped to `w`, sorted and merged where they touch or overlap.
fn merged(
    intervals: impl Iterator<Item = (Duration, Duration)>,
    w: Window,
) -> Vec<(Duration, Duration)> {
    let mut v: Vec<_> = intervals
        .map(|(s, e)| (s.max(w.start), e.min(w.end)))
        .filter(|(s, e)| s < e)
        .collect();
    v.sort();
    let mut out: Vec<(Duration, Duration)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn total(intervals: &[(Duration, Duration)]) -> Duration {
    intervals.iter().map(|(s, e)| *e - *s).sum()
}

/// `device`'s busy, transfer and active time in `w`.
pub fn usage(spans: &[Span], device: DeviceId, w: Window) -> Usage {
    let of = |kind: Option<SpanKind>| {
        let picked = spans
            .iter()
            .filter(|s| s.device == device && kind.is_none_or(|k| s.kind == k))
            .map(|s| (s.start, s.end));
        total(&merged(picked, w))
    };
    Usage {
        busy: of(Some(SpanKind::Compute)),
        transfer: of(Some(SpanKind::Transfer)),
        active: of(None),
    }
}

/// The time in `w` during which two or more devices computed: a sweep over the ends of
/// each device's merged compute spans (so a device's own nested spans never count as two).
pub fn overlap(spans: &[Span], w: Window) -> Duration {
    let mut devices: Vec<DeviceId> = spans.iter().map(|s| s.device).collect();
    devices.sort();
    devices.dedup();
    // (time, +1 at a start / −1 at an end); at equal times ends come first, so spans that
    // merely touch do not overlap.
    let mut events: Vec<(Duration, i32)> = Vec::new();
    for d in devices {
        let compute = spans
            .iter()
            .filter(|s| s.device == d && s.kind == SpanKind::Compute)
            .map(|s| (s.start, s.end));
        for (s, e) in merged(compute, w) {
            events.push((s, 1));
            events.push((e, -1));
        }
    }
    events.sort();
    let (mut depth, mut last, mut out) = (0, Duration::ZERO, Duration::ZERO);
    for (t, step) in events {
        if depth >= 2 {
            out += t - last;
        }
        depth += step;
        last = t;
    }
    out
}

/// A device's shares of the wall time (each 0..1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceShares {
    pub name: String,
    pub busy: f64,
    pub idle: f64,
    pub transfer: f64,
}

/// The spans of every timed run of a phase, added up run by run.
pub struct PhaseTime {
    devices: Vec<DeviceId>,
    usage: Vec<Usage>,
    overlap: Duration,
    wall: Duration,
}

impl PhaseTime {
    pub fn new(devices: Vec<DeviceId>) -> PhaseTime {
        let usage = vec![Usage::default(); devices.len()];
        PhaseTime {
            devices,
            usage,
            overlap: Duration::ZERO,
            wall: Duration::ZERO,
        }
    }

    pub fn add(&mut self, spans: &[Span], w: Window) {
        for (d, u) in self.devices.iter().zip(&mut self.usage) {
            let add = usage(spans, *d, w);
            u.busy += add.busy;
            u.transfer += add.transfer;
            u.active += add.active;
        }
        self.overlap += overlap(spans, w);
        self.wall += w.len();
    }

    /// Each device's shares (named by `names`, in the order of the devices given to
    /// [`PhaseTime::new`]), and the overlap share.
    pub fn shares(&self, names: &[String]) -> (Vec<DeviceShares>, f64) {
        let wall = self.wall.as_secs_f64();
        let share = |d: Duration| {
            if wall > 0.0 {
                d.as_secs_f64() / wall
            } else {
                0.0
            }
        };
        let devices = self
            .usage
            .iter()
            .zip(names)
            .map(|(u, name)| DeviceShares {
                name: name.clone(),
                busy: share(u.busy),
                idle: 1.0 - share(u.active),
                transfer: share(u.transfer),
            })
            .collect();
        (devices, share(self.overlap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: DeviceId = DeviceId::Cpu;
    const A0: DeviceId = DeviceId::Accel(0);
    const A1: DeviceId = DeviceId::Accel(1);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn span(device: DeviceId, kind: SpanKind, start: u64, end: u64) -> Span {
        Span {
            device,
            what: String::new(),
            kind,
            start: ms(start),
            end: ms(end),
        }
    }

    fn compute(device: DeviceId, start: u64, end: u64) -> Span {
        span(device, SpanKind::Compute, start, end)
    }

    fn transfer(device: DeviceId, start: u64, end: u64) -> Span {
        span(device, SpanKind::Transfer, start, end)
    }

    fn window(start: u64, end: u64) -> Window {
        Window {
            start: ms(start),
            end: ms(end),
        }
    }

    #[test]
    fn nested_and_adjacent_spans_count_once() {
        // 0-10 holds 2-5 (nested); 10-15 touches it; 20-30 stands apart.
        let spans = [
            compute(CPU, 0, 10),
            compute(CPU, 2, 5),
            compute(CPU, 10, 15),
            compute(CPU, 20, 30),
            transfer(CPU, 15, 17),
            transfer(CPU, 16, 18),
        ];
        let u = usage(&spans, CPU, window(0, 40));
        assert_eq!(u.busy, ms(25));
        assert_eq!(u.transfer, ms(3));
        assert_eq!(u.active, ms(28));
        assert_eq!(usage(&spans, A0, window(0, 40)), Usage::default());
    }

    #[test]
    fn spans_are_clipped_to_the_window() {
        let spans = [compute(CPU, 0, 10), compute(CPU, 30, 50)];
        assert_eq!(usage(&spans, CPU, window(5, 40)).busy, ms(15));
        assert_eq!(usage(&spans, CPU, window(10, 30)).busy, ms(0));
    }

    #[test]
    fn overlap_is_the_time_two_or_more_devices_compute() {
        // CPU 0-10 and 20-30; ACCEL0 5-25 (overlaps 5 + 5); ACCEL1 8-9 inside both.
        let spans = [
            compute(CPU, 0, 10),
            compute(CPU, 20, 30),
            compute(A0, 5, 25),
            compute(A1, 8, 9),
        ];
        assert_eq!(overlap(&spans, window(0, 30)), ms(10));
        // Clipped: only 20-25 is left in 12-40.
        assert_eq!(overlap(&spans, window(12, 40)), ms(5));
    }

    #[test]
    fn taking_turns_is_no_overlap() {
        // Adjacent spans of different devices; a device's own nested spans; a transfer
        // during another device's compute. None of them is two devices computing.
        let spans = [
            compute(CPU, 0, 10),
            compute(CPU, 2, 8),
            compute(A0, 10, 20),
            transfer(A0, 5, 10),
            compute(CPU, 20, 30),
        ];
        assert_eq!(overlap(&spans, window(0, 30)), ms(0));
    }

    #[test]
    fn shares_add_up_over_runs() {
        let mut t = PhaseTime::new(vec![CPU, A0]);
        // Run 1, 0-40: CPU busy 0-20, a copy into ACCEL0 20-22, ACCEL0 busy 22-38.
        t.add(
            &[
                compute(CPU, 0, 20),
                transfer(A0, 20, 22),
                compute(A0, 22, 38),
            ],
            window(0, 40),
        );
        // Run 2, 100-160: both busy 100-130 (30 of overlap), idle after.
        t.add(
            &[compute(CPU, 100, 130), compute(A0, 100, 130)],
            window(100, 160),
        );
        let (shares, overlap) = t.shares(&["CPU".into(), "ACCEL0".into()]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Wall 100 ms: CPU busy 50; ACCEL0 busy 46 and copying 2.
        assert_eq!(shares[0].name, "CPU");
        assert!(close(shares[0].busy, 0.5) && close(shares[0].idle, 0.5));
        assert!(close(shares[0].transfer, 0.0));
        assert!(close(shares[1].busy, 0.46) && close(shares[1].transfer, 0.02));
        assert!(close(shares[1].idle, 0.52));
        assert!(close(overlap, 0.3));
    }
}
