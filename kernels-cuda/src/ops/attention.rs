use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_yz, need, q8_1_grid, CacheRows};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "attention";
/// attention.cu keeps head_dim / 32 accumulators per lane, at most 8.
pub const MAX_HEAD_DIM: usize = 256;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query tokens in the batch (1 for decode).
    pub ntok: usize,
    pub nhead: usize,
    pub nkv: usize,
    pub head_dim: usize,
}

impl Gpu {
    /// Causal grouped-query attention over an f16 KV cache (`k`, `v`: position-major rows of
    /// `nkv × head_dim`, as u16 bits, each sequence's `at.n_ctx` from its base row). `q` and
    /// `out` are `ntok × nhead × head_dim`; token t attends to its sequence's positions
    /// 0 … pos[t] ([`CacheRows`]; clamped in the kernel).
    pub fn attention(
        &self,
        q: &DeviceBuffer<f32>,
        k: &DeviceBuffer<u16>,
        v: &DeviceBuffer<u16>,
        at: &CacheRows,
        out: &mut DeviceBuffer<f32>,
        s: &AttentionShape,
    ) -> Result<(), CudaError> {
        self.launch_attention(q, k, v, at, out, None, s)
    }

    /// [`attention`](Gpu::attention) and the q8_1 quantization of its output (`outq`:
    /// `ntok` rows of `nhead × head_dim`, head_dim a multiple of 32) in one launch: both bit
    /// for bit what attention and then quantize_q8_1 give.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_q8_1(
        &self,
        q: &DeviceBuffer<f32>,
        k: &DeviceBuffer<u16>,
        v: &DeviceBuffer<u16>,
        at: &CacheRows,
        out: &mut DeviceBuffer<f32>,
        outq: &mut DeviceBuffer<u8>,
        s: &AttentionShape,
    ) -> Result<(), CudaError> {
        if !s.head_dim.is_multiple_of(32) {
            return Err(CudaError::shape(
                OP,
                format!("head_dim = {} is not whole q8_1 blocks of 32", s.head_dim),
            ));
        }
        q8_1_grid(OP, outq, s.nhead * s.head_dim, s.ntok)?;
        self.launch_attention(q, k, v, at, out, Some(outq), s)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_attention(
        &self,
        q: &DeviceBuffer<f32>,
        k: &DeviceBuffer<u16>,
        v: &DeviceBuffer<u16>,
        at: &CacheRows,
        out: &mut DeviceBuffer<f32>,
        outq: Option<&mut DeviceBuffer<u8>>,
        s: &AttentionShape,
    ) -> Result<(), CudaError> {
        if s.head_dim == 0 || s.head_dim > MAX_HEAD_DIM {
            return Err(CudaError::shape(
                OP,
                format!("head_dim = {} not in 1..={MAX_HEAD_DIM}", s.head_dim),
            ));
        }
        if s.nkv == 0 || !s.nhead.is_multiple_of(s.nkv) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "{} query heads is not a multiple of {} KV heads",
                    s.nhead, s.nkv
                ),
            ));
        }
        let n = s.ntok * s.nhead * s.head_dim;
        need(OP, "q", q.len(), n)?;
        need(OP, "out", out.len(), n)?;
        let kv_dim = s.nkv * s.head_dim;
        if k.len() != v.len() || !k.len().is_multiple_of(kv_dim) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "k and v caches of {} and {} values are not equal whole rows of {kv_dim}",
                    k.len(),
                    v.len()
                ),
            ));
        }
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let (n_ctx, rows) = at.check(OP, s.ntok, k.len() / kv_dim)?;
        let (nh, nkv, hd) = (
            as_i32(OP, "nhead", s.nhead)?,
            as_i32(OP, "nkv", s.nkv)?,
            as_i32(OP, "head_dim", s.head_dim)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (nh.max(1) as u32, grid_yz(OP, "ntok", s.ntok)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("attention", "attention_f16")?;
        let mut l = self.stream().launch_builder(&f);
        // A null q8_1 output: the kernel quantizes only where it is given one.
        let no_q8_1: u64 = 0;
        l.arg(q.slice())
            .arg(k.slice())
            .arg(v.slice())
            .arg(out.slice_mut());
        match outq {
            Some(o) => l.arg(o.slice_mut()),
            None => l.arg(&no_q8_1),
        };
        l.arg(&nh)
            .arg(&nkv)
            .arg(&hd)
            .arg(at.pos.slice())
            .arg(at.base.slice())
            .arg(&n_ctx)
            .arg(&rows)
            .arg(&scale);
        // SAFETY: matches attention_f16's signature; sizes checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
