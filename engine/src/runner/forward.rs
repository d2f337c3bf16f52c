//! The forward pass across devices, for a batch of `n` tokens (of one sequence at positions
//! `pos..pos + n`, or rows of several sequences, each at its own position):
//!
//! ```text
//! x = token_embd[tokens]                            (on the CPU)
//! for each run of consecutive whole blocks on one device:
//!     move x there if it is elsewhere               (the one copy at a boundary)
//!     x = blocks(x)                                 (the device's backend)
//! a block whose parts sit on several devices:
//!     x += attention(x)                             (where the attention and KV cache are)
//!     h, route = ffn_input(x)                       (where the FFN is)
//!     each device holding experts: y_d = its share of ffn(h, route)
//!                                  (side by side with the FFN's device's own share)
//!     x += y_ffn + Σ y_d                            (in device order, so the sum does not
//!                                                    depend on which finished first)
//! move x to the output layer's device; logits = output(x)
//! logits back to the CPU
//! ```
//!
//! What a block computes is in the backends: `backend::host::block` (the CPU's, top to
//! bottom) and `backend::cuda::forward`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::trace::{self, Recorder};
use super::{DeviceSlot, Placement, RunError};
use crate::backend::{At, Backend, BackendError, Exchange, OwnThreads, Unit};
use crate::ledger::{DeviceId, Ledger};
use crate::model::Model;

/// How a forward pass runs.
pub(super) struct Pass<'a, 'm> {
    pub model: &'a Model<'m>,
    pub placement: &'a Placement,
    pub ledger: &'a Ledger,
    /// Devices work at the same time where they can: a block's FFN shares side by side,
    /// prefill as a pipeline (`runner/pipeline.rs`).
    pub overlap: bool,
    /// Where spans go while tracing.
    pub trace: Option<&'a Recorder>,
}

/// Where one forward call stands: the device holding the residual stream, and the units
/// waiting to go to one device in one call (a device with threads of its own is handed
/// each call, tens of µs in this VM, so a block split across devices would pay it four
/// times; queued, the end of one block and the start of the next go together).
struct Walk<'r> {
    here: DeviceId,
    queue: Option<(DeviceId, Vec<Unit>)>,
    /// Rows of the batch, and where they sit (one sequence's positions, or each row's).
    n: usize,
    at: At<'r>,
}

impl Pass<'_, '_> {
    /// Runs `tokens` where `at` puts them; the last `n_out` rows' logits end in the CPU's
    /// logits buffer.
    pub(super) fn forward(
        &self,
        devices: &mut [DeviceSlot],
        tokens: &[u32],
        at: At,
        n_out: usize,
    ) -> Result<(), RunError> {
        let (model, placement) = (self.model, self.placement);
        let n = tokens.len();
        let tr = self.trace;
        let mut w = Walk {
            here: DeviceId::Cpu,
            queue: None,
            n,
            at,
        };
        timed(
            device(devices, w.here),
            tr,
            || "embed".into(),
            |d| d.backend.embed(model, tokens),
        )?;

        let n_layer = placement.blocks.len();
        let mut start = 0;
        while start < n_layer {
            let rows = |end: usize| if end == n_layer { n_out } else { n };
            let Some(dev) = placement.blocks[start].whole() else {
                self.split_block(devices, &mut w, start, rows(start + 1))?;
                start += 1;
                continue;
            };
            let end = (start..n_layer)
                .find(|&j| placement.blocks[j].whole() != Some(dev))
                .unwrap_or(n_layer);
            let blocks = Unit::Blocks {
                blocks: start..end,
                keep: rows(end),
            };
            self.step(devices, &mut w, dev, blocks)?;
            start = end;
        }
        self.step(devices, &mut w, placement.output, Unit::Output { n_out })?;
        self.flush(devices, &mut w)?;

        // The logits come back to the host: one more explicit copy when computed elsewhere.
        if w.here != DeviceId::Cpu {
            let len = n_out * model.cfg.n_vocab;
            let (cpu, other) = pair(devices, DeviceId::Cpu, w.here);
            let logits = cpu.backend.host_logits_mut().ok_or(BackendError::Missing {
                device: DeviceId::Cpu,
                what: "logits in host memory".into(),
            })?;
            let t = Instant::now();
            other.backend.read_logits(&mut logits[..len])?;
            other.busy += t.elapsed();
            trace::transfer(tr, DeviceId::Cpu, t, || "logits → CPU".into());
            self.ledger.count_copy(DeviceId::Cpu, len as u64 * 4);
        }
        Ok(())
    }

    /// Block `i`, whose parts sit on several devices; the last `rows` rows get their FFN.
    fn split_block(
        &self,
        devices: &mut [DeviceSlot],
        w: &mut Walk,
        i: usize,
        rows: usize,
    ) -> Result<(), RunError> {
        let b = &self.placement.blocks[i];
        self.step(devices, w, b.attention, Unit::Attention { block: i })?;
        self.step(devices, w, b.ffn, Unit::FfnRoute { block: i, rows })?;
        let others = b.expert_devices();
        let local = Unit::FfnLocal { block: i, rows };
        if others.is_empty() {
            self.queue(devices, w, b.ffn, local)?;
        } else {
            self.shares(devices, w, i, &others, local)?;
        }
        // Left queued: the next block's first units on this device join it.
        self.queue(devices, w, b.ffn, Unit::FfnEnd { block: i, rows })?;
        Ok(())
    }

    /// The shares (`local`) of block `i`'s FFN, whose experts sit on the FFN's device and
    /// on `others`: the routing handed to each, the shares computed (side by side when
    /// they can), then added on the FFN's device in device order.
    fn shares(
        &self,
        devices: &mut [DeviceSlot],
        w: &mut Walk,
        i: usize,
        others: &[DeviceId],
        local: Unit,
    ) -> Result<(), RunError> {
        let (model, home, tr) = (self.model, self.placement.blocks[i].ffn, self.trace);
        let Unit::FfnLocal { rows, .. } = local else {
            unreachable!("shares are FfnLocal units")
        };
        let (n, at) = (w.n, w.at);
        // The routing must be computed before it is handed on.
        self.flush(devices, w)?;
        let mut route = vec![0.0f32; Exchange::Route.len(&model.cfg, rows)];
        let h = device(devices, home);
        let t = Instant::now();
        h.backend.export(Exchange::Route, &mut route)?;
        h.busy += t.elapsed();
        for &d in others {
            let r = device(devices, d);
            let t = Instant::now();
            r.backend.import(Exchange::Route, &route)?;
            r.busy += t.elapsed();
            trace::transfer(tr, d, t, || format!("route {i} → {d}"));
            self.ledger.count_copy(d, route.len() as u64 * 4);
        }

        // Side by side: the one device without threads of its own (if any) on this thread,
        // each other one on its own; else one after the other.
        let mut slots: Vec<&mut DeviceSlot> = devices
            .iter_mut()
            .filter(|s| s.id == home || others.contains(&s.id))
            .collect();
        let on_callers = slots
            .iter_mut()
            .filter_map(|s| s.backend.own_threads().is_none().then_some(()))
            .count();
        if self.overlap && on_callers <= 1 {
            let mut here = None;
            let mut away: Vec<(Arc<rayon::ThreadPool>, Share)> = Vec::new();
            let local = &local;
            for s in slots {
                let DeviceSlot { backend, busy, .. } = s;
                if backend.own_threads().is_none() {
                    here = Some(move || share(&mut **backend, busy, tr, (model, local, n, at)));
                } else if let Some(OwnThreads { pool, backend }) = backend.own_threads() {
                    let job = move || share(backend, busy, tr, (model, local, n, at));
                    away.push((pool, Box::new(job)));
                }
            }
            at_once(away, move || here.map_or(Ok(()), |mut f| f()))?;
        } else {
            // A device whose work is only queued (a GPU) first: its share runs while the
            // others compute theirs on this thread (unless a timeline waits for each).
            let mut slots = slots;
            if self.overlap {
                slots.sort_by_key(|s| !s.backend.queues());
            }
            for s in slots {
                share(&mut *s.backend, &mut s.busy, tr, (model, &local, n, at))?;
            }
        }

        let mut partial = vec![0.0f32; Exchange::Partial.len(&model.cfg, rows)];
        for &d in others {
            let t = Instant::now();
            device(devices, d)
                .backend
                .export(Exchange::Partial, &mut partial)?;
            let h = device(devices, home);
            h.backend.import(Exchange::Partial, &partial)?;
            h.busy += t.elapsed();
            trace::transfer(tr, home, t, || format!("experts {i} {d} → {home}"));
            self.ledger.count_copy(home, partial.len() as u64 * 4);
        }
        Ok(())
    }

    /// Moves the residual stream to `d` if it is elsewhere, then queues `unit` there.
    fn step(
        &self,
        devices: &mut [DeviceSlot],
        w: &mut Walk,
        d: DeviceId,
        unit: Unit,
    ) -> Result<(), RunError> {
        self.cross(devices, w, d)?;
        Ok(self.queue(devices, w, d, unit)?)
    }

    /// Queues `unit` for device `d`, running what was queued for another device first.
    fn queue(
        &self,
        devices: &mut [DeviceSlot],
        w: &mut Walk,
        d: DeviceId,
        unit: Unit,
    ) -> Result<(), BackendError> {
        if w.queue.as_ref().is_some_and(|(at, _)| *at != d) {
            self.flush(devices, w)?;
        }
        match &mut w.queue {
            Some((_, units)) => units.push(unit),
            None => w.queue = Some((d, vec![unit])),
        }
        Ok(())
    }

    /// Runs the queued units, if any, in one call to their device.
    fn flush(&self, devices: &mut [DeviceSlot], w: &mut Walk) -> Result<(), BackendError> {
        let Some((d, units)) = w.queue.take() else {
            return Ok(());
        };
        let what = || units.iter().map(part_name).collect::<Vec<_>>().join(", ");
        timed(device(devices, d), self.trace, what, |s| {
            s.backend.run_all(self.model, &units, w.n, w.at)
        })
    }

    /// Moves the residual stream to `to` if it is elsewhere: the one explicit copy at a
    /// device boundary, straight into or out of whichever side holds it in host memory
    /// (staged through the host only between two GPUs), after the units queued where it is.
    fn cross(
        &self,
        devices: &mut [DeviceSlot],
        w: &mut Walk,
        to: DeviceId,
    ) -> Result<(), RunError> {
        if w.here == to {
            return Ok(());
        }
        self.flush(devices, w)?;
        let len = w.n * self.model.cfg.n_embd;
        let (b, a) = pair(devices, to, w.here);
        let t = Instant::now();
        if let Some(x) = a.backend.host_x() {
            b.backend.write_x(&x[..len])?;
        } else if let Some(x) = b.backend.host_x_mut() {
            a.backend.read_x(&mut x[..len])?;
        } else {
            let mut staged = vec![0.0f32; len];
            a.backend.read_x(&mut staged)?;
            b.backend.write_x(&staged)?;
        }
        // Charged to the device read from, which waits there for a GPU's queued work.
        a.busy += t.elapsed();
        trace::transfer(self.trace, to, t, || format!("copy x → {to}"));
        self.ledger.count_copy(to, len as u64 * 4);
        w.here = to;
        Ok(())
    }
}

/// One device's share of a split FFN (`unit`, an `FfnLocal`), timed and traced as its own.
fn share<B: Backend + ?Sized>(
    backend: &mut B,
    busy: &mut Duration,
    tr: Option<&Recorder>,
    (model, unit, n, at): (&Model, &Unit, usize, At),
) -> Result<(), BackendError> {
    let st = trace::start(tr, backend)?;
    let t = Instant::now();
    backend.run(model, unit, n, at)?;
    *busy += t.elapsed();
    trace::compute(tr, backend, st, || part_name(unit))
}

/// Runs `f` on `slot`, charging its wall time to the device, and records it as a span
/// named `what` while tracing.
fn timed<T>(
    slot: &mut DeviceSlot,
    tr: Option<&Recorder>,
    what: impl FnOnce() -> String,
    f: impl FnOnce(&mut DeviceSlot) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let st = trace::start(tr, slot.backend.as_ref())?;
    let t = Instant::now();
    let out = f(slot)?;
    slot.busy += t.elapsed();
    trace::compute(tr, slot.backend.as_ref(), st, what)?;
    Ok(out)
}

/// A span's name for a part of a block.
fn part_name(unit: &Unit) -> String {
    match unit {
        Unit::Attention { block } => format!("attention {block}"),
        Unit::FfnRoute { block, .. } => format!("route {block}"),
        Unit::FfnLocal { block, .. } => format!("experts {block}"),
        Unit::FfnEnd { block, .. } => format!("ffn end {block}"),
        Unit::Blocks { blocks, .. } => format!("blocks {}-{}", blocks.start, blocks.end - 1),
        Unit::Output { .. } => "output".into(),
    }
}

/// One device's share of a split FFN, to run where it is handed.
type Share<'a> = Box<dyn FnOnce() -> Result<(), BackendError> + Send + 'a>;

/// Runs each of `away` on its device's own threads and `here` on this thread, all at once,
/// and returns when all are done. The work goes to the threads through rayon's queue, so
/// no thread is started for it (that takes longer than a small model's expert share).
fn at_once(
    mut away: Vec<(Arc<rayon::ThreadPool>, Share)>,
    here: impl FnOnce() -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let Some((pool, job)) = away.pop() else {
        return here();
    };
    let mut theirs = Ok(());
    let mine = pool.in_place_scope(|s| {
        s.spawn(|_| theirs = job());
        at_once(away, here)
    });
    mine.and(theirs)
}

/// The slots of devices `a` and `b`, which must differ.
fn pair(
    devices: &mut [DeviceSlot],
    a: DeviceId,
    b: DeviceId,
) -> (&mut DeviceSlot, &mut DeviceSlot) {
    let ai = devices.iter().position(|d| d.id == a).expect("device a");
    let bi = devices.iter().position(|d| d.id == b).expect("device b");
    if bi < ai {
        let (l, r) = devices.split_at_mut(ai);
        (&mut r[0], &mut l[bi])
    } else {
        let (l, r) = devices.split_at_mut(bi);
        (&mut l[ai], &mut r[0])
    }
}

fn device(devices: &mut [DeviceSlot], id: DeviceId) -> &mut DeviceSlot {
    devices
        .iter_mut()
        .find(|d| d.id == id)
        .expect("every placed device has a slot")
}
