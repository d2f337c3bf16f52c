//! Runs the model: owns the KV caches (one per block, on the block's device) and one
//! scratch per device, all allocated up front with the sizes [`crate::buffers`] gives, and
//! feeds tokens through [`forward`] in batches of at most `n_batch`.

mod forward;
mod scratch;

pub use scratch::Scratch;

use strata_kernels_cpu::ops::{KvCache, OpError};
use strata_kernels_cpu::{FormatError, GgmlType};
use strata_kernels_cuda::CudaError;
use thiserror::Error;

use crate::alloc::DeviceMemory;
use crate::buffers::{kv_cache_bytes, kv_type_of, ScratchLayout};
use crate::cuda::{CudaDevice, GpuKv};
use crate::device::{DeviceId, Placement};
use crate::model::Model;

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
    Format(#[from] FormatError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("block {block} runs on {device}, but its KV cache is not there")]
    CacheElsewhere { block: usize, device: DeviceId },
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
}

impl RunnerOptions {
    pub fn cpu(n_layer: usize, n_ctx: usize) -> RunnerOptions {
        RunnerOptions {
            n_ctx,
            n_batch: 64,
            kv_type: GgmlType::F16,
            placement: Placement::all_cpu(n_layer),
            all_logits: false,
        }
    }
}

/// A device's share of the run: its scratch, its copies of weights (accelerators) and the
/// reservations of its buffers. KV caches live with their blocks.
///
/// A CUDA device (`cuda` set) computes in its own memory: its host `scratch` is empty and
/// its weights and scratch are in `cuda`.
pub struct DeviceState {
    pub id: DeviceId,
    pub scratch: Scratch,
    pub mem: DeviceMemory,
    pub cuda: Option<CudaDevice>,
    /// Wall time the forward passes spent on this device's part (from the copy in to the
    /// copy out, which waits for a GPU's queued work), since the runner was built.
    pub busy: std::time::Duration,
}

/// A block's KV cache, in the memory of the device that runs the block.
pub enum BlockCache {
    Host(KvCache),
    Cuda(GpuKv),
}

pub struct Runner<'m> {
    model: &'m Model<'m>,
    opts: RunnerOptions,
    /// One per block, on `opts.placement.blocks[i]`.
    caches: Vec<BlockCache>,
    devices: Vec<DeviceState>,
    /// Positions processed so far (the next token's position).
    pos: usize,
    /// Logits of the last forward call: `n_out × n_vocab`.
    n_out: usize,
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
        if opts.n_ctx == 0 || opts.n_batch == 0 {
            return Err(RunError::Options(
                "n_ctx and n_batch must be positive".into(),
            ));
        }
        let kv_type = kv_type_of(opts.kv_type).ok_or_else(|| {
            RunError::Options(format!("KV cache type {} (only F32 and F16)", opts.kv_type))
        })?;
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
        let n_outputs = if opts.all_logits { opts.n_batch } else { 1 };
        let layout = ScratchLayout::new(cfg, opts.n_batch, n_outputs);
        let devices = opts
            .placement
            .devices()
            .into_iter()
            .map(|id| DeviceState {
                id,
                scratch: Scratch::new(layout),
                mem: DeviceMemory::default(),
                cuda: None,
                busy: Default::default(),
            })
            .collect();
        let caches = (0..cfg.n_layer)
            .map(|_| {
                BlockCache::Host(KvCache::new(
                    kv_type,
                    opts.n_ctx,
                    cfg.n_head_kv,
                    cfg.head_dim,
                ))
            })
            .collect();
        Ok(Runner {
            model,
            opts,
            caches,
            devices,
            pos: 0,
            n_out: 0,
        })
    }

    /// A runner over caches and device states allocated by [`crate::load`] (checked there
    /// against the placement).
    pub(crate) fn from_parts(
        model: &'m Model<'m>,
        opts: RunnerOptions,
        caches: Vec<BlockCache>,
        devices: Vec<DeviceState>,
    ) -> Runner<'m> {
        Runner {
            model,
            opts,
            caches,
            devices,
            pos: 0,
            n_out: 0,
        }
    }

    pub fn model(&self) -> &Model<'m> {
        self.model
    }

    pub fn options(&self) -> &RunnerOptions {
        &self.opts
    }

    /// Positions in the KV cache so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Forgets the context (buffers stay allocated).
    pub fn reset(&mut self) {
        self.pos = 0;
        // A GPU cache needs no clearing: attention reads positions below `pos` only.
        for c in &mut self.caches {
            if let BlockCache::Host(c) = c {
                c.clear();
            }
        }
    }

    /// Bytes this runner allocated for KV caches, per device.
    pub fn kv_bytes(&self, dev: DeviceId) -> u64 {
        let per = kv_cache_bytes(&self.model.cfg, self.opts.n_ctx, self.opts.kv_type);
        self.opts
            .placement
            .blocks
            .iter()
            .filter(|&&d| d == dev)
            .count() as u64
            * per
    }

    /// The scratch of each device.
    pub fn devices(&self) -> &[DeviceState] {
        &self.devices
    }

    /// Feeds `tokens` (any number; batched internally) at the current position and returns
    /// the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], RunError> {
        self.check(tokens)?;
        for chunk in tokens.chunks(self.opts.n_batch) {
            self.run_batch(chunk)?;
        }
        Ok(self.last_logits())
    }

    /// Feeds `tokens` and returns the logits of every one (`tokens.len() × n_vocab`).
    /// Needs `all_logits`.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RunError> {
        if !self.opts.all_logits {
            return Err(RunError::Options("eval_all needs all_logits".into()));
        }
        self.check(tokens)?;
        let n_vocab = self.model.cfg.n_vocab;
        let mut out = Vec::with_capacity(tokens.len() * n_vocab);
        for chunk in tokens.chunks(self.opts.n_batch) {
            self.run_batch(chunk)?;
            out.extend_from_slice(&self.output_scratch().logits[..chunk.len() * n_vocab]);
        }
        Ok(out)
    }

    fn check(&self, tokens: &[u32]) -> Result<(), RunError> {
        let n_vocab = self.model.cfg.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(RunError::BadToken { id, n_vocab });
        }
        let need = self.pos + tokens.len();
        if need > self.opts.n_ctx {
            return Err(RunError::ContextFull {
                need,
                n_ctx: self.opts.n_ctx,
            });
        }
        Ok(())
    }

    /// The host's scratch: the logits always come back to it.
    fn output_scratch(&self) -> &Scratch {
        &self
            .devices
            .iter()
            .find(|d| d.id == DeviceId::Cpu)
            .expect("the CPU always has a scratch")
            .scratch
    }

    fn last_logits(&self) -> &[f32] {
        let n_vocab = self.model.cfg.n_vocab;
        let logits = &self.output_scratch().logits;
        &logits[(self.n_out - 1) * n_vocab..self.n_out * n_vocab]
    }

    fn run_batch(&mut self, tokens: &[u32]) -> Result<(), RunError> {
        self.n_out = if self.opts.all_logits {
            tokens.len()
        } else {
            1
        };
        forward::forward(
            self.model,
            &self.opts.placement,
            &mut self.caches,
            &mut self.devices,
            tokens,
            self.pos,
            self.n_out,
        )?;
        self.pos += tokens.len();
        Ok(())
    }
}
