//! The interface every backend implements, its error, and what it is given to load from.

use std::ops::Range;

use strata_kernels_cpu::ops::OpError;
use strata_kernels_cpu::{FormatError, GgmlType};
use strata_kernels_cuda::CudaError;
use thiserror::Error;

use crate::buffers::ScratchLayout;
use crate::gguf::{GgufError, GgufFile};
use crate::ledger::{AllocError, DeviceId, Ledger};
use crate::model::Model;
use crate::plan::PlanModel;

/// What went wrong on a device: a refused allocation (which the loader answers by
/// re-planning), a weight that cannot be copied or bound, a kernel's error.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("tensor `{name}`: {why}")]
    Tensor { name: String, why: String },
    /// The device cannot run what it was given (said at load, not at the first token).
    #[error("{0}")]
    Unsupported(String),
    #[error("{device} holds no {what}")]
    Missing { device: DeviceId, what: String },
}

/// A piece of the model a backend holds weights for and runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// Transformer blocks (consecutive, all on this device). `keep`: how many of the
    /// batch's last rows are read after these blocks — all of them, except when the range
    /// ends the model and the output layer reads only its rows; then the last block may
    /// leave the others' FFN undone (as llama.cpp does), their hidden state being unused.
    Blocks {
        blocks: Range<usize>,
        keep: usize,
    },
    /// The parts of a block whose parts sit on several devices, in this order: `Attention`
    /// (`x += attention(rms_norm(x))`, on the device holding it and the KV cache);
    /// `FfnRoute` (the FFN's input: the last `rows` rows of `x` normalised, and the experts
    /// each picks) on the device holding the FFN; `FfnLocal` (the share of the FFN the
    /// device holds: its routed experts, and the shared experts or dense FFN where the FFN
    /// is) on every device holding some, each given the routing ([`Exchange::Route`]);
    /// then the others' shares added on the FFN's device ([`Exchange::Partial`]) in device
    /// order, and `FfnEnd` (`x += ffn`) there.
    Attention {
        block: usize,
    },
    FfnRoute {
        block: usize,
        rows: usize,
    },
    FfnLocal {
        block: usize,
        rows: usize,
    },
    FfnEnd {
        block: usize,
        rows: usize,
    },
    /// Final norm and output projection on the last `n_out` rows of the batch.
    Output {
        n_out: usize,
    },
}

/// What moves between the devices that share a block's FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The FFN's input and routing, from the FFN's device to one holding experts: per row
    /// the normalised input (`n_embd`), then per row the `k` weights, then per row the `k`
    /// expert ids (each id's bits as an f32's, so that one f32 buffer carries all).
    Route,
    /// One device's share of the FFN (`n_embd` per row). Imported, it is *added* to the
    /// FFN's device's own share.
    Partial,
}

impl Exchange {
    /// Values of `rows` rows.
    pub fn len(self, cfg: &crate::config::ModelConfig, rows: usize) -> usize {
        let k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_used);
        match self {
            Exchange::Route => rows * (cfg.n_embd + 2 * k),
            Exchange::Partial => rows * cfg.n_embd,
        }
    }
}

/// Which parts of a block a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// The attention (and so the block's KV cache).
    pub attention: bool,
    /// The FFN's norm, router, shared experts or dense FFN.
    pub ffn: bool,
    /// The routed experts it holds (`None`: none, or a dense block).
    pub experts: Option<Range<usize>>,
}

impl Parts {
    /// Every part of block `i` of `model`.
    pub fn whole(model: &Model, i: usize) -> Parts {
        let nx = model.cfg.moe.as_ref().map_or(0, |m| m.n_expert);
        Parts {
            attention: true,
            ffn: true,
            experts: model.cfg.is_moe_block(i).then_some(0..nx),
        }
    }

    /// Whether the block tensor `name` (its full name, `blk.3.attn_q.weight`) belongs to a
    /// part held here (for an expert stack: some of its experts).
    pub fn holds(&self, name: &str) -> bool {
        match crate::plan::Part::of(name).map(|(_, p)| p) {
            Some(crate::plan::Part::Experts) => self.experts.is_some(),
            Some(crate::plan::Part::Attention) => self.attention,
            _ => self.ffn,
        }
    }
}

/// Where a backend's weights come from while loading: the mapped file, the plan's tensor
/// list (with the bytes each costs) and the bound model; buffers are reserved on `ledger`.
pub struct Source<'a, 'm> {
    pub file: &'a GgufFile,
    pub plan_model: &'a PlanModel,
    pub model: &'a Model<'m>,
    pub ledger: &'a Ledger,
}

/// What a backend holds now (for checks against the plan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Blocks whose weights it holds its own copy of (the CPU reads the others from the
    /// mapped file).
    pub blocks: Vec<usize>,
    /// It holds its own copy of the output layer.
    pub output: bool,
    /// Blocks whose KV caches it holds.
    pub kv: Vec<usize>,
    /// Its scratch, if allocated.
    pub scratch: Option<ScratchLayout>,
}

/// One device's compute: the same operations on every kind of device.
pub trait Backend {
    fn id(&self) -> DeviceId;

    /// Takes the weights of `parts` of block `i` (copies them, uploads them, or reserves
    /// the mapped bytes it will read).
    fn hold_block(&mut self, src: &Source, i: usize, parts: &Parts) -> Result<(), BackendError>;

    /// Takes the output layer's weights.
    fn hold_output(&mut self, src: &Source) -> Result<(), BackendError>;

    /// Takes the token embedding for the lookup, after [`Backend::hold_output`] if the
    /// output layer is here (a tied output may serve both). Only a host can look up rows.
    fn hold_embedding(&mut self, src: &Source) -> Result<(), BackendError>;

    /// Allocates block `i`'s KV caches as `kv_type`: `n_ctx_seq` = (n_ctx, n_seq), one of
    /// n_ctx positions for each of n_seq sequences, `bytes` in all as the plan counts them.
    fn alloc_kv(
        &mut self,
        model: &Model,
        i: usize,
        n_ctx_seq: (usize, usize),
        kv_type: GgmlType,
        bytes: u64,
    ) -> Result<(), BackendError>;

    /// Allocates the scratch `layout` describes.
    fn alloc_scratch(&mut self, model: &Model, layout: ScratchLayout) -> Result<(), BackendError>;

    /// The embedding rows of `tokens` into the residual stream.
    fn embed(&mut self, model: &Model, tokens: &[u32]) -> Result<(), BackendError>;

    /// Runs `unit` on the `n` rows of the residual stream it holds, each row in the sequence
    /// and at the position `at` gives it.
    fn run(&mut self, model: &Model, unit: &Unit, n: usize, at: At) -> Result<(), BackendError>;

    /// Sequence `to`'s KV caches (of every block held here) become a copy of sequence
    /// `from`'s first `len` positions: a prompt evaluated once serves several sequences.
    fn copy_seq(&mut self, from: usize, to: usize, len: usize) -> Result<(), BackendError>;

    /// Waits until the work queued by [`Backend::run`] is done (a host's is done when
    /// `run` returns; a GPU's kernels are only queued). For timelines: copies wait anyway.
    fn finish(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether [`Backend::run`] only queues the work (a GPU's stream), so that the caller's
    /// thread is free while it runs.
    fn queues(&self) -> bool {
        false
    }

    /// Runs `units` one after the other: one call, so that a device driven from another
    /// thread is handed the work once.
    fn run_all(
        &mut self,
        model: &Model,
        units: &[Unit],
        n: usize,
        at: At,
    ) -> Result<(), BackendError> {
        units.iter().try_for_each(|u| self.run(model, u, n, at))
    }

    /// The residual stream's first `x.len()` values, from the device into `x`.
    fn read_x(&self, x: &mut [f32]) -> Result<(), BackendError>;

    /// `x` into the first values of the device's residual stream.
    fn write_x(&mut self, x: &[f32]) -> Result<(), BackendError>;

    /// The first `out.len()` values of `what` ([`Exchange`]), from the device.
    fn export(&self, what: Exchange, out: &mut [f32]) -> Result<(), BackendError>;

    /// `data` into the device's `what` (a [`Exchange::Partial`] is added to its own).
    fn import(&mut self, what: Exchange, data: &[f32]) -> Result<(), BackendError>;

    /// The residual stream, where it is in host memory (read without a copy).
    fn host_x(&self) -> Option<&[f32]>;

    /// The residual stream, where it is in host memory (written without a copy).
    fn host_x_mut(&mut self) -> Option<&mut [f32]>;

    /// The first `out.len()` logits of the last [`Unit::Output`], from the device.
    fn read_logits(&self, out: &mut [f32]) -> Result<(), BackendError>;

    /// The logits buffer, where it is in host memory: where the logits of a run end.
    fn host_logits(&self) -> Option<&[f32]>;
    fn host_logits_mut(&mut self) -> Option<&mut [f32]>;

    /// Forgets the context (buffers stay allocated).
    fn reset(&mut self);

    fn holdings(&self) -> Holdings;

    /// The threads it computes on, if it has its own (a device posing with `--pose-gpus
    /// SIZE@THREADS`), and itself as a backend another thread may drive: work handed to it
    /// runs beside the caller's. `None`: it computes on the caller's threads (the CPU), or
    /// on hardware of its own ([`driven`](Backend::driven)).
    fn own_threads(&mut self) -> Option<OwnThreads<'_>> {
        None
    }

    /// A mark at the end of the work queued so far, where the device runs its work after
    /// the calls that queue it return (a GPU): a timeline takes one before and after a
    /// unit instead of waiting for it, so tracing does not change the schedule. `None`
    /// where work is done when its call returns.
    fn mark(&self) -> Result<Option<Box<dyn QueueMark>>, BackendError> {
        Ok(None)
    }

    /// Itself, where it computes on hardware of its own (a GPU) and a host thread of its own
    /// only queues its work and waits for it: the prefill pipeline drives it from such a
    /// thread, so the GPU takes one micro-batch while the CPU computes another. `None` for
    /// devices that compute on host threads.
    fn driven(&mut self) -> Option<&mut (dyn Backend + Send)> {
        None
    }
}

/// Where a run's rows sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At<'a> {
    /// Every row in sequence `seq` (whose KV caches they read and extend), at positions
    /// `pos..`.
    Seq { seq: usize, pos: usize },
    /// Row r in sequence `rows[r].0` at position `rows[r].1`: several sequences' rows in one
    /// batch, so that the products read each weight once for all of them while each row
    /// attends to its own sequence.
    Rows(&'a [(usize, usize)]),
}

impl At<'_> {
    /// Position `pos` of the first sequence (the only one of a single-sequence run).
    pub fn first(pos: usize) -> At<'static> {
        At::Seq { seq: 0, pos }
    }

    /// The batch's `n` rows as runs of one sequence at consecutive positions, in row order;
    /// an error where [`At::Rows`] places fewer rows than `n`.
    pub fn segments(self, n: usize) -> Result<Vec<Segment>, BackendError> {
        match self {
            At::Seq { seq, pos } => Ok(vec![Segment {
                row: 0,
                n,
                seq,
                pos,
            }]),
            At::Rows(rows) if rows.len() < n => Err(BackendError::Unsupported(format!(
                "{n} rows placed by {} positions",
                rows.len()
            ))),
            At::Rows(rows) => {
                let mut out: Vec<Segment> = Vec::new();
                for (row, &(seq, pos)) in rows.iter().enumerate().take(n) {
                    match out.last_mut() {
                        Some(s) if s.seq == seq && s.pos + s.n == pos => s.n += 1,
                        _ => out.push(Segment {
                            row,
                            n: 1,
                            seq,
                            pos,
                        }),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Rows `row..row + n` of a batch: sequence `seq`, positions `pos..pos + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub row: usize,
    pub n: usize,
    pub seq: usize,
    pub pos: usize,
}

/// A point in a device's queue of work ([`Backend::mark`]).
pub trait QueueMark: Send {
    /// When the device reached it, on the host's clock; waits until it has.
    fn reached(&self) -> Result<std::time::Instant, BackendError>;
}

/// A backend on threads of its own ([`Backend::own_threads`]).
pub struct OwnThreads<'a> {
    pub pool: std::sync::Arc<rayon::ThreadPool>,
    pub backend: &'a mut (dyn Backend + Send),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fall_into_runs_of_one_sequence_at_consecutive_positions() {
        let seg = |row, n, seq, pos| Segment { row, n, seq, pos };
        assert_eq!(At::first(7).segments(3).unwrap(), vec![seg(0, 3, 0, 7)]);
        // A decode step of three sequences; then a sequence's rows with a gap, and a
        // sequence that comes back after another.
        let step = [(2, 10), (0, 4), (1, 9)];
        let want = vec![seg(0, 1, 2, 10), seg(1, 1, 0, 4), seg(2, 1, 1, 9)];
        assert_eq!(At::Rows(&step).segments(3).unwrap(), want);
        // Fewer positions than rows: an error, not a short batch.
        let e = At::Rows(&step).segments(4).unwrap_err().to_string();
        assert!(e.contains("4 rows placed by 3 positions"), "{e}");
        let rows = [(1, 0), (1, 1), (1, 3), (0, 5), (1, 4)];
        let want = vec![
            seg(0, 2, 1, 0),
            seg(2, 1, 1, 3),
            seg(3, 1, 0, 5),
            seg(4, 1, 1, 4),
        ];
        assert_eq!(At::Rows(&rows).segments(5).unwrap(), want);
    }
}
