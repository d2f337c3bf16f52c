//! What a GPU holds: block weights, the output layer, KV caches and scratch, each reserved
//! on the ledger (the plan's bytes) before it is allocated, so that a device that allows
//! less than it reported fails the same way a posing one does and the loader re-plans.

use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::{q8_1_bytes, CudaError, DeviceBuffer, DeviceRepr, Gpu, ValidAsZeroBits};

use super::CudaBackend;
use crate::backend::interface::BackendError;
use crate::buffers::ScratchLayout;
use crate::config::ModelConfig;
use crate::ledger::{BufferKind, DeviceId, Ledger, Reservation};
use crate::model::{Attention, BlockWeights, Ffn, Matrix};

/// A weight matrix in device memory, in the file's format.
pub struct GpuMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: DeviceBuffer<u8>,
}

pub struct GpuBlock {
    pub attn_norm: DeviceBuffer<f32>,
    pub wq: GpuMatrix,
    pub wk: GpuMatrix,
    pub wv: GpuMatrix,
    pub wo: GpuMatrix,
    pub bq: Option<DeviceBuffer<f32>>,
    pub bk: Option<DeviceBuffer<f32>>,
    pub bv: Option<DeviceBuffer<f32>>,
    pub q_norm: Option<DeviceBuffer<f32>>,
    pub k_norm: Option<DeviceBuffer<f32>>,
    pub ffn_norm: DeviceBuffer<f32>,
    pub w_gate: GpuMatrix,
    pub w_up: GpuMatrix,
    pub w_down: GpuMatrix,
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
        planned: u64,
    ) -> Result<(), BackendError> {
        let (Attention::Gqa(at), Ffn::Dense(ffn)) = (&w.attn, &w.ffn) else {
            return Err(BackendError::Unsupported(format!(
                "block {i} on the GPU: its latent attention or experts run on the host only"
            )));
        };
        let a = self.alloc(BufferKind::Weights, format!("weights of block {i}"));
        let r = a.reserve(planned)?;
        let block = GpuBlock {
            attn_norm: a.upload(&w.attn_norm)?,
            wq: a.matrix(&at.wq)?,
            wk: a.matrix(&at.wk)?,
            wv: a.matrix(&at.wv)?,
            wo: a.matrix(&at.wo)?,
            bq: a.opt(&at.bq)?,
            bk: a.opt(&at.bk)?,
            bv: a.opt(&at.bv)?,
            q_norm: a.opt(&at.q_norm)?,
            k_norm: a.opt(&at.k_norm)?,
            ffn_norm: a.upload(&w.ffn_norm)?,
            w_gate: a.matrix(&ffn.gate)?,
            w_up: a.matrix(&ffn.up)?,
            w_down: a.matrix(&ffn.down)?,
        };
        self.blocks.insert(i, block);
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
        let widest = cfg.n_embd.max(cfg.q_dim()).max(cfg.n_ff);
        let xq = q8_1_bytes(widest, layout.n_batch);
        // q8_1 takes 36 bytes per 32 values and a position 4 bytes per token, inside the 4
        // bytes per value the layout reserves for quantized activations.
        if xq + 4 * layout.n_batch > layout.act_q_bytes {
            return Err(BackendError::Unsupported(format!(
                "GPU scratch: {xq} bytes of q8_1 activations and {} of positions exceed the \
                 {} reserved",
                4 * layout.n_batch,
                layout.act_q_bytes
            )));
        }
        let z = |n: usize| a.zeros::<f32>(n);
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
        };
        self.scratch = Some(s);
        self.held.push(r);
        Ok(())
    }
}
