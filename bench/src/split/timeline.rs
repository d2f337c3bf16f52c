//! `--trace`: the spans of a run as a Chrome trace-event file, which Perfetto
//! (ui.perfetto.dev) and chrome://tracing open: a process per num_gpu value, a thread track
//! per device, a complete ("X") event per span.

use std::time::Duration;

use serde_json::{json, Value};
use strata_engine::ledger::DeviceId;
use strata_engine::runner::{Span, SpanKind};

/// The spans of one timed run, and what to call its process and tracks.
pub struct TracedRun {
    /// The process's name, e.g. "num_gpu 8".
    pub name: String,
    /// Track names by device index (the CPU 0, accelerator i at i + 1).
    pub devices: Vec<String>,
    pub spans: Vec<Span>,
    /// When the run started, on the spans' clock: its time 0 in the file.
    pub origin: Duration,
}

/// The device's index: its track (tid).
fn track(d: DeviceId) -> usize {
    match d {
        DeviceId::Cpu => 0,
        DeviceId::Accel(i) => i as usize + 1,
    }
}

fn micros(d: Duration) -> f64 {
    // From whole nanoseconds: 0.05, not 0.049999999999999996.
    d.as_nanos() as f64 / 1e3
}

/// The trace-event JSON of `runs`, run `i` as process `i + 1`.
pub fn chrome_trace(runs: &[TracedRun]) -> Value {
    let mut events = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let pid = i + 1;
        events.push(json!({
            "name": "process_name", "ph": "M", "pid": pid, "args": {"name": run.name}
        }));
        // Perfetto orders processes by this, not by name ("num_gpu 16" < "num_gpu 8").
        events.push(json!({
            "name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}
        }));
        for (tid, name) in run.devices.iter().enumerate() {
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}
            }));
        }
        for s in &run.spans {
            let cat = match s.kind {
                SpanKind::Compute => "compute",
                SpanKind::Transfer => "transfer",
            };
            events.push(json!({
                "name": s.what,
                "cat": cat,
                "ph": "X",
                "ts": micros(s.start.saturating_sub(run.origin)),
                "dur": micros(s.end.saturating_sub(s.start)),
                "pid": pid,
                "tid": track(s.device),
            }));
        }
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_complete_events_on_named_tracks() {
        let us = Duration::from_micros;
        let span = |device, kind, what: &str, start, end| Span {
            device,
            what: what.into(),
            kind,
            start: us(start),
            end: us(end),
        };
        let run = TracedRun {
            name: "num_gpu 16".into(),
            devices: vec!["CPU".into(), "ACCEL0".into()],
            spans: vec![
                span(DeviceId::Cpu, SpanKind::Compute, "blocks 0-14", 1000, 1500),
                span(
                    DeviceId::Accel(0),
                    SpanKind::Transfer,
                    "copy x → ACCEL0",
                    1500,
                    1502,
                ),
            ],
            origin: us(1000),
        };
        let v = chrome_trace(&[run]);
        let events = v["traceEvents"].as_array().unwrap();
        let x: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 2);
        assert_eq!(x[0]["name"], "blocks 0-14");
        assert_eq!(
            (x[0]["ts"].as_f64(), x[0]["dur"].as_f64()),
            (Some(0.0), Some(500.0))
        );
        assert_eq!(
            (x[1]["tid"].as_u64(), x[1]["cat"].as_str()),
            (Some(1), Some("transfer"))
        );
        let named = |what: &str, tid: u64| {
            events.iter().any(|e| {
                e["ph"] == "M" && e["args"]["name"] == what && e["tid"].as_u64() == Some(tid)
            })
        };
        assert!(named("CPU", 0) && named("ACCEL0", 1));
        assert!(events.iter().any(|e| e["name"] == "process_name"
            && e["args"]["name"] == "num_gpu 16"
            && e["pid"] == 1));
    }
}
