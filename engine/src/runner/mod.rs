//! Runs the model: one backend per device of the placement (each holding its blocks' KV
//! caches and its scratch, allocated up front with the sizes [`crate::buffers`] gives), fed
//! tokens through `forward.rs` in batches of at most `n_batch`.

mod forward;
mod pipeline;
mod trace;

use std::ops::Range;
use std::time::{Duration, Instant};

use strata_kernels_cpu::GgmlType;
use thiserror::Error;

use crate::backend::host::HostBackend;
use crate::backend::{At, Backend, BackendError, Parts};
use crate::buffers::{kv_cache_bytes, kv_type_of, ScratchLayout};
use crate::ledger::{DeviceId, Ledger};
use crate::model::Model;

pub use trace::{Span, SpanKind};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "context full: {need} positions needed, the context holds {n_ctx} (raise -c/--ctx-size)"
    )]
    ContextFull { need: usize, n_ctx: usize },
    #[error("token id {id} is out of range: the vocabulary has {n_vocab} tokens")]
    BadToken { id: u32, n_vocab: usize },
    #[error("placement lists {got} blocks, the model has {expected}")]
    Placement { got: usize, expected: usize },
    #[error("option {0}")]
    Options(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Which device runs each part of each block and the output layer (final norm + output
/// projection). The token embedding lookup always runs on the CPU, where the memory map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub blocks: Vec<BlockPlace>,
    pub output: DeviceId,
}

/// Where one block's parts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlace {
    /// The attention, and the block's KV cache.
    pub attention: DeviceId,
    /// The FFN's norm, router, shared experts or dense FFN; the routed experts too unless
    /// `experts` says otherwise.
    pub ffn: DeviceId,
    /// The routed experts as ranges, one per device, covering them all in order; empty:
    /// all with the FFN.
    pub experts: Vec<(Range<usize>, DeviceId)>,
}

impl BlockPlace {
    /// The whole block on `d`.
    pub fn on(d: DeviceId) -> BlockPlace {
        BlockPlace {
            attention: d,
            ffn: d,
            experts: Vec::new(),
        }
    }

    /// The device running all of it, if one does.
    pub fn whole(&self) -> Option<DeviceId> {
        let d = self.attention;
        (self.ffn == d && self.experts.iter().all(|(_, e)| *e == d)).then_some(d)
    }

    /// The devices holding some of its routed experts, other than the FFN's, in order.
    pub fn expert_devices(&self) -> Vec<DeviceId> {
        let mut out = Vec::new();
        for (_, d) in &self.experts {
            if *d != self.ffn && !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }

    /// What device `d` holds of block `i` of `model`.
    pub fn parts_on(&self, d: DeviceId, model: &Model, i: usize) -> Parts {
        let whole = Parts::whole(model, i);
        let experts = match (&whole.experts, self.experts.is_empty()) {
            (None, _) => None,
            (Some(all), true) => (d == self.ffn).then(|| all.clone()),
            (Some(_), false) => self
                .experts
                .iter()
                .find(|(_, e)| *e == d)
                .map(|(r, _)| r.clone()),
        };
        Parts {
            attention: self.attention == d,
            ffn: self.ffn == d,
            experts,
        }
    }

    fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        [self.attention, self.ffn]
            .into_iter()
            .chain(self.experts.iter().map(|(_, d)| *d))
    }
}

impl Placement {
    /// Everything on the CPU.
    pub fn all_cpu(n_layer: usize) -> Placement {
        Placement {
            blocks: vec![BlockPlace::on(DeviceId::Cpu); n_layer],
            output: DeviceId::Cpu,
        }
    }

    /// The distinct devices used, in order of first use along the forward pass: always the
    /// CPU first (the embedding lookup runs there and the logits come back to it).
    pub fn devices(&self) -> Vec<DeviceId> {
        let mut out = vec![DeviceId::Cpu];
        let each = self.blocks.iter().flat_map(BlockPlace::devices);
        for d in each.chain(std::iter::once(self.output)) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Context length (KV cache positions).
    pub n_ctx: usize,
    /// Most tokens per forward call (prefill is cut into batches of this many).
    pub n_batch: usize,
    /// F16 (llama.cpp's default) or F32.
    pub kv_type: GgmlType,
    pub placement: Placement,
    /// Keep the logits of every position of a batch (for tests), not only the last.
    pub all_logits: bool,
    /// Devices sharing a block's FFN compute their shares at the same time (the result is
    /// the same either way: the shares are summed in a fixed order).
    pub overlap: bool,
    /// Sequences decoded side by side, each with KV caches of `n_ctx` positions of its own
    /// ([`Runner::eval_seqs`]).
    pub n_seq: usize,
}

impl RunnerOptions {
    /// The scratch each device holds for these options: batches of `n_batch` tokens, and
    /// logits for every row of one (`all_logits`) or for one row a sequence (a decode step
    /// of every sequence in one batch).
    pub fn scratch_layout(&self, cfg: &crate::config::ModelConfig) -> ScratchLayout {
        ScratchLayout::new(cfg, self.n_batch, self.n_outputs())
    }

    /// Rows of logits one forward call may compute: every row of a batch (`all_logits`), or
    /// one a sequence.
    pub fn n_outputs(&self) -> usize {
        if self.all_logits {
            self.n_batch
        } else {
            self.n_seq.min(self.n_batch)
        }
    }

    pub fn cpu(n_layer: usize, n_ctx: usize) -> RunnerOptions {
        RunnerOptions {
            n_ctx,
            n_batch: 64,
            kv_type: GgmlType::F16,
            placement: Placement::all_cpu(n_layer),
            all_logits: false,
            overlap: true,
            n_seq: 1,
        }
    }
}

/// A device of the run: its backend, and the wall time the forward passes spent on its
/// part (from the copy in to the copy out, which waits for a GPU's queued work) since the
/// runner was built.
pub struct DeviceSlot {
    pub id: DeviceId,
    pub backend: Box<dyn Backend>,
    pub busy: Duration,
}

pub struct Runner<'m> {
    model: &'m Model<'m>,
    opts: RunnerOptions,
    /// One per device of the placement, the CPU first.
    devices: Vec<DeviceSlot>,
    /// Where every buffer is reserved and the copies at device boundaries are counted.
    ledger: Ledger,
    /// Positions processed so far in each sequence (its next token's position).
    pos: Vec<usize>,
    /// Logits of the last forward call: `n_out × n_vocab`.
    n_out: usize,
    /// The timeline, while tracing is on.
    trace: Option<trace::Recorder>,
}

impl<'m> Runner<'m> {
    pub fn new(model: &'m Model<'m>, opts: RunnerOptions) -> Result<Runner<'m>, RunError> {
        let cfg = &model.cfg;
        if opts.placement.blocks.len() != cfg.n_layer {
            return Err(RunError::Placement {
                got: opts.placement.blocks.len(),
                expected: cfg.n_layer,
            });
        }
        if opts.n_ctx == 0 || opts.n_batch == 0 || opts.n_seq == 0 {
            return Err(RunError::Options(
                "n_ctx, n_batch and n_seq must be positive".into(),
            ));
        }
        if kv_type_of(opts.kv_type).is_none() {
            return Err(RunError::Options(format!(
                "KV cache type {} (only F32 and F16)",
                opts.kv_type
            )));
        }
        if let Some(d) = opts
            .placement
            .devices()
            .into_iter()
            .find(|d| *d != DeviceId::Cpu)
        {
            return Err(RunError::Options(format!(
                "the placement uses {d}: runners on accelerators are built by \
                 strata_engine::load, which copies their weights and keeps their ledger"
            )));
        }
        // The CPU alone, reading every weight from the mapped file.
        let ledger = Ledger::new();
        let mut cpu = HostBackend::new(DeviceId::Cpu, &ledger, true);
        let per_block = kv_cache_bytes(cfg, opts.n_ctx * opts.n_seq, opts.kv_type);
        for i in 0..cfg.n_layer {
            cpu.alloc_kv(model, i, (opts.n_ctx, opts.n_seq), opts.kv_type, per_block)?;
        }
        cpu.alloc_scratch(model, opts.scratch_layout(cfg))?;
        let devices = vec![DeviceSlot {
            id: DeviceId::Cpu,
            backend: Box::new(cpu),
            busy: Duration::ZERO,
        }];
        Ok(Runner::from_parts(model, opts, devices, ledger))
    }

    /// A runner over backends that hold every buffer of `opts` (allocated by
    /// [`crate::load`], checked there against the placement), the CPU's first.
    pub(crate) fn from_parts(
        model: &'m Model<'m>,
        opts: RunnerOptions,
        devices: Vec<DeviceSlot>,
        ledger: Ledger,
    ) -> Runner<'m> {
        Runner {
            model,
            pos: vec![0; opts.n_seq],
            opts,
            devices,
            ledger,
            n_out: 0,
            trace: None,
        }
    }

    pub fn model(&self) -> &Model<'m> {
        self.model
    }

    pub fn options(&self) -> &RunnerOptions {
        &self.opts
    }

    /// Positions in the (first sequence's) KV cache so far.
    pub fn pos(&self) -> usize {
        self.pos[0]
    }

    /// Positions in sequence `seq`'s KV cache so far.
    pub fn pos_of(&self, seq: usize) -> Option<usize> {
        self.pos.get(seq).copied()
    }

    /// Forgets the context of every sequence (buffers stay allocated).
    pub fn reset(&mut self) {
        self.pos.fill(0);
        for d in &mut self.devices {
            d.backend.reset();
        }
    }

    /// Bytes this runner allocated for KV caches, per device.
    pub fn kv_bytes(&self, dev: DeviceId) -> u64 {
        let cells = self.opts.n_ctx * self.opts.n_seq;
        let per = kv_cache_bytes(&self.model.cfg, cells, self.opts.kv_type);
        self.opts
            .placement
            .blocks
            .iter()
            .filter(|b| b.attention == dev)
            .count() as u64
            * per
    }

    /// The devices of the run, the CPU first.
    pub fn devices(&self) -> &[DeviceSlot] {
        &self.devices
    }

    /// Turns the timeline on (from now: spans are timed from this moment, earlier ones are
    /// dropped) or off. Off by default. A GPU's work is timed by events in its stream, so
    /// tracing does not wait for it and the schedule traced is the one that runs untraced.
    pub fn set_tracing(&mut self, on: bool) {
        self.trace = on.then(trace::Recorder::new);
    }

    /// The spans recorded since tracing was turned on or since the last call, in order of
    /// their end (empty when tracing is off). Tracing stays on. Waits for a GPU to reach
    /// the marks its spans were recorded with.
    pub fn take_spans(&mut self) -> Result<Vec<Span>, RunError> {
        match &self.trace {
            Some(t) => Ok(t.take()?),
            None => Ok(Vec::new()),
        }
    }

    /// The moment the spans are timed from (`None` when tracing is off).
    pub fn trace_epoch(&self) -> Option<Instant> {
        self.trace.as_ref().map(|t| t.epoch)
    }

    /// Feeds `tokens` (any number; batched internally) at the current position and returns
    /// the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], RunError> {
        self.check(0, tokens)?;
        self.feed(0, tokens, None)?;
        Ok(self.last_logits())
    }

    /// Feeds `tokens` and returns the logits of every one (`tokens.len() × n_vocab`).
    /// Needs `all_logits`.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RunError> {
        if !self.opts.all_logits {
            return Err(RunError::Options("eval_all needs all_logits".into()));
        }
        self.check(0, tokens)?;
        let mut out = Vec::with_capacity(tokens.len() * self.model.cfg.n_vocab);
        self.feed(0, tokens, Some(&mut out))?;
        Ok(out)
    }

    /// Feeds several sequences at once: each entry's tokens to its sequence (`seq <
    /// n_seq`), in order; returns each entry's last-row logits (`n_vocab` each). An
    /// entry is cut as [`eval`](Runner::eval) cuts a prompt (batches of `n_batch`, across a
    /// layer split micro-batches), and across a split the entries' micro-batches flow
    /// through the devices as a pipeline:
    /// while the second device runs one sequence's tokens, the first runs the next's
    /// (one device at a time with `overlap` off, the same arithmetic either way). A
    /// sequence may appear in several entries; its tokens reach its caches in order.
    pub fn eval_seqs(&mut self, entries: &[(usize, &[u32])]) -> Result<Vec<Vec<f32>>, RunError> {
        let n_vocab = self.model.cfg.n_vocab;
        if self.one_step(entries) {
            return self.step(entries);
        }
        let all_logits = self.opts.all_logits;
        let split = pipeline::applies(&self.opts.placement, &mut self.devices);
        // Each entry's micro-batches (cut as `feed` cuts a prompt), at the positions its
        // sequence will have reached.
        let mut pos = self.pos.clone();
        let mut mbs = Vec::new();
        for &(seq, tokens) in entries {
            let at = pos.get(seq).copied().ok_or_else(|| {
                RunError::Options(format!(
                    "sequence {seq}: the runner has {} (raise --parallel)",
                    self.opts.n_seq
                ))
            })?;
            self.check_at(at, tokens)?;
            if tokens.is_empty() {
                return Err(RunError::Options(format!("sequence {seq}: no tokens")));
            }
            let len = match split {
                true => pipeline::micro_batch(tokens.len(), self.opts.n_batch),
                false => self.opts.n_batch,
            };
            // The entry's last row's logits come back; with `all_logits` every row's are
            // computed (the scratch is laid out so).
            let cut = pipeline::cut(tokens, (seq, pos[seq]), len, false);
            mbs.extend(cut.into_iter().map(|mut mb| {
                if all_logits {
                    mb.n_out = mb.tokens.len();
                }
                mb
            }));
            pos[seq] += tokens.len();
        }
        let mut out = Vec::with_capacity(entries.len());
        let (pass, devices) = self.pass();
        if split && pass.overlap && mbs.len() > 1 {
            let logits = pass.pipelined(devices, &mbs)?;
            let mut at = 0;
            for mb in mbs.iter().filter(|mb| mb.logits) {
                at += mb.n_out * n_vocab;
                out.push(logits[at - n_vocab..at].to_vec());
            }
        } else {
            for mb in &mbs {
                let n_out = mb.n_out;
                pass.forward(devices, mb.tokens, mb.at, n_out)?;
                if mb.logits {
                    let host = devices[0]
                        .backend
                        .host_logits()
                        .expect("the CPU's backend holds its logits in host memory");
                    out.push(host[(n_out - 1) * n_vocab..n_out * n_vocab].to_vec());
                }
            }
        }
        self.pos = pos;
        Ok(out)
    }

    /// Whether `entries` are one decode step of several sequences that one batch takes: a
    /// token each, each of its own sequence.
    fn one_step(&self, entries: &[(usize, &[u32])]) -> bool {
        let mut seen = vec![false; self.opts.n_seq];
        entries.len() > 1
            && entries.iter().all(|&(seq, t)| {
                t.len() == 1 && seq < seen.len() && !std::mem::replace(&mut seen[seq], true)
            })
    }

    /// One decode step of several sequences ([`Runner::one_step`]): their tokens as the rows
    /// of one batch (at most as many as the scratch has rows of logits for), so each weight
    /// is read once for all of them; each row attends to its own sequence's cache. Across a
    /// layer split the batch passes the devices in turn (one micro-batch: cutting it would
    /// read the weights once a part).
    fn step(&mut self, entries: &[(usize, &[u32])]) -> Result<Vec<Vec<f32>>, RunError> {
        let n_vocab = self.model.cfg.n_vocab;
        let mut rows = Vec::with_capacity(entries.len());
        let mut tokens = Vec::with_capacity(entries.len());
        for &(seq, t) in entries {
            self.check(seq, t)?;
            rows.push((seq, self.pos[seq]));
            tokens.push(t[0]);
        }
        let per_call = self.opts.n_outputs();
        let mut out = Vec::with_capacity(entries.len());
        let (pass, devices) = self.pass();
        for (rows, tokens) in rows.chunks(per_call).zip(tokens.chunks(per_call)) {
            let n = tokens.len();
            pass.forward(devices, tokens, At::Rows(rows), n)?;
            let host = devices[0]
                .backend
                .host_logits()
                .expect("the CPU's backend holds its logits in host memory");
            out.extend(
                host[..n * n_vocab]
                    .chunks_exact(n_vocab)
                    .map(<[f32]>::to_vec),
            );
        }
        for &(seq, _) in entries {
            self.pos[seq] += 1;
        }
        Ok(out)
    }

    /// Sequence `to` continues from the first `len` positions of sequence `from` (its KV
    /// caches copied on every device): a prompt evaluated once, several continuations.
    pub fn copy_seq(&mut self, from: usize, to: usize, len: usize) -> Result<(), RunError> {
        let n_seq = self.opts.n_seq;
        if from.max(to) >= n_seq {
            return Err(RunError::Options(format!(
                "sequence {}: the runner has {n_seq} (raise --parallel)",
                from.max(to)
            )));
        }
        if len > self.pos[from] {
            return Err(RunError::Options(format!(
                "sequence {from} holds {} positions, not {len}",
                self.pos[from]
            )));
        }
        for d in &mut self.devices {
            d.backend.copy_seq(from, to, len)?;
        }
        self.pos[to] = len;
        Ok(())
    }

    /// The forward pass's view of this runner, and its devices.
    fn pass(&mut self) -> (forward::Pass<'_, '_>, &mut [DeviceSlot]) {
        let opts = &self.opts;
        let pass = forward::Pass {
            model: self.model,
            placement: &opts.placement,
            ledger: &self.ledger,
            overlap: opts.overlap,
            trace: self.trace.as_ref(),
        };
        (pass, &mut self.devices)
    }

    /// Runs `tokens` of sequence `seq` in batches, appending every row's logits to `all` if
    /// given. Across a layer split the batches are micro-batches
    /// ([`pipeline::micro_batch`]), run as a pipeline when `overlap` is on and one device at
    /// a time when off (the same arithmetic either way).
    fn feed(
        &mut self,
        seq: usize,
        tokens: &[u32],
        mut all: Option<&mut Vec<f32>>,
    ) -> Result<(), RunError> {
        let n_vocab = self.model.cfg.n_vocab;
        let (all_logits, n_batch, start) = (self.opts.all_logits, self.opts.n_batch, self.pos[seq]);
        let (pass, devices) = self.pass();
        let split = pipeline::applies(pass.placement, devices);
        let mb = if split {
            pipeline::micro_batch(tokens.len(), n_batch)
        } else {
            n_batch
        };
        let rows_out = |n: usize| if all_logits { n } else { 1 };
        let mut n_out = 0;
        if split && pass.overlap && tokens.len() > mb {
            let mbs = pipeline::cut(tokens, (seq, start), mb, all_logits);
            let logits = pass.pipelined(devices, &mbs)?;
            n_out = mbs[mbs.len() - 1].n_out;
            let keep = n_out * n_vocab;
            let host = devices[0]
                .backend
                .host_logits_mut()
                .ok_or(BackendError::Missing {
                    device: DeviceId::Cpu,
                    what: "logits in host memory".into(),
                })?;
            host[..keep].copy_from_slice(&logits[logits.len() - keep..]);
            if let Some(out) = all {
                out.extend_from_slice(&logits);
            }
        } else {
            let mut at = start;
            for chunk in tokens.chunks(mb) {
                n_out = rows_out(chunk.len());
                pass.forward(devices, chunk, At::Seq { seq, pos: at }, n_out)?;
                at += chunk.len();
                if let Some(out) = all.as_deref_mut() {
                    let host = devices[0]
                        .backend
                        .host_logits()
                        .expect("the CPU's backend holds its logits in host memory");
                    out.extend_from_slice(&host[..chunk.len() * n_vocab]);
                }
            }
        }
        self.n_out = n_out;
        self.pos[seq] += tokens.len();
        Ok(())
    }

    fn check(&self, seq: usize, tokens: &[u32]) -> Result<(), RunError> {
        self.check_at(self.pos[seq], tokens)
    }

    /// `tokens` are in the vocabulary and fit a sequence that holds `pos` positions.
    fn check_at(&self, pos: usize, tokens: &[u32]) -> Result<(), RunError> {
        let n_vocab = self.model.cfg.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(RunError::BadToken { id, n_vocab });
        }
        let need = pos + tokens.len();
        if need > self.opts.n_ctx {
            return Err(RunError::ContextFull {
                need,
                n_ctx: self.opts.n_ctx,
            });
        }
        Ok(())
    }

    /// The logits always come back to the CPU's (host) memory.
    fn host_logits(&self) -> &[f32] {
        self.devices[0]
            .backend
            .host_logits()
            .expect("the CPU's backend holds its logits in host memory")
    }

    fn last_logits(&self) -> &[f32] {
        let n_vocab = self.model.cfg.n_vocab;
        let logits = self.host_logits();
        &logits[(self.n_out - 1) * n_vocab..self.n_out * n_vocab]
    }
}
