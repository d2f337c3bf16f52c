//! The host backend: computes with the CPU kernels in host memory. It serves the CPU
//! itself, which reads weights from the mapped file except the matrices its kernels read
//! faster repacked, and CPU devices posing as GPUs, which copy every weight they run (as an
//! upload would) and so exercise the split with a GPU's memory rules.

mod block;
mod scratch;
mod weights;

pub(crate) use weights::pieces;

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_kernels_cpu::ops::{self, KvCache, LatentCache};
use strata_kernels_cpu::{isa, packed, GgmlType};

use crate::backend::interface::{
    At, Backend, BackendError, Exchange, Holdings, OwnThreads, Parts, Source, Unit,
};
use crate::buffers::{kv_type_of, ScratchLayout};
use crate::ledger::{BufferKind, DeviceId, Ledger, Reservation};
use crate::model::{BlockWeights, Matrix, Model};
use block::Cache;
use scratch::Scratch;
use weights::HostWeights;

pub struct HostBackend {
    id: DeviceId,
    ledger: Ledger,
    /// Reads the weights it has no copy of from the mapped file (the CPU). A posing device
    /// does not: it copies all of its weights.
    maps_file: bool,
    weights: HostWeights,
    /// Each block's caches, one a sequence.
    caches: BTreeMap<usize, Vec<Cache>>,
    /// The parts it holds of each block it holds any of, and whether it holds them as its
    /// own copy (else it reads them from the mapped file).
    parts: BTreeMap<usize, (Parts, bool)>,
    scratch: Option<Scratch>,
    /// Reservations of the buffers above and of the mapped bytes it reads.
    held: Vec<Reservation>,
    /// Threads of its own (a posing device that computes beside the CPU); `None`: the
    /// process's pool.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl HostBackend {
    pub fn new(id: DeviceId, ledger: &Ledger, maps_file: bool) -> HostBackend {
        HostBackend {
            id,
            ledger: ledger.clone(),
            maps_file,
            weights: HostWeights::default(),
            caches: BTreeMap::new(),
            parts: BTreeMap::new(),
            scratch: None,
            held: Vec::new(),
            pool: None,
        }
    }

    /// Computes on `threads` threads of its own from now on.
    pub fn own_threads(&mut self, threads: usize, name: &str) -> Result<(), BackendError> {
        let prefix = name.to_string();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{prefix}-{i}"))
            .build()
            .map_err(|e| BackendError::Unsupported(format!("{name}'s threads: {e}")))?;
        self.pool = Some(Arc::new(pool));
        Ok(())
    }

    /// Reserves `bytes` of the mapped file that this device reads in place.
    fn map(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), BackendError> {
        let r = self
            .ledger
            .reserve(self.id, BufferKind::Weights, bytes, what)?;
        self.held.push(r);
        Ok(())
    }

    /// [`Backend::run`] on the threads it is called on.
    fn run_here(
        &mut self,
        model: &Model,
        unit: &Unit,
        n: usize,
        at: At,
    ) -> Result<(), BackendError> {
        let cfg = &model.cfg;
        let id = self.id;
        let segs = at.segments(n)?;
        let s = self
            .scratch
            .as_mut()
            .ok_or_else(|| missing(id, "scratch"))?;
        let weights = |i: usize| -> Result<Held, BackendError> {
            match self.weights.block(i) {
                Some(c) => Ok(Held::Copy(Box::new(c))),
                None if self.maps_file => Ok(Held::Mapped(&model.blocks[i])),
                None => Err(missing(id, format!("weights of block {i}"))),
            }
        };
        let caches = &mut self.caches;
        // Block i's caches, one a sequence (a sequence past them is named where a row
        // reaches for it, `block::seq_cache`).
        macro_rules! cache {
            ($i:expr) => {
                caches
                    .get_mut(&$i)
                    .ok_or_else(|| missing(id, format!("KV cache of block {}", $i)))?
            };
        }
        match unit {
            Unit::Blocks {
                blocks: range,
                keep,
            } => {
                let rope = cfg.rope();
                for i in range.clone() {
                    let ffn_rows = if i + 1 == range.end { *keep } else { n };
                    let (w, c) = (weights(i)?, cache!(i));
                    block::cpu_block(cfg, &w, s, c, &rope, (n, ffn_rows), &segs)?;
                }
                Ok(())
            }
            Unit::Attention { block: i } => {
                let (w, c, rope) = (weights(*i)?, cache!(*i), cfg.rope());
                block::on_worker(|| block::attention(cfg, &w, s, c, &rope, n, &segs))
            }
            Unit::FfnRoute { block: i, rows } => {
                let w = weights(*i)?;
                block::on_worker(|| block::ffn_route(cfg, &w, s, n, *rows))
            }
            Unit::FfnLocal { block: i, rows } => {
                let w = weights(*i)?;
                let (parts, copied) = self
                    .parts
                    .get(i)
                    .ok_or_else(|| missing(id, format!("any part of block {i}")))?;
                let held = parts.experts.clone().unwrap_or_default();
                let nx = cfg.moe.as_ref().map_or(0, |m| m.n_expert);
                let local = block::Local {
                    stack: if *copied { held.clone() } else { 0..nx },
                    experts: held,
                    ffn: parts.ffn,
                };
                block::on_worker(|| block::ffn_local(cfg, &w, s, *rows, &local))
            }
            Unit::FfnEnd { rows, .. } => {
                block::ffn_end(cfg, s, n, *rows);
                Ok(())
            }
            Unit::Output { n_out } => {
                let (norm, w_out) = match self.weights.output() {
                    Some(o) => o,
                    None if self.maps_file => (&model.output_norm[..], model.output),
                    None => return Err(missing(id, "output layer")),
                };
                let (e, n_out) = (cfg.n_embd, *n_out);
                let xn = &mut s.xn[..n_out * e];
                ops::rms_norm_rows(&s.x[(n - n_out) * e..n * e], norm, cfg.rms_eps, xn);
                let logits = &mut s.logits[..n_out * cfg.n_vocab];
                block::mul_new(&w_out, &mut s.acts, xn, n_out, logits)
            }
        }
    }

    fn scratch(&self) -> Result<&Scratch, BackendError> {
        self.scratch
            .as_ref()
            .ok_or_else(|| missing(self.id, "scratch"))
    }

    fn scratch_mut(&mut self) -> Result<&mut Scratch, BackendError> {
        self.scratch
            .as_mut()
            .ok_or_else(|| missing(self.id, "scratch"))
    }
}

/// Why a host buffer the ledger allowed was not had: the allocator returned nothing.
const REFUSED: &str = "the system refused the memory";

/// A block's caches of sequences `from` and `to`, both among `caches`: the first to read,
/// the second to write ([`Backend::copy_seq`]); `None` when they are the same.
fn source_and_target<T>(caches: &mut [T], from: usize, to: usize) -> Option<(&T, &mut T)> {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => {
            let (lo, hi) = caches.split_at_mut(to);
            Some((&lo[from], &mut hi[0]))
        }
        std::cmp::Ordering::Greater => {
            let (lo, hi) = caches.split_at_mut(from);
            Some((&hi[0], &mut lo[to]))
        }
    }
}

fn missing(device: DeviceId, what: impl Into<String>) -> BackendError {
    BackendError::Missing {
        device,
        what: what.into(),
    }
}

/// A block's weights where a host device holds them: its own copy, or the mapped file.
enum Held<'a> {
    Copy(Box<BlockWeights<'a>>),
    Mapped(&'a BlockWeights<'a>),
}

impl<'a> std::ops::Deref for Held<'a> {
    type Target = BlockWeights<'a>;
    fn deref(&self) -> &BlockWeights<'a> {
        match self {
            Held::Copy(w) => w,
            Held::Mapped(w) => w,
        }
    }
}

/// Whether the CPU kernels read `m` repacked (see `strata_kernels_cpu::packed`).
fn packs(m: &Matrix) -> bool {
    packed::supports(m.ty, isa::active())
}

impl Backend for HostBackend {
    fn id(&self) -> DeviceId {
        self.id
    }

    fn hold_block(&mut self, src: &Source, i: usize, parts: &Parts) -> Result<(), BackendError> {
        let mut packed_here = false;
        src.model.blocks[i].each_matrix(|name, m| {
            packed_here |= packs(m) && parts.holds(&format!("blk.{i}.{name}"));
        });
        if self.maps_file && !packed_here {
            let bytes = weights::pieces(src, i, parts)
                .iter()
                .map(|p| p.cost.bytes)
                .sum();
            self.map(bytes, || format!("mapped weights of block {i}"))?;
            self.parts.insert(i, (parts.clone(), false));
            return Ok(());
        }
        self.weights.copy_block(src, self.id, i, parts)?;
        self.parts.insert(i, (parts.clone(), true));
        Ok(())
    }

    fn hold_output(&mut self, src: &Source) -> Result<(), BackendError> {
        if self.maps_file && !packs(&src.model.output) {
            let bytes = src.plan_model.output_bytes(true);
            return self.map(bytes, || "mapped output layer weights".into());
        }
        self.weights.copy_output(src, self.id)
    }

    fn hold_embedding(&mut self, src: &Source) -> Result<(), BackendError> {
        // A tied output held packed also serves the lookup; the file's copy is not kept.
        let served = src.model.cfg.tied_output && self.weights.output().is_some();
        let bytes = src
            .plan_model
            .tensors_of(crate::plan::Role::Embedding)
            .filter(|t| !(served && t.name == "token_embd.weight"))
            .map(|t| t.bytes)
            .sum();
        self.map(bytes, || "mapped token embedding".into())
    }

    fn alloc_kv(
        &mut self,
        model: &Model,
        i: usize,
        (n_ctx, n_seq): (usize, usize),
        kv_type: GgmlType,
        bytes: u64,
    ) -> Result<(), BackendError> {
        let cfg = &model.cfg;
        let t = kv_type_of(kv_type).ok_or_else(|| {
            BackendError::Unsupported(format!("KV cache type {kv_type} (only F32 and F16)"))
        })?;
        let what = format!("KV cache of block {i}");
        let r = self
            .ledger
            .reserve(self.id, BufferKind::Kv, bytes, || what.clone())?;
        let one = || match &cfg.mla {
            Some(m) => LatentCache::try_new(t, n_ctx, m.row_width()).map(Cache::Latent),
            None => KvCache::try_new(t, n_ctx, cfg.n_head_kv, cfg.head_dim).map(Cache::Kv),
        };
        let caches = (0..n_seq)
            .map(|_| one())
            .collect::<Option<Vec<Cache>>>()
            .ok_or_else(|| {
                self.ledger
                    .refusal(self.id, BufferKind::Kv, &what, bytes, REFUSED)
            })?;
        self.held.push(r);
        self.caches.insert(i, caches);
        Ok(())
    }

    fn alloc_scratch(&mut self, _: &Model, layout: ScratchLayout) -> Result<(), BackendError> {
        let bytes = layout.bytes();
        let r = self
            .ledger
            .reserve(self.id, BufferKind::Scratch, bytes, || "scratch".into())?;
        let scratch = Scratch::try_new(layout).ok_or_else(|| {
            self.ledger
                .refusal(self.id, BufferKind::Scratch, "scratch", bytes, REFUSED)
        })?;
        self.scratch = Some(scratch);
        self.held.push(r);
        Ok(())
    }

    fn embed(&mut self, model: &Model, tokens: &[u32]) -> Result<(), BackendError> {
        let emb = match self.weights.output() {
            Some((_, m)) if model.cfg.tied_output && m.packed => m,
            _ => model.token_embd,
        };
        let s = self
            .scratch
            .as_mut()
            .ok_or_else(|| missing(self.id, "scratch"))?;
        block::embed(emb, tokens, &mut s.x[..tokens.len() * model.cfg.n_embd])
    }

    fn run(&mut self, model: &Model, unit: &Unit, n: usize, at: At) -> Result<(), BackendError> {
        self.run_all(model, std::slice::from_ref(unit), n, at)
    }

    fn run_all(
        &mut self,
        model: &Model,
        units: &[Unit],
        n: usize,
        at: At,
    ) -> Result<(), BackendError> {
        let each = |b: &mut Self| units.iter().try_for_each(|u| b.run_here(model, u, n, at));
        match self.pool.take() {
            Some(pool) => {
                let out = pool.install(|| each(self));
                self.pool = Some(pool);
                out
            }
            None => each(self),
        }
    }

    fn export(&self, what: Exchange, out: &mut [f32]) -> Result<(), BackendError> {
        let s = self.scratch()?;
        match what {
            Exchange::Route => {
                let (xe, wk) = s.layout.route_cuts(out.len());
                let (xn, rest) = out.split_at_mut(xe);
                let (weights, ids) = rest.split_at_mut(wk);
                xn.copy_from_slice(&s.xn[..xe]);
                weights.copy_from_slice(&s.route_weights[..wk]);
                for (o, &id) in ids.iter_mut().zip(&s.route_ids[..wk]) {
                    *o = f32::from_bits(id);
                }
            }
            Exchange::Partial => out.copy_from_slice(&s.out[..out.len()]),
        }
        Ok(())
    }

    fn import(&mut self, what: Exchange, data: &[f32]) -> Result<(), BackendError> {
        let s = self.scratch_mut()?;
        match what {
            Exchange::Route => {
                let (xe, wk) = s.layout.route_cuts(data.len());
                let (xn, rest) = data.split_at(xe);
                let (weights, ids) = rest.split_at(wk);
                s.xn[..xe].copy_from_slice(xn);
                s.route_weights[..wk].copy_from_slice(weights);
                for (o, &id) in s.route_ids[..wk].iter_mut().zip(ids) {
                    *o = id.to_bits();
                }
            }
            Exchange::Partial => ops::add(&mut s.out[..data.len()], data),
        }
        Ok(())
    }

    fn read_x(&self, x: &mut [f32]) -> Result<(), BackendError> {
        x.copy_from_slice(&self.scratch()?.x[..x.len()]);
        Ok(())
    }

    fn write_x(&mut self, x: &[f32]) -> Result<(), BackendError> {
        let s = self.scratch_mut()?;
        s.x[..x.len()].copy_from_slice(x);
        Ok(())
    }

    fn host_x(&self) -> Option<&[f32]> {
        self.scratch.as_ref().map(|s| &s.x[..])
    }

    fn host_x_mut(&mut self) -> Option<&mut [f32]> {
        self.scratch.as_mut().map(|s| &mut s.x[..])
    }

    fn read_logits(&self, out: &mut [f32]) -> Result<(), BackendError> {
        out.copy_from_slice(&self.scratch()?.logits[..out.len()]);
        Ok(())
    }

    fn host_logits(&self) -> Option<&[f32]> {
        self.scratch.as_ref().map(|s| &s.logits[..])
    }

    fn host_logits_mut(&mut self) -> Option<&mut [f32]> {
        self.scratch.as_mut().map(|s| &mut s.logits[..])
    }

    fn reset(&mut self) {
        for c in self.caches.values_mut().flatten() {
            c.clear();
        }
    }

    fn copy_seq(&mut self, from: usize, to: usize, len: usize) -> Result<(), BackendError> {
        for (i, caches) in &mut self.caches {
            let seq = from.max(to);
            if seq >= caches.len() {
                let what = format!("KV cache of block {i}, sequence {seq}");
                return Err(missing(self.id, what));
            }
            if let Some((src, dst)) = source_and_target(caches, from, to) {
                dst.copy_from(src, len)?;
            }
        }
        Ok(())
    }

    fn own_threads(&mut self) -> Option<OwnThreads<'_>> {
        // Driven from a thread outside the process's pool, a backend without threads of its
        // own would queue its work on that pool, which may be the very thread waiting.
        let pool = self.pool.clone()?;
        Some(OwnThreads {
            pool,
            backend: self,
        })
    }

    fn holdings(&self) -> Holdings {
        Holdings {
            blocks: self.weights.blocks(),
            output: self.weights.output().is_some(),
            kv: self.caches.keys().copied().collect(),
            scratch: self.scratch.as_ref().map(|s| s.layout),
        }
    }
}
