use cudarc::driver::PushKernelArg;

use super::{as_i32, grid_1d, need};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

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
        if !p.n_rot.is_multiple_of(2) || p.n_rot > head_dim || p.n_rot == 0 {
            return Err(CudaError::shape(
                OP,
                format!(
                    "n_rot = {} must be even, nonzero and at most head_dim = {head_dim}",
                    p.n_rot
                ),
            ));
        }
        need(OP, "x", x.len(), ntok * nhead * head_dim)?;
        need(OP, "pos", pos.len(), ntok)?;
        // As the CPU reference: base^(−2/n_rot) in f32, multiplied in once per pair.
        let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
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
        b.arg(&theta_scale).arg(&p.freq_scale);
        // SAFETY: matches rope.cu's signature; sizes checked above.
        unsafe { b.launch(grid_1d(ntok * nhead * p.n_rot / 2, 256)) }.during(OP)?;
        Ok(())
    }
}
