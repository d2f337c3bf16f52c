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
use crate::model::{Attention, BlockWeights, Dense, Ffn, Matrix, MlaWeights};

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

/// The attention's norm and its weights: grouped-query heads, or DeepSeek's latent
/// attention.
pub struct GpuAttention {
    pub norm: DeviceBuffer<f32>,
    pub kind: AttentionKind,
}

pub enum AttentionKind {
    Gqa(GpuGqa),
    Mla(GpuMla),
}

pub struct GpuGqa {
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

/// Multi-head latent attention's weights, in the shapes its absorbed forward pass reads.
pub struct GpuMla {
    pub q: MlaQuery,
    /// attn_kv_a_mqa: the latent, then the rotary key.
    pub kv_a: GpuMatrix,
    pub kv_a_norm: DeviceBuffer<f32>,
    /// Each head's k part, one head after the other: a newer file's attn_k_b (`kv_lora`
    /// rows of `qk_nope` a head, an expert-style stack), or the k rows of an older file's
    /// attn_kv_b (`qk_nope` rows of `kv_lora` a head, read transposed).
    pub k: GpuMatrix,
    pub k_transposed: bool,
    /// Each head's v rows (`v_head` of `kv_lora` a head): attn_v_b, or attn_kv_b's v rows.
    pub v: GpuMatrix,
    pub wo: GpuMatrix,
}

/// The queries' projection: attn_q, or attn_q_a, its norm and attn_q_b (`q_lora_rank` > 0).
pub enum MlaQuery {
    Full(GpuMatrix),
    LowRank {
        a: GpuMatrix,
        norm: DeviceBuffer<f32>,
        b: GpuMatrix,
    },
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

/// One block's cache of every sequence, as f16 bits, position-major, sequence s's `n_ctx`
/// rows from row s·n_ctx: keys and values (rows of `n_head_kv × head_dim`, the layout
/// `attention_f16` reads), or under MLA one row of rotary key and latent a position (rows of
/// `qk_rope + kv_lora_rank`, the layout `mla_attention_f16` reads).
pub enum GpuKv {
    Gqa {
        k: DeviceBuffer<u16>,
        v: DeviceBuffer<u16>,
    },
    Latent(DeviceBuffer<u16>),
}

/// The f32 buffers of [`ScratchLayout`], plus the q8_1 activations and each token's position
/// and its sequence's first cache row (what RoPE and attention read), inside the layout's
/// `act_q_bytes`.
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
    pub base: DeviceBuffer<i32>,
    /// The rows' runs of one sequence last written to `pos` and `base`.
    pub pos_written: Vec<crate::backend::Segment>,
    /// A MoE model's routing and expert buffers.
    pub moe: Option<MoeScratch>,
    /// An MLA model's buffers.
    pub mla: Option<MlaScratch>,
}

/// The buffers latent attention adds to the scratch: the layout's `kv_row` and its
/// `q_latent` cut in two, and the heads' ids inside its quantized activations' bytes.
pub struct MlaScratch {
    /// attn_kv_a_mqa's output, `n_batch × (kv_lora_rank + qk_rope)`.
    pub kv_a: DeviceBuffer<f32>,
    /// Each head's query: the rotary part (`n_batch × n_head × qk_rope`) and the part
    /// absorbed into the latent space (`n_batch × n_head × kv_lora_rank`).
    pub q_pe: DeviceBuffer<f32>,
    pub q_lat: DeviceBuffer<f32>,
    /// 0 … n_head − 1 for every token: the heads' products run as expert products, a head
    /// an "expert" and a (token, head) pair a slot.
    pub heads: DeviceBuffer<u32>,
}

/// The widest row a product's input has (its q8_1 activations are this wide a token): the
/// residual, the queries, the FFN's hidden layer, and under MLA the heads' values.
pub(super) fn widest_input(cfg: &ModelConfig) -> usize {
    let values = cfg.mla.as_ref().map_or(0, |m| cfg.n_head * m.v_head);
    cfg.n_embd.max(cfg.q_dim()).max(cfg.ffn_width()).max(values)
}

/// What the GPU keeps inside the layout's `act_q_bytes` (4 bytes per value of the widest
/// input): the q8_1 activations (36 bytes per 32 values: the widest input for every FFN
/// row, and under MLA each head's own row for attn_k_b and attn_v_b), and 4-byte entries
/// (a position and a first cache row per token, the experts' sort and a pass's routing, the
/// heads' ids).
pub(super) fn quantized_bytes(cfg: &ModelConfig, layout: &ScratchLayout) -> (usize, usize) {
    let k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_used);
    let ffn_rows = layout.n_batch.max(k);
    let (heads, head_rows) = cfg.mla.as_ref().map_or((0, 0), |m| {
        let rows = layout.n_batch * cfg.n_head;
        (rows, q8_1_bytes(m.kv_lora_rank.max(m.qk_nope), rows))
    });
    let xq = q8_1_bytes(widest_input(cfg), ffn_rows).max(head_rows);
    let sort = cfg
        .moe
        .as_ref()
        .map_or(0, |m| 4 * (m.n_expert + 1 + 4 * ffn_rows));
    (xq, 8 * layout.n_batch + sort + 4 * heads)
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

    /// An MLA block's weights; an older file's attn_kv_b is cut into its k rows and its v
    /// rows (whole rows of the file's format, so the bytes are the plan's). `widths` =
    /// (heads, qk_nope, v_head).
    fn mla(
        &self,
        at: &MlaWeights<Matrix, std::borrow::Cow<[f32]>>,
        i: usize,
        widths: Option<(usize, usize, usize)>,
    ) -> Result<GpuMla, BackendError> {
        let missing = |what: &str| {
            BackendError::Unsupported(format!("block {i}'s latent attention has no {what}"))
        };
        let q = match (&at.q, &at.q_a, &at.q_a_norm, &at.q_b) {
            (Some(q), ..) => MlaQuery::Full(self.matrix(q)?),
            (None, Some(qa), Some(norm), Some(qb)) => MlaQuery::LowRank {
                a: self.matrix(qa)?,
                norm: self.upload(norm)?,
                b: self.matrix(qb)?,
            },
            _ => return Err(missing("attn_q, or attn_q_a with its norm and attn_q_b")),
        };
        let (k, k_transposed, v) = match (&at.k_b, &at.v_b, &at.kv_b) {
            (Some(k_b), Some(v_b), _) => (self.matrix(k_b)?, false, self.matrix(v_b)?),
            (_, _, Some(kv_b)) => {
                let (nh, nope, vh) = widths.ok_or_else(|| missing("MLA widths"))?;
                let (k, v) = split_kv_b(kv_b, nh, nope, vh).ok_or_else(|| {
                    missing(&format!(
                        "attn_kv_b of {nh} heads × ({nope} + {vh}) rows (it has {} rows)",
                        kv_b.rows
                    ))
                })?;
                (
                    self.matrix(&k.view(kv_b))?,
                    true,
                    self.matrix(&v.view(kv_b))?,
                )
            }
            _ => return Err(missing("attn_k_b and attn_v_b, or attn_kv_b")),
        };
        Ok(GpuMla {
            q,
            kv_a: self.matrix(&at.kv_a)?,
            kv_a_norm: self.upload(&at.kv_a_norm)?,
            k,
            k_transposed,
            v,
            wo: self.matrix(&at.wo)?,
        })
    }

    fn opt(
        &self,
        v: &Option<std::borrow::Cow<[f32]>>,
    ) -> Result<Option<DeviceBuffer<f32>>, BackendError> {
        v.as_ref().map(|v| self.upload(v)).transpose()
    }
}

/// Rows of a matrix gathered from its row ranges, as bytes of the same format.
pub(super) struct GatheredRows {
    pub rows: usize,
    pub data: Vec<u8>,
}

impl GatheredRows {
    /// The gathered rows as a matrix of `like`'s format and width.
    fn view<'a>(&'a self, like: &Matrix) -> Matrix<'a> {
        Matrix {
            rows: self.rows,
            data: &self.data,
            ..*like
        }
    }
}

/// An older MLA file's attn_kv_b (per head `nope` k rows, then `vh` v rows, of kv_lora
/// values each) cut into every head's k rows and every head's v rows, in head order; `None`
/// if it is not `heads × (nope + vh)` whole rows.
pub(super) fn split_kv_b(
    kv_b: &Matrix,
    heads: usize,
    nope: usize,
    vh: usize,
) -> Option<(GatheredRows, GatheredRows)> {
    let per = nope + vh;
    if kv_b.rows != heads * per || kv_b.packed || !kv_b.data.len().is_multiple_of(kv_b.rows) {
        return None;
    }
    let row = kv_b.data.len() / kv_b.rows;
    let (mut k, mut v) = (Vec::with_capacity(heads * nope * row), Vec::new());
    v.reserve(heads * vh * row);
    for head in kv_b.data.chunks_exact(per * row) {
        let (hk, hv) = head.split_at(nope * row);
        k.extend_from_slice(hk);
        v.extend_from_slice(hv);
    }
    let rows = |n, data| GatheredRows { rows: n, data };
    Some((rows(heads * nope, k), rows(heads * vh, v)))
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
        cfg: &ModelConfig,
        planned: u64,
    ) -> Result<(), BackendError> {
        let n_expert = cfg.moe.as_ref().map_or(0, |m| m.n_expert);
        let mla_widths = cfg.mla.as_ref().map(|m| (cfg.n_head, m.qk_nope, m.v_head));
        let a = self.alloc(BufferKind::Weights, format!("weights of block {i}"));
        let r = a.reserve(planned)?;
        let attn = match (&w.attn, parts.attention) {
            (_, false) => None,
            (Attention::Gqa(at), true) => Some(GpuAttention {
                norm: a.upload(&w.attn_norm)?,
                kind: AttentionKind::Gqa(GpuGqa {
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
            }),
            (Attention::Mla(at), true) => Some(GpuAttention {
                norm: a.upload(&w.attn_norm)?,
                kind: AttentionKind::Mla(a.mla(at, i, mla_widths)?),
            }),
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

    /// Allocates block `i`'s f16 KV caches of `n_ctx` positions (under MLA its latent
    /// caches), one for each of `n_seq` sequences, reserving `planned` bytes.
    pub(super) fn kv_cache(
        &mut self,
        i: usize,
        cfg: &ModelConfig,
        (n_ctx, n_seq): (usize, usize),
        planned: u64,
    ) -> Result<(), BackendError> {
        // Values of f16 (2 bytes) of a sequence in each buffer, and how many buffers.
        let (n, buffers) = match &cfg.mla {
            Some(m) => (n_ctx * m.row_width(), 1),
            None => (n_ctx * cfg.kv_dim(), 2),
        };
        let bytes = 2 * buffers * n * n_seq;
        if bytes as u64 != planned {
            return Err(BackendError::Unsupported(format!(
                "CUDA KV caches of {n_seq} × {n_ctx} positions hold {bytes} bytes, the plan \
                 says {planned}"
            )));
        }
        let a = self.alloc(BufferKind::Kv, format!("KV cache of block {i}"));
        let r = a.reserve(planned)?;
        // Every sequence's rows in one buffer, so that one launch serves a batch of rows of
        // several sequences (each row's first cache row in the scratch's `base`).
        let kv = if cfg.mla.is_some() {
            GpuKv::Latent(a.zeros(n * n_seq)?)
        } else {
            GpuKv::Gqa {
                k: a.zeros(n * n_seq)?,
                v: a.zeros(n * n_seq)?,
            }
        };
        self.kvs.insert(i, kv);
        self.kv_shape = (n_ctx, n_seq);
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
        let k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_used);
        // One token's experts each take a row of the FFN buffers (as in the layout).
        let ffn_rows = layout.n_batch.max(k);
        let (xq, ints) = quantized_bytes(cfg, &layout);
        if xq + ints > layout.act_q_bytes {
            return Err(BackendError::Unsupported(format!(
                "GPU scratch: {xq} bytes of q8_1 activations and {ints} of positions, the \
                 experts' sort and routing and the heads' ids exceed the {} reserved",
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
        let mla = match &cfg.mla {
            None => None,
            Some(m) => {
                let (heads, pe) = (layout.n_batch * cfg.n_head, m.qk_rope);
                let ids: Vec<u32> = (0..heads).map(|s| (s % cfg.n_head) as u32).collect();
                Some(MlaScratch {
                    kv_a: z(layout.kv_row)?,
                    q_pe: z(heads * pe)?,
                    q_lat: z(layout.q_latent - heads * pe)?,
                    heads: a.upload(&ids)?,
                })
            }
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
            base: a.zeros(layout.n_batch)?,
            pos_written: Vec::new(),
            moe,
            mla,
        };
        self.scratch = Some(s);
        self.held.push(r);
        Ok(())
    }
}
