//! Prefill as a pipeline across a layer split: the prompt is cut into micro-batches that
//! flow through the devices' runs of blocks one after another, so that while the second
//! device runs its blocks on micro-batch i, the first already runs its blocks on i + 1.
//!
//! ```text
//! CPU    | embed+blocks mb0 | mb1 | mb2 | mb3 |
//! ACCEL0 |                  | mb0 | mb1 | mb2 | mb3 + output |
//! ```
//!
//! Each device has a thread that runs its stages; a stage's output (the residual stream of
//! one micro-batch) goes to the next stage's device as a message. Every stage takes its
//! micro-batches in order, so each block's KV cache receives the positions in order, and
//! the arithmetic is that of the same micro-batches run one device at a time (the
//! runner's `overlap` off): the results are the same, bit for bit.

use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Instant;

use super::forward::Pass;
use super::trace;
use super::{DeviceSlot, Placement, RunError};
use crate::backend::{At, Backend, BackendError, Unit};
use crate::ledger::DeviceId;

/// What a stage runs, in order, on its device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The embedding lookup of the micro-batch's tokens (the first stage, on the CPU).
    Embed,
    Blocks(Range<usize>),
    Output,
}

/// Consecutive steps on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stage {
    device: DeviceId,
    steps: Vec<Step>,
}

/// The stages of a placement whose blocks are each whole on one device; `None` when a
/// block's parts are split (those blocks exchange within the layer instead) or when only
/// one device runs anything.
fn stages(placement: &Placement) -> Option<Vec<Stage>> {
    let mut out = vec![Stage {
        device: DeviceId::Cpu,
        steps: vec![Step::Embed],
    }];
    let mut push = |device: DeviceId, step: Step| match out.last_mut() {
        Some(s) if s.device == device => match (s.steps.last_mut(), &step) {
            (Some(Step::Blocks(r)), Step::Blocks(b)) if r.end == b.start => r.end = b.end,
            _ => s.steps.push(step),
        },
        _ => out.push(Stage {
            device,
            steps: vec![step],
        }),
    };
    for (i, b) in placement.blocks.iter().enumerate() {
        push(b.whole()?, Step::Blocks(i..i + 1));
    }
    push(placement.output, Step::Output);
    (out.len() > 1).then_some(out)
}

/// Micro-batches a prompt of `len` tokens is cut into (at most `n_batch` tokens each):
/// about eight, so that a pipeline of two stages is busy 8/9 of the time, but not below 16
/// tokens, where the products would read their weights for too few rows.
pub(super) fn micro_batch(len: usize, n_batch: usize) -> usize {
    len.div_ceil(8).max(16).min(n_batch)
}

/// One micro-batch: its tokens, where they sit (a sequence and the position of the first),
/// the rows of logits its output layer computes (its last, or all of them), and whether
/// they come back.
#[derive(Debug, Clone, Copy)]
pub(super) struct MicroBatch<'t> {
    pub tokens: &'t [u32],
    pub at: At<'t>,
    pub n_out: usize,
    pub logits: bool,
}

/// `tokens` of sequence `seq` from position `pos` cut into micro-batches of `len`: the last
/// one's logits wanted, or every row's of every one with `all_logits`.
pub(super) fn cut(
    tokens: &[u32],
    (seq, pos): (usize, usize),
    len: usize,
    all_logits: bool,
) -> Vec<MicroBatch<'_>> {
    let n = tokens.len().div_ceil(len);
    tokens
        .chunks(len)
        .enumerate()
        .map(|(k, c)| MicroBatch {
            tokens: c,
            at: At::Seq {
                seq,
                pos: pos + k * len,
            },
            n_out: if all_logits { c.len() } else { 1 },
            logits: all_logits || k + 1 == n,
        })
        .collect()
}

/// One message between stages: stage `stage` is to run micro-batch `mb` on `x`.
struct Msg {
    stage: usize,
    mb: usize,
    x: Vec<f32>,
}

/// Whether `placement` pipelines on `devices`: a layer split of whole blocks
/// ([`splits_blocks`]), on devices of which all but one compute on threads of their own or
/// on hardware of their own (a GPU, driven from a thread of its own); the one left runs on
/// the caller's threads.
pub(super) fn applies(placement: &Placement, devices: &mut [DeviceSlot]) -> bool {
    let on_callers = devices
        .iter_mut()
        .filter_map(|d| (!moves(&mut *d.backend)).then_some(()))
        .count();
    splits_blocks(placement) && on_callers <= 1
}

/// Whether `placement`'s whole blocks run on two devices or more: with every block on one
/// device (the embedding alone elsewhere) cutting the batch gains nothing, and on a GPU
/// would only read its weights once per micro-batch.
fn splits_blocks(placement: &Placement) -> bool {
    let runs_blocks = |s: &Stage| s.steps.iter().any(|s| matches!(s, Step::Blocks(_)));
    stages(placement).is_some_and(|s| s.iter().filter(|s| runs_blocks(s)).count() > 1)
}

/// Whether a thread of the pipeline other than the caller's can run `b`'s stages.
fn moves(b: &mut dyn Backend) -> bool {
    b.own_threads().is_some() || b.driven().is_some()
}

impl Pass<'_, '_> {
    /// Runs the micro-batches `mbs` through the stages, each stage taking them in order (so
    /// each sequence's reach its caches in order); returns the logits of those that want
    /// them (every row's, or the last row's), in order.
    pub(super) fn pipelined(
        &self,
        devices: &mut [DeviceSlot],
        mbs: &[MicroBatch],
    ) -> Result<Vec<f32>, RunError> {
        let stages = stages(self.placement).ok_or_else(|| {
            RunError::Options("this placement has no layer split to pipeline".into())
        })?;
        let mut inboxes: Vec<(Sender<Msg>, Option<Receiver<Msg>>)> = devices
            .iter()
            .map(|_| {
                let (tx, rx) = channel();
                (tx, Some(rx))
            })
            .collect();
        let ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let slot_of = |id: DeviceId| ids.iter().position(|&d| d == id);
        let (logits_tx, logits_rx) = channel::<(usize, Vec<f32>)>();
        let mut jobs = Vec::new();
        let mut inline: Option<DeviceJob<dyn Backend>> = None;
        for (d, slot) in devices.iter_mut().enumerate() {
            let mine: Vec<usize> = (0..stages.len())
                .filter(|&s| stages[s].device == slot.id)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let next: Vec<Option<Sender<Msg>>> = mine
                .iter()
                .map(|&s| {
                    let to = stages.get(s + 1)?.device;
                    Some(inboxes[slot_of(to)?].0.clone())
                })
                .collect();
            let inbox = inboxes[d].1.take().expect("one thread per device");
            let (busy, logits) = (&mut slot.busy, logits_tx.clone());
            let backend = &mut slot.backend;
            // The device without threads or hardware of its own runs on this thread (on the
            // caller's pool); each other one on a thread that drives its own threads, or its
            // GPU (queueing a micro-batch's kernels and waiting for them).
            if !moves(&mut **backend) {
                if inline.is_some() {
                    return Err(RunError::Options(
                        "two devices of the pipeline compute on the same threads".into(),
                    ));
                }
                inline = Some(DeviceJob {
                    backend: &mut **backend,
                    busy,
                    mine,
                    next,
                    inbox,
                    logits,
                });
            } else if let Some(backend) = match backend.own_threads().is_some() {
                true => backend.own_threads().map(|o| o.backend),
                false => backend.driven(),
            } {
                jobs.push(DeviceJob {
                    backend,
                    busy,
                    mine,
                    next,
                    inbox,
                    logits,
                });
            }
        }
        drop(logits_tx);
        drop(inboxes);
        let (stages, mbs) = (&stages, &mbs);
        let results: Vec<Result<(), BackendError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|job| scope.spawn(move || job.run(self, stages, mbs)))
                .collect();
            let here = inline.map(|job| job.run(self, stages, mbs));
            handles
                .into_iter()
                .map(|h| h.join().expect("a pipeline thread panicked"))
                .chain(here)
                .collect()
        });
        for r in results {
            r?;
        }
        let mut got: Vec<(usize, Vec<f32>)> = logits_rx.into_iter().collect();
        got.sort_by_key(|(mb, _)| *mb);
        Ok(got.into_iter().flat_map(|(_, l)| l).collect())
    }
}

/// One device's share of the pipeline.
struct DeviceJob<'s, B: Backend + ?Sized> {
    backend: &'s mut B,
    busy: &'s mut std::time::Duration,
    /// The stages it runs, ascending, and where each one's output goes.
    mine: Vec<usize>,
    next: Vec<Option<Sender<Msg>>>,
    inbox: Receiver<Msg>,
    logits: Sender<(usize, Vec<f32>)>,
}

impl<B: Backend + ?Sized> DeviceJob<'_, B> {
    fn run(self, p: &Pass, stages: &[Stage], mbs: &[MicroBatch]) -> Result<(), BackendError> {
        let model = p.model;
        let (e, n_vocab, n_layer) = (model.cfg.n_embd, model.cfg.n_vocab, model.cfg.n_layer);
        // The first stage's micro-batches need no message; the others wait for theirs.
        let mut first_done = 0;
        let firsts = if self.mine.first() == Some(&0) {
            mbs.len()
        } else {
            0
        };
        let mut waiting: Vec<Msg> = Vec::new();
        let mut left = self.mine.len() * mbs.len();
        while left > 0 {
            while let Ok(m) = self.inbox.try_recv() {
                waiting.push(m);
            }
            // Later stages first (they drain the pipe), each stage's micro-batches in order.
            let pick = waiting
                .iter()
                .enumerate()
                .max_by_key(|(_, m)| (m.stage, std::cmp::Reverse(m.mb)))
                .map(|(i, _)| i);
            let msg = match pick {
                Some(i) => waiting.swap_remove(i),
                None if first_done < firsts => {
                    first_done += 1;
                    Msg {
                        stage: 0,
                        mb: first_done - 1,
                        x: Vec::new(),
                    }
                }
                None => self.inbox.recv().map_err(|_| broken())?,
            };
            let (s, mb) = (msg.stage, msg.mb);
            let (tokens, at) = (mbs[mb].tokens, mbs[mb].at);
            let (n, n_out) = (tokens.len(), mbs[mb].n_out);
            let t = Instant::now();
            if !msg.x.is_empty() {
                self.backend.write_x(&msg.x)?;
                trace::transfer(p.trace, self.backend.id(), t, || format!("x of mb {mb}"));
            }
            let ran = trace::start(p.trace, &*self.backend)?;
            for step in &stages[s].steps {
                match step {
                    Step::Embed => self.backend.embed(model, tokens)?,
                    Step::Blocks(r) => {
                        let keep = if r.end == n_layer { n_out } else { n };
                        let unit = Unit::Blocks {
                            blocks: r.clone(),
                            keep,
                        };
                        self.backend.run(model, &unit, n, at)?;
                    }
                    Step::Output => {
                        self.backend.run(model, &Unit::Output { n_out }, n, at)?;
                    }
                }
            }
            trace::compute(p.trace, &*self.backend, ran, || {
                format!("stage {s}, mb {mb}")
            })?;
            let k = self.mine.iter().position(|&m| m == s).expect("own stage");
            match &self.next[k] {
                Some(to) => {
                    let mut x = vec![0.0f32; n * e];
                    self.backend.read_x(&mut x)?;
                    p.ledger
                        .count_copy(stages[s + 1].device, x.len() as u64 * 4);
                    to.send(Msg {
                        stage: s + 1,
                        mb,
                        x,
                    })
                    .map_err(|_| broken())?;
                }
                None => {
                    // The last stage: the micro-batch's logits, where wanted.
                    if mbs[mb].logits {
                        let mut l = vec![0.0f32; n_out * n_vocab];
                        self.backend.read_logits(&mut l)?;
                        if self.backend.id() != DeviceId::Cpu {
                            p.ledger.count_copy(DeviceId::Cpu, l.len() as u64 * 4);
                        }
                        let _ = self.logits.send((mb, l));
                    }
                }
            }
            *self.busy += t.elapsed();
            left -= 1;
        }
        Ok(())
    }
}

fn broken() -> BackendError {
    BackendError::Unsupported("a device of the pipeline stopped (see its error)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::BlockPlace;

    /// Whole blocks on `blocks`' devices.
    fn layers(blocks: &[DeviceId], output: DeviceId) -> Placement {
        Placement {
            blocks: blocks.iter().map(|&d| BlockPlace::on(d)).collect(),
            output,
        }
    }

    #[test]
    fn stages_of_a_layer_split() {
        let (c, a) = (DeviceId::Cpu, DeviceId::Accel(0));
        let p = layers(&[c, c, a, a], a);
        let s = stages(&p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].steps, vec![Step::Embed, Step::Blocks(0..2)]);
        assert_eq!(s[1].steps, vec![Step::Blocks(2..4), Step::Output]);
        // Back to the CPU for the output: a third stage there.
        let p = layers(&[a, a, c], c);
        let s = stages(&p).unwrap();
        assert_eq!(
            s.iter().map(|s| s.device).collect::<Vec<_>>(),
            vec![c, a, c]
        );
        assert_eq!(s[2].steps, vec![Step::Blocks(2..3), Step::Output]);
        assert!(stages(&Placement::all_cpu(3)).is_none());
        let mut split = layers(&[c, a], a);
        split.blocks[1] = BlockPlace {
            attention: a,
            ffn: a,
            experts: vec![(0..4, a), (4..8, c)],
        };
        assert!(stages(&split).is_none());
    }

    #[test]
    fn only_blocks_on_two_devices_pipeline() {
        let (c, a) = (DeviceId::Cpu, DeviceId::Accel(0));
        assert!(splits_blocks(&layers(&[c, c, a, a], a)));
        assert!(splits_blocks(&layers(&[a, a, c], c)));
        // Every block on the accelerator, only the embedding on the CPU: two stages, but
        // one runs blocks.
        assert!(stages(&layers(&[a, a, a], a)).is_some());
        assert!(!splits_blocks(&layers(&[a, a, a], a)));
        assert!(!splits_blocks(&Placement::all_cpu(3)));
    }

    #[test]
    fn micro_batches() {
        assert_eq!(micro_batch(512, 512), 64);
        assert_eq!(micro_batch(100, 64), 16);
        assert_eq!(micro_batch(13, 8), 8);
        assert_eq!(micro_batch(4096, 256), 256);
    }
}
