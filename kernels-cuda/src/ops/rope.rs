use cudarc::driver::PushKernelArg;

use strata_kernels_cpu::ops::Yarn;

use super::{as_i32, grid_1d, need, CacheRows};
use crate::error::{CudaError, DriverContext};
use crate::{AttentionShape, DeviceBuffer, Gpu};

const OP: &str = "rope";

/// A model's RoPE parameters (the same meaning as `strata_kernels_cpu`'s `Rope`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    /// Leading dimensions of each head that rotate (even, ≤ head_dim).
    pub n_rot: usize,
    pub freq_base: f32,
    /// `1 / rope.scaling.factor` for linear scaling, else 1.
    pub freq_scale: f32,
    /// NeoX pairs (i, i + n_rot/2) instead of adjacent pairs (2i, 2i+1).
    pub neox: bool,
    /// YaRN context extension, as the CPU's `Rope::yarn`.
    pub yarn: Option<Yarn>,
}

impl RopeParams {
    /// rope.cuh's ROPE_PARAMS for heads of `head_dim`: theta_scale (base^(−2/n_rot) in f32,
    /// as the CPU reference forms it, multiplied in once per pair), freq_scale, and YaRN's
    /// ext_factor, correction range and mscale (0, 0, 0, 1 without it). An error (naming
    /// `op`) if `n_rot` cannot rotate heads of `head_dim`.
    pub fn kernel_args(&self, op: &'static str, head_dim: usize) -> Result<[f32; 6], CudaError> {
        if !self.n_rot.is_multiple_of(2) || self.n_rot > head_dim || self.n_rot == 0 {
            return Err(CudaError::shape(
                op,
                format!(
                    "n_rot = {} must be even, nonzero and at most head_dim = {head_dim}",
                    self.n_rot
                ),
            ));
        }
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let y = self.yarn.unwrap_or(Yarn {
            ext_factor: 0.0,
            low: 0.0,
            high: 0.0,
            mscale: 1.0,
        });
        Ok([
            theta_scale,
            self.freq_scale,
            y.ext_factor,
            y.low,
            y.high,
            y.mscale,
        ])
    }
}

impl Gpu {
    /// Rotates, in place, `x` = `ntok × nhead × head_dim`; token t is at position `pos[t]`.
    pub fn rope(
        &self,
        x: &mut DeviceBuffer<f32>,
        pos: &DeviceBuffer<i32>,
        ntok: usize,
        nhead: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<(), CudaError> {
        let angle = p.kernel_args(OP, head_dim)?;
        need(OP, "x", x.len(), ntok * nhead * head_dim)?;
        need(OP, "pos", pos.len(), ntok)?;
        let (nt, nh, hd, nr) = (
            as_i32(OP, "ntok", ntok)?,
            as_i32(OP, "nhead", nhead)?,
            as_i32(OP, "head_dim", head_dim)?,
            as_i32(OP, "n_rot", p.n_rot)?,
        );
        let name = if p.neox { "rope_neox" } else { "rope_norm" };
        let f = self.function("rope", name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x.slice_mut())
            .arg(pos.slice())
            .arg(&nt)
            .arg(&nh)
            .arg(&hd)
            .arg(&nr);
        for a in &angle {
            b.arg(a);
        }
        // SAFETY: matches rope.cu's signature; sizes checked above.
        unsafe { b.launch(grid_1d(ntok * nhead * p.n_rot / 2, 256)) }.during(OP)?;
        Ok(())
    }

    /// Decode's attention inputs in one launch: RoPE on `q` (`ntok × nhead × head_dim`) and
    /// `k` (`ntok × nkv × head_dim`) in place, bit for bit as [`rope`](Gpu::rope), then the
    /// rotated `k` and `v` stored as f16 bits at row `base[t] + pos[t]` of the caches `kc`
    /// and `vc` (whole rows of `nkv × head_dim`, [`CacheRows`]); a position past its
    /// sequence's rows stores nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_store_kv(
        &self,
        q: &mut DeviceBuffer<f32>,
        k: &mut DeviceBuffer<f32>,
        v: &DeviceBuffer<f32>,
        kc: &mut DeviceBuffer<u16>,
        vc: &mut DeviceBuffer<u16>,
        at: &CacheRows,
        s: &AttentionShape,
        p: &RopeParams,
    ) -> Result<(), CudaError> {
        const OP: &str = "rope_store_kv";
        let angle = p.kernel_args(OP, s.head_dim)?;
        if !s.head_dim.is_multiple_of(2) {
            return Err(CudaError::shape(
                OP,
                format!("head_dim = {} is odd (one thread a pair)", s.head_dim),
            ));
        }
        let kv_dim = s.nkv * s.head_dim;
        need(OP, "q", q.len(), s.ntok * s.nhead * s.head_dim)?;
        need(OP, "k", k.len(), s.ntok * kv_dim)?;
        need(OP, "v", v.len(), s.ntok * kv_dim)?;
        if kv_dim == 0 || kc.len() != vc.len() || !kc.len().is_multiple_of(kv_dim) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "k and v caches of {} and {} values are not equal whole rows of {kv_dim}",
                    kc.len(),
                    vc.len()
                ),
            ));
        }
        let (n_ctx, rows) = at.check(OP, s.ntok, kc.len() / kv_dim)?;
        let (nt, nh, nkv, hd, nr) = (
            as_i32(OP, "ntok", s.ntok)?,
            as_i32(OP, "nhead", s.nhead)?,
            as_i32(OP, "nkv", s.nkv)?,
            as_i32(OP, "head_dim", s.head_dim)?,
            as_i32(OP, "n_rot", p.n_rot)?,
        );
        let name = if p.neox {
            "rope_store_kv_neox"
        } else {
            "rope_store_kv_norm"
        };
        let f = self.function("rope", name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(q.slice_mut())
            .arg(k.slice_mut())
            .arg(v.slice())
            .arg(kc.slice_mut())
            .arg(vc.slice_mut())
            .arg(at.pos.slice())
            .arg(at.base.slice());
        b.arg(&nt)
            .arg(&nh)
            .arg(&nkv)
            .arg(&hd)
            .arg(&nr)
            .arg(&n_ctx)
            .arg(&rows);
        for a in &angle {
            b.arg(a);
        }
        let threads = s.ntok * (s.nhead + 2 * s.nkv) * (s.head_dim / 2);
        // SAFETY: matches rope.cu's ROPE_STORE signature; q, k, v and pos sizes checked
        // above, cache rows bounded in the kernel.
        unsafe { b.launch(grid_1d(threads, 256)) }.during(OP)?;
        Ok(())
    }
}
