use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_yz, need};
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
    /// Position of the batch's first token; the cache holds 0 … start_pos + ntok − 1.
    pub start_pos: usize,
}

impl Gpu {
    /// Causal grouped-query attention over an f16 KV cache (`k`, `v`: position-major,
    /// `n_ctx × nkv × head_dim`, as u16 bits). `q` and `out` are `ntok × nhead × head_dim`.
    pub fn attention(
        &self,
        q: &DeviceBuffer<f32>,
        k: &DeviceBuffer<u16>,
        v: &DeviceBuffer<u16>,
        out: &mut DeviceBuffer<f32>,
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
        let cache = (s.start_pos + s.ntok) * s.nkv * s.head_dim;
        need(OP, "k cache", k.len(), cache)?;
        need(OP, "v cache", v.len(), cache)?;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let (nh, nkv, hd, sp) = (
            as_i32(OP, "nhead", s.nhead)?,
            as_i32(OP, "nkv", s.nkv)?,
            as_i32(OP, "head_dim", s.head_dim)?,
            as_i32(OP, "start_pos", s.start_pos)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (nh.max(1) as u32, grid_yz(OP, "ntok", s.ntok)?, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("attention", "attention_f16")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(q.slice())
            .arg(k.slice())
            .arg(v.slice())
            .arg(out.slice_mut());
        l.arg(&nh).arg(&nkv).arg(&hd).arg(&sp).arg(&scale);
        // SAFETY: matches attention_f16's signature; sizes checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
