//! What a GPU holds: block weights, the output layer, KV caches and scratch, each reserved
//! on the ledger (the plan's bytes) before it is allocated, so that a device that allows
//! less than it reported fails the same way a posing one does and the loader re-plans.

use std::ops::Range;

use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::{q8_1_bytes, CudaError, DeviceBuffer, DeviceRepr, Gpu, ValidAsZeroBits};

use super::CudaBackend;
use crate::backend::interface::{BackendError, Parts};
use crate::buffers::ScratchLayout;
use crate::config::ModelConfig;
use crate::ledger::{BufferKind, DeviceId, Ledger, Reservation};
use crate::model::{Attention, BlockWeights, Dense, Ffn, Matrix};

/// A weight matrix in device memory, in the file's format.
pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: DeviceBuffer<u8>,
}

/// What a GPU holds of one block: its attention, its FFN's norm with the dense FFN or the
/// router and shared experts, and a range of its routed experts — all three for a whole
/// block, some when a placement splits the block across devices.
pub struct GpuBlock {
    pub attn: Option<GpuAttention>,
    pub ffn: Option<GpuFfn>,
    pub experts: Option<GpuExperts>,
}

pub struct GpuAttention {
    pub norm: DeviceBuffer<f32>,
    pub wq: GpuMatrix,
    pub wk: GpuMatrix,
    pub wv: GpuMatrix,
    pub wo: GpuMatrix,
    pub bq: Option<DeviceBuffer<f32>>,
    pub bk: Option<DeviceBuffer<f32>>,
    pub bv: Option<DeviceBuffer<f32>>,
    pub q_norm: Option<DeviceBuffer<f32>>,
    pub k_norm: Option<DeviceBuffer<f32>>,
}

/// A SwiGLU FFN's three matrices: a dense FFN, or the shared experts of a MoE block.
pub struct GpuDense {
    pub gate: GpuMatrix,
    pub up: GpuMatrix,
    pub down: GpuMatrix,
}

/// The FFN's norm and what runs on its device: a dense FFN, or a MoE block's router (with
/// DeepSeek's selection bias) and shared experts.
pub struct GpuFfn {
    pub norm: DeviceBuffer<f32>,
    pub kind: FfnKind,
}

pub enum FfnKind {
    Dense(GpuDense),
    Moe {
        router: GpuMatrix,
        probs_bias: Option<DeviceBuffer<f32>>,
        shared: Option<GpuDense>,
    },
}

/// Routed experts `range` of a block: each of the three stacks' slice holding them, as the
/// file lays it out (every expert's matrix one contiguous run of rows).
pub struct GpuExperts {
    pub range: Range<usize>,
    pub gate: GpuMatrix,
    pub up: GpuMatrix,
    pub down: GpuMatrix,
}

/// The buffers a MoE FFN adds to the scratch, each inside the layout's piece of the same
/// name (the sort's arrays and a pass's routing inside its quantized activations' bytes).
pub struct MoeScratch {
    /// Router logits, `n_batch × n_expert`.
    pub router: DeviceBuffer<f32>,
    /// Each token's chosen experts and their weights, `n_batch × n_expert_used`.
    pub ids: DeviceBuffer<u32>,
    pub weights: DeviceBuffer<f32>,
    /// Rows gathered in expert order (prefill), then each token's weighted sum.
    pub xg: DeviceBuffer<f32>,
    /// The experts' outputs, a row a slot (`ffn_rows × n_embd`).
    pub yg: DeviceBuffer<f32>,
    /// The prefill sort: each expert's first row (`n_expert + 1`), the slot of each sorted
    /// row and the sorted row of each slot (`ffn_rows` each).
    pub offsets: DeviceBuffer<u32>,
    pub perm: DeviceBuffer<u32>,
    pub inv: DeviceBuffer<u32>,
    /// One pass's ids and weights, where they do not start the routing's own.
    pub pass_ids: DeviceBuffer<u32>,
    pub pass_weights: DeviceBuffer<f32>,
    /// Tokens one pass of the experts takes: their `n_expert_used` slots each fill at most
    /// the FFN buffers' rows.
    pub chunk: usize,
}

pub struct GpuOutput {
    pub norm: DeviceBuffer<f32>,
    pub w: GpuMatrix,
}

/// One block's KV cache: keys and values as f16 bits, position-major
/// (`n_ctx × n_head_kv × head_dim`), the layout `attention_f16` reads.
pub struct GpuKv {
    pub k: DeviceBuffer<u16>,
    pub v: DeviceBuffer<u16>,
}

/// The f32 buffers of [`ScratchLayout`], plus the q8_1 activations and the token positions
/// that RoPE reads, both inside the layout's `act_q_bytes`.
pub struct GpuScratch {
    pub layout: ScratchLayout,
    pub x: DeviceBuffer<f32>,
    pub xn: DeviceBuffer<f32>,
    pub q: DeviceBuffer<f32>,
    pub k: DeviceBuffer<f32>,
    pub v: DeviceBuffer<f32>,
    pub attn: DeviceBuffer<f32>,
    pub gate: DeviceBuffer<f32>,
    pub up: DeviceBuffer<f32>,
    pub ff: DeviceBuffer<f32>,
    pub out: DeviceBuffer<f32>,
    pub logits: DeviceBuffer<f32>,
    pub xq: DeviceBuffer<u8>,
    pub pos: DeviceBuffer<i32>,
    /// The first position and count last written to `pos`.
    pub pos_written: Option<(usize, usize)>,
    /// A MoE model's routing and expert buffers.
    pub moe: Option<MoeScratch>,
}

/// Allocations on one GPU for one buffer of the plan: a ledger reservation first, then the
/// device memory; a driver refusal reads as an [`AllocError`] so the loader can re-plan.
struct Alloc<'a> {
    gpu: &'a Gpu,
    ledger: &'a Ledger,
    id: DeviceId,
    kind: BufferKind,
    what: String,
}

impl Alloc<'_> {
    fn reserve(&self, bytes: u64) -> Result<Reservation, BackendError> {
        Ok(self
            .ledger
            .reserve(self.id, self.kind, bytes, || self.what.clone())?)
    }

    /// The driver refused memory the ledger allowed: the device holds less than it reported.
    fn refused(&self, bytes: usize, e: CudaError) -> BackendError {
        let why = format!("the CUDA driver refused {bytes} bytes: {e}");
        let r = self
            .ledger
            .refusal(self.id, self.kind, &self.what, bytes as u64, &why);
        BackendError::Alloc(r)
    }

    fn upload<T: DeviceRepr>(&self, src: &[T]) -> Result<DeviceBuffer<T>, BackendError> {
        self.gpu
            .upload(src)
            .map_err(|e| self.refused(std::mem::size_of_val(src), e))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>, BackendError> {
        self.gpu
            .zeros(len)
            .map_err(|e| self.refused(len * std::mem::size_of::<T>(), e))
    }

    fn matrix(&self, m: &Matrix) -> Result<GpuMatrix, BackendError> {
        Ok(GpuMatrix {
            ty: m.ty,
            rows: m.rows,
            cols: m.cols,
            data: self.upload(m.data)?,
        })
    }

    fn dense(&self, d: &Dense<Matrix>) -> Result<GpuDense, BackendError> {
        Ok(GpuDense {
            gate: self.matrix(&d.gate)?,
            up: self.matrix(&d.up)?,
            down: self.matrix(&d.down)?,
        })
    }

    fn opt(
        &self,
        v: &Option<std::borrow::Cow<[f32]>>,
    ) -> Result<Option<DeviceBuffer<f32>>, BackendError> {
        v.as_ref().map(|v| self.upload(v)).transpose()
    }
}

impl CudaBackend {
    fn alloc(&self, kind: BufferKind, what: String) -> Alloc<'_> {
        Alloc {
            gpu: &self.gpu,
            ledger: &self.ledger,
            id: self.id,
            kind,
            what,
        }
    }

    /// Uploads block `i`'s weights, reserving `planned` bytes (the plan's cost of its
    /// tensors) on the ledger first.
    pub(super) fn upload_block(
        &mut self,
        i: usize,
        w: &BlockWeights,
        parts: &Parts,
        n_expert: usize,
        planned: u64,
    ) -> Result<(), BackendError> {
        let a = self.alloc(BufferKind::Weights, format!("weights of block {i}"));
        let r = a.reserve(planned)?;
        let attn = match (&w.attn, parts.attention) {
            (_, false) => None,
            (Attention::Gqa(at), true) => Some(GpuAttention {
                norm: a.upload(&w.attn_norm)?,
                wq: a.matrix(&at.wq)?,
                wk: a.matrix(&at.wk)?,
                wv: a.matrix(&at.wv)?,
                wo: a.matrix(&at.wo)?,
                bq: a.opt(&at.bq)?,
                bk: a.opt(&at.bk)?,
                bv: a.opt(&at.bv)?,
                q_norm: a.opt(&at.q_norm)?,
                k_norm: a.opt(&at.k_norm)?,
            }),
            (Attention::Mla(_), true) => {
                return Err(BackendError::Unsupported(format!(
                    "block {i} on the GPU: its latent attention runs on the host only"
                )))
            }
        };
        let ffn = if parts.ffn {
            let kind = match &w.ffn {
                Ffn::Dense(d) => FfnKind::Dense(a.dense(d)?),
                Ffn::Moe(m) => FfnKind::Moe {
                    router: a.matrix(&m.router)?,
                    probs_bias: a.opt(&m.probs_bias)?,
                    shared: m.shared.as_ref().map(|d| a.dense(d)).transpose()?,
                },
            };
            Some(GpuFfn {
                norm: a.upload(&w.ffn_norm)?,
                kind,
            })
        } else {
            None
        };
        let experts = match (&w.ffn, &parts.experts) {
            (Ffn::Moe(m), Some(range)) => {
                let take = |mat: &Matrix| a.matrix(&mat.parts(range.clone(), n_expert));
                Some(GpuExperts {
                    range: range.clone(),
                    gate: take(&m.gate)?,
                    up: take(&m.up)?,
                    down: take(&m.down)?,
                })
            }
            _ => None,
        };
        self.blocks.insert(i, GpuBlock { attn, ffn, experts });
        self.held.push(r);
        Ok(())
    }

    /// Uploads the output norm and projection, reserving `planned` bytes first.
    pub(super) fn upload_output(
        &mut self,
        norm: &[f32],
        w: &Matrix,
        planned: u64,
    ) -> Result<(), BackendError> {
        let a = self.alloc(BufferKind::Weights, "output layer weights".into());
        let r = a.reserve(planned)?;
        let out = GpuOutput {
            norm: a.upload(norm)?,
            w: a.matrix(w)?,
        };
        self.output = Some(out);
        self.held.push(r);
        Ok(())
    }

    /// Allocates block `i`'s f16 KV cache of `n_ctx` positions, reserving `planned` bytes.
    pub(super) fn kv_cache(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        n_ctx: usize,
        planned: u64,
    ) -> Result<(), BackendError> {
        let n = n_ctx * cfg.kv_dim();
        if (4 * n) as u64 != planned {
            return Err(BackendError::Unsupported(format!(
                "a CUDA KV cache of {n_ctx} positions holds {} bytes, the plan says {planned}",
                4 * n
            )));
        }
        let a = self.alloc(BufferKind::Kv, format!("KV cache of block {i}"));
        let r = a.reserve(planned)?;
        let kv = GpuKv {
            k: a.zeros(n)?,
            v: a.zeros(n)?,
        };
        self.kvs.insert(i, kv);
        self.held.push(r);
        Ok(())
    }

    /// Allocates the scratch `layout` describes, reserving its bytes first.
    pub(super) fn allocate_scratch(
        &mut self,
        cfg: &ModelConfig,
        layout: ScratchLayout,
    ) -> Result<(), BackendError> {
        let a = self.alloc(BufferKind::Scratch, "scratch".into());
        let r = a.reserve(layout.bytes())?;
        let widest = cfg.n_embd.max(cfg.q_dim()).max(cfg.ffn_width());
        let k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_used);
        // One token's experts each take a row of the FFN buffers (as in the layout).
        let ffn_rows = layout.n_batch.max(k);
        let xq = q8_1_bytes(widest, ffn_rows);
        let sort = cfg
            .moe
            .as_ref()
            .map_or(0, |m| 4 * (m.n_expert + 1 + 4 * ffn_rows));
        // q8_1 takes 36 bytes per 32 values, a position 4 bytes per token, and the experts'
        // sort and a pass's routing 4 bytes an entry, inside the 4 bytes per value the
        // layout reserves for quantized activations.
        if xq + 4 * layout.n_batch + sort > layout.act_q_bytes {
            return Err(BackendError::Unsupported(format!(
                "GPU scratch: {xq} bytes of q8_1 activations, {} of positions and {sort} of \
                 the experts' sort and routing exceed the {} reserved",
                4 * layout.n_batch,
                layout.act_q_bytes
            )));
        }
        let z = |n: usize| a.zeros::<f32>(n);
        let moe = match &cfg.moe {
            None => None,
            Some(m) => Some(MoeScratch {
                router: z(layout.router)?,
                ids: a.zeros(layout.route_ids)?,
                weights: z(layout.route_weights)?,
                xg: z(layout.gathered_in)?,
                yg: z(layout.gathered_out)?,
                offsets: a.zeros(m.n_expert + 1)?,
                perm: a.zeros(ffn_rows)?,
                inv: a.zeros(ffn_rows)?,
                pass_ids: a.zeros(ffn_rows)?,
                pass_weights: z(ffn_rows)?,
                chunk: ffn_rows / k.max(1),
            }),
        };
        let s = GpuScratch {
            layout,
            x: z(layout.x)?,
            xn: z(layout.xn)?,
            q: z(layout.q)?,
            k: z(layout.k)?,
            v: z(layout.v)?,
            attn: z(layout.attn)?,
            gate: z(layout.gate)?,
            up: z(layout.up)?,
            ff: z(layout.ff)?,
            out: z(layout.out)?,
            logits: z(layout.logits)?,
            xq: a.zeros(xq)?,
            pos: a.zeros(layout.n_batch)?,
            pos_written: None,
            moe,
        };
        self.scratch = Some(s);
        self.held.push(r);
        Ok(())
    }
}
