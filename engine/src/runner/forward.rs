//! The forward pass across devices, for a batch of `n` tokens at positions `pos..pos + n`:
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
use std::time::Instant;

use super::trace::{self, Recorder};
use super::{BlockPlace, DeviceSlot, Placement, RunError};
use crate::backend::{BackendError, Exchange, Unit};
use crate::ledger::{DeviceId, Ledger};
use crate::model::Model;

/// How a forward pass runs.
pub(super) struct Pass<'a, 'm> {
    pub model: &'a Model<'m>,
    pub placement: &'a Placement,
    pub ledger: &'a Ledger,
    /// Devices that share a block's FFN compute their shares at the same time.
    pub overlap: bool,
    /// Where spans go while tracing.
    pub trace: Option<&'a Recorder>,
}

impl Pass<'_, '_> {
    pub(super) fn forward(
        &self,
        devices: &mut [DeviceSlot],
        tokens: &[u32],
        pos: usize,
        n_out: usize,
    ) -> Result<(), RunError> {
        let (model, placement) = (self.model, self.placement);
        let n = tokens.len();
        let len = n * model.cfg.n_embd;
        let mut here = DeviceId::Cpu;
        let tr = self.trace;
        timed(
            device(devices, here),
            tr,
            || "embed".into(),
            |d| d.backend.embed(model, tokens),
        )?;

        // Units on one device in a row go to it in one call ([`Queue`]).
        let mut queue = Queue::default();
        let n_layer = placement.blocks.len();
        let mut start = 0;
        while start < n_layer {
            let rows = |end: usize| if end == n_layer { n_out } else { n };
            let Some(dev) = placement.blocks[start].whole() else {
                let rows = rows(start + 1);
                self.split_block(devices, &mut queue, &mut here, start, (n, rows), pos)?;
                start += 1;
                continue;
            };
            let end = (start..n_layer)
                .find(|&j| placement.blocks[j].whole() != Some(dev))
                .unwrap_or(n_layer);
            self.cross(devices, &mut queue, &mut here, dev, len, pos)?;
            let blocks = Unit::Blocks {
                blocks: start..end,
                keep: rows(end),
            };
            self.put(devices, &mut queue, dev, blocks, (n, pos))?;
            start = end;
        }

        self.cross(devices, &mut queue, &mut here, placement.output, len, pos)?;
        self.put(devices, &mut queue, here, Unit::Output { n_out }, (n, pos))?;
        self.flush(devices, &mut queue, n, pos)?;

        // The logits come back to the host: one more explicit copy when computed elsewhere.
        if here != DeviceId::Cpu {
            let len = n_out * model.cfg.n_vocab;
            let (cpu, other) = pair(devices, DeviceId::Cpu, here);
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

    /// Block `i`, whose parts sit on several devices, on `n` rows of which the last `rows`
    /// get their FFN.
    fn split_block(
        &self,
        devices: &mut [DeviceSlot],
        queue: &mut Queue,
        here: &mut DeviceId,
        i: usize,
        (n, rows): (usize, usize),
        pos: usize,
    ) -> Result<(), RunError> {
        let (model, b): (&Model, &BlockPlace) = (self.model, &self.placement.blocks[i]);
        let len = n * model.cfg.n_embd;
        self.cross(devices, queue, here, b.attention, len, pos)?;
        self.put(
            devices,
            queue,
            b.attention,
            Unit::Attention { block: i },
            (n, pos),
        )?;
        self.cross(devices, queue, here, b.ffn, len, pos)?;
        self.put(
            devices,
            queue,
            b.ffn,
            Unit::FfnRoute { block: i, rows },
            (n, pos),
        )?;

        let others = b.expert_devices();
        let local = Unit::FfnLocal { block: i, rows };
        if others.is_empty() {
            self.put(devices, queue, b.ffn, local, (n, pos))?;
        } else {
            self.shares(devices, queue, i, (n, rows), pos)?;
        }
        // Left queued: the next block's first units on this device join it.
        let end = Unit::FfnEnd { block: i, rows };
        self.put(devices, queue, b.ffn, end, (n, pos))?;
        Ok(())
    }

    /// The shares of block `i`'s FFN whose experts sit on several devices: the routing
    /// handed to each, the shares computed (side by side when they can), then added on the
    /// FFN's device in device order.
    fn shares(
        &self,
        devices: &mut [DeviceSlot],
        queue: &mut Queue,
        i: usize,
        (n, rows): (usize, usize),
        pos: usize,
    ) -> Result<(), RunError> {
        let (model, b): (&Model, &BlockPlace) = (self.model, &self.placement.blocks[i]);
        let tr = self.trace;
        let others = b.expert_devices();
        let local = Unit::FfnLocal { block: i, rows };
        // The routing must be computed before it is handed on.
        self.flush(devices, queue, n, pos)?;
        {
            let mut route = vec![0.0f32; Exchange::Route.len(&model.cfg, rows)];
            let h = device(devices, b.ffn);
            let t = Instant::now();
            h.backend.export(Exchange::Route, &mut route)?;
            h.busy += t.elapsed();
            for &d in &others {
                let r = device(devices, d);
                let t = Instant::now();
                r.backend.import(Exchange::Route, &route)?;
                r.busy += t.elapsed();
                trace::transfer(tr, d, t, || format!("route {i} → {d}"));
                self.ledger.count_copy(d, route.len() as u64 * 4);
            }
        }
        if self.overlap && !others.is_empty() && self.side_by_side(devices, b.ffn, &others) {
            // The device without threads of its own computes on this thread; each other
            // one on a thread that drives its own.
            let (home, rest) = take(devices, b.ffn);
            let slots =
                std::iter::once(home).chain(rest.into_iter().filter(|s| others.contains(&s.id)));
            let mut here: Vec<Box<dyn FnOnce() -> Result<(), BackendError> + '_>> = Vec::new();
            let mut away: Vec<(Arc<rayon::ThreadPool>, Share)> = Vec::new();
            let local = &local;
            for s in slots {
                let DeviceSlot { backend, busy, .. } = s;
                match backend.threads() {
                    None => here.push(Box::new(move || {
                        let t = Instant::now();
                        let out = backend.run(model, local, n, pos);
                        *busy += t.elapsed();
                        trace::compute(tr, backend.as_ref(), t, || part_name(local))?;
                        out
                    })),
                    Some(pool) => {
                        let Some(b) = backend.sendable() else {
                            continue;
                        };
                        away.push((
                            pool,
                            Box::new(move || {
                                let t = Instant::now();
                                let out = b.run(model, local, n, pos);
                                *busy += t.elapsed();
                                trace::compute(tr, &*b, t, || part_name(local))?;
                                out
                            }),
                        ));
                    }
                }
            }
            at_once(away, move || here.into_iter().try_for_each(|f| f()))?;
        } else {
            for &d in others.iter().chain(std::iter::once(&b.ffn)) {
                self.put(devices, queue, d, local.clone(), (n, pos))?;
                self.flush(devices, queue, n, pos)?;
            }
        }
        let mut partial = vec![0.0f32; Exchange::Partial.len(&model.cfg, rows)];
        for &d in &others {
            let t = Instant::now();
            device(devices, d)
                .backend
                .export(Exchange::Partial, &mut partial)?;
            let h = device(devices, b.ffn);
            h.backend.import(Exchange::Partial, &partial)?;
            h.busy += t.elapsed();
            trace::transfer(tr, b.ffn, t, || format!("experts {i} {d} → {}", b.ffn));
            self.ledger.count_copy(b.ffn, partial.len() as u64 * 4);
        }
        Ok(())
    }

    /// Queues `unit` for device `d`, running what was queued for another device first.
    fn put(
        &self,
        devices: &mut [DeviceSlot],
        queue: &mut Queue,
        d: DeviceId,
        unit: Unit,
        (n, pos): (usize, usize),
    ) -> Result<(), BackendError> {
        if queue.0.as_ref().is_some_and(|(at, _)| *at != d) {
            self.flush(devices, queue, n, pos)?;
        }
        match &mut queue.0 {
            Some((_, units)) => units.push(unit),
            None => queue.0 = Some((d, vec![unit])),
        }
        Ok(())
    }

    /// Runs the queued units, if any, in one call to their device.
    fn flush(
        &self,
        devices: &mut [DeviceSlot],
        queue: &mut Queue,
        n: usize,
        pos: usize,
    ) -> Result<(), BackendError> {
        let Some((d, units)) = queue.0.take() else {
            return Ok(());
        };
        let what = || units.iter().map(part_name).collect::<Vec<_>>().join(", ");
        timed(device(devices, d), self.trace, what, |s| {
            s.backend.run_all(self.model, &units, n, pos)
        })
    }

    /// Whether the devices sharing an FFN (`home` and `others`) can compute at the same
    /// time: all but at most one on threads of their own.
    fn side_by_side(
        &self,
        devices: &mut [DeviceSlot],
        home: DeviceId,
        others: &[DeviceId],
    ) -> bool {
        devices
            .iter_mut()
            .filter(|s| s.id == home || others.contains(&s.id))
            .filter_map(|s| s.backend.sendable().is_none().then_some(()))
            .count()
            <= 1
    }

    /// Moves the residual stream (`len` floats) to `to` if it is elsewhere: the one explicit
    /// copy at a device boundary, straight into or out of whichever side holds it in host
    /// memory (staged through the host only between two GPUs). The copy is charged to the
    /// device it reads from (which waits there for a GPU's queued work).
    fn cross(
        &self,
        devices: &mut [DeviceSlot],
        queue: &mut Queue,
        here: &mut DeviceId,
        to: DeviceId,
        len: usize,
        pos: usize,
    ) -> Result<(), RunError> {
        if *here == to {
            return Ok(());
        }
        self.flush(devices, queue, len / self.model.cfg.n_embd, pos)?;
        let (b, a) = pair(devices, to, *here);
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
        *here = to;
        Ok(())
    }
}

/// Runs `f` on `slot`, charging its wall time to the device, and records it as a span
/// named `what` while tracing.
fn timed<T>(
    slot: &mut DeviceSlot,
    tr: Option<&Recorder>,
    what: impl FnOnce() -> String,
    f: impl FnOnce(&mut DeviceSlot) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let t = Instant::now();
    let out = f(slot)?;
    trace::compute(tr, slot.backend.as_ref(), t, what)?;
    slot.busy += t.elapsed();
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

/// Units waiting to go to one device in one call: a device with threads of its own is
/// handed each call (tens of µs in this VM), so a block split across devices would pay it
/// four times; queued, the end of one block and the start of the next go together.
#[derive(Default)]
struct Queue(Option<(DeviceId, Vec<Unit>)>);

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

/// The slot of `id`, and every other slot.
fn take(devices: &mut [DeviceSlot], id: DeviceId) -> (&mut DeviceSlot, Vec<&mut DeviceSlot>) {
    let mut home = None;
    let mut rest = Vec::new();
    for s in devices.iter_mut() {
        if s.id == id {
            home = Some(s);
        } else {
            rest.push(s);
        }
    }
    (home.expect("every placed device has a slot"), rest)
}

fn device(devices: &mut [DeviceSlot], id: DeviceId) -> &mut DeviceSlot {
    devices
        .iter_mut()
        .find(|d| d.id == id)
        .expect("every placed device has a slot")
}
