//! Multi-head latent attention (DeepSeek-V2/V3/R1) in its absorbed form: the steps of the
//! CPU's forward pass that have no general kernel (the latent cache rows, the query split,
//! an older file's transposed absorption) and the attention itself. Kernels in
//! `kernels/mla.cu`; the absorption through a newer file's `attn_k_b` and the values through
//! `attn_v_b` are [`Gpu::matvec_experts`] over the heads.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::ops::MlaShape;
use strata_kernels_cpu::GgmlType;

use super::moe::row_grid;
use super::{as_i32, grid_yz, kernel_suffix, need, weight_bytes, CacheRows};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu, RopeParams};

const OP: &str = "mla_attention";
/// The widest cached row mla.cu takes (18 values a lane): DeepSeek's 64 rotary values and
/// latent of 512.
pub const MLA_MAX_WIDTH: usize = 576;
/// The widest value (latent) part of a row (16 accumulators a lane and head).
pub const MLA_MAX_LATENT: usize = 512;
/// mla.cu's MLA_HEADS (query heads a CTA) and MLA_WARPS.
const HEADS_PER_CTA: usize = 4;
const THREADS: u32 = 4 * 32;
/// mla.cu's MLA_MAX_NOPE: the widest query part mla_absorb_t stages.
pub const MLA_MAX_NOPE: usize = 512;
/// mla.cu's MLA_T_THREADS.
const T_THREADS: u32 = 128;
/// Threads a CTA of mla_store_latent (a token) and mla_split_q (a head of a token).
const STORE_THREADS: u32 = 256;
const SPLIT_THREADS: u32 = 64;

/// The widths of one MLA block: `n_heads` heads of a query part `nope` (absorbed into the
/// latent space) and a rotary part `pe`, and a latent of `kvr` values (a cached row is
/// `pe + kvr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaDims {
    pub n_heads: usize,
    pub nope: usize,
    pub pe: usize,
    pub kvr: usize,
}

impl Gpu {
    /// The latent cache's rows of `ntok` tokens from `kv` (`ntok × (kvr + pe)`, attn_kv_a_mqa's
    /// output: the latent, then the rotary key): `[rope(k_pe) | rms_norm(latent) · norm]`
    /// stored as f16 bits at row `base[t] + pos[t]` of `cache` (rows of `pe + kvr`,
    /// [`CacheRows`]), as the CPU's forward pass builds and appends them. The first
    /// `rope.n_rot` values of the rotary part rotate; a position past its sequence's rows
    /// stores nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn mla_store_latent(
        &self,
        kv: &DeviceBuffer<f32>,
        norm: &DeviceBuffer<f32>,
        cache: &mut DeviceBuffer<u16>,
        at: &CacheRows,
        ntok: usize,
        d: &MlaDims,
        eps: f32,
        rope: &RopeParams,
    ) -> Result<(), CudaError> {
        const OP: &str = "mla_store_latent";
        let angle = rope.kernel_args(OP, d.pe)?;
        let width = d.pe + d.kvr;
        if d.kvr == 0 || cache.is_empty() || !cache.len().is_multiple_of(width) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "a cache of {} values is not whole rows of {width}, or kv_lora = 0",
                    cache.len()
                ),
            ));
        }
        need(OP, "kv", kv.len(), ntok * width)?;
        need(OP, "norm", norm.len(), d.kvr)?;
        let (n_ctx, rows) = at.check(OP, ntok, cache.len() / width)?;
        let ints = [
            as_i32(OP, "kv_lora", d.kvr)?,
            as_i32(OP, "rotary part", d.pe)?,
            as_i32(OP, "n_rot", rope.n_rot)?,
            n_ctx,
            rows,
        ];
        let cfg = row_grid(OP, "ntok", ntok, STORE_THREADS)?;
        let name = if rope.neox {
            "mla_store_latent_neox"
        } else {
            "mla_store_latent_norm"
        };
        let f = self.function("mla", name)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(kv.slice())
            .arg(norm.slice())
            .arg(cache.slice_mut())
            .arg(at.pos.slice())
            .arg(at.base.slice());
        for i in &ints {
            l.arg(i);
        }
        l.arg(&eps);
        for a in &angle {
            l.arg(a);
        }
        // SAFETY: matches MLA_STORE_LATENT(kv, norm, cache, pos, base, kvr, pe, n_rot, n_ctx,
        // rows, eps, ROPE_PARAMS); sizes checked above, rows bounded in the kernel.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// Each head's query `q` (`ntok × n_heads × (nope + pe)`) into its part to absorb, `qn`
    /// (`ntok × n_heads × nope`), and its rotary part `q_pe` (`ntok × n_heads × pe`), the
    /// first `rope.n_rot` values of that rotated at `pos[t]`.
    #[allow(clippy::too_many_arguments)]
    pub fn mla_split_q(
        &self,
        q: &DeviceBuffer<f32>,
        qn: &mut DeviceBuffer<f32>,
        q_pe: &mut DeviceBuffer<f32>,
        pos: &DeviceBuffer<i32>,
        ntok: usize,
        d: &MlaDims,
        rope: &RopeParams,
    ) -> Result<(), CudaError> {
        const OP: &str = "mla_split_q";
        let angle = rope.kernel_args(OP, d.pe)?;
        let heads = ntok * d.n_heads;
        need(OP, "q", q.len(), heads * (d.nope + d.pe))?;
        need(OP, "qn", qn.len(), heads * d.nope)?;
        need(OP, "q_pe", q_pe.len(), heads * d.pe)?;
        need(OP, "pos", pos.len(), ntok)?;
        let ints = [
            as_i32(OP, "n_heads", d.n_heads)?,
            as_i32(OP, "qk_nope", d.nope)?,
            as_i32(OP, "rotary part", d.pe)?,
            as_i32(OP, "n_rot", rope.n_rot)?,
        ];
        let mut cfg = row_grid(OP, "n_heads", d.n_heads, SPLIT_THREADS)?;
        cfg.grid_dim.1 = grid_yz(OP, "ntok", ntok)?;
        let name = if rope.neox {
            "mla_split_q_neox"
        } else {
            "mla_split_q_norm"
        };
        let f = self.function("mla", name)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(q.slice())
            .arg(qn.slice_mut())
            .arg(q_pe.slice_mut())
            .arg(pos.slice());
        for i in &ints {
            l.arg(i);
        }
        for a in &angle {
            l.arg(a);
        }
        // SAFETY: matches MLA_SPLIT_Q(q, qn, q_pe, pos, n_heads, nope, pe, n_rot,
        // ROPE_PARAMS); sizes checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// An older file's absorption of the queries into the latent space, through the k rows
    /// of `attn_kv_b` read transposed: `lat[s] = W_hᵀ · x[s]` for the `n_slot` slots (slot
    /// s is token s / n_heads's head h = s mod n_heads), `w` holding each head's `nope` k
    /// rows of `kvr` values of `ty` one head after the other (`n_heads · nope` rows), `x`
    /// `n_slot × nope`, `lat` `n_slot × kvr`.
    pub fn mla_absorb_t(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        x: &DeviceBuffer<f32>,
        lat: &mut DeviceBuffer<f32>,
        n_slot: usize,
        d: &MlaDims,
    ) -> Result<(), CudaError> {
        const OP: &str = "mla_absorb_t";
        let name = format!("{OP}_{}", kernel_suffix(OP, ty)?);
        if d.nope == 0 || d.nope > MLA_MAX_NOPE || d.n_heads == 0 {
            return Err(CudaError::shape(
                OP,
                format!(
                    "qk_nope = {} not in 1..={MLA_MAX_NOPE}, or no heads",
                    d.nope
                ),
            ));
        }
        need(
            OP,
            "w (bytes)",
            w.len(),
            weight_bytes(OP, ty, d.kvr, d.n_heads * d.nope)?,
        )?;
        need(OP, "x", x.len(), n_slot * d.nope)?;
        need(OP, "lat", lat.len(), n_slot * d.kvr)?;
        let ints = [
            as_i32(OP, "n_heads", d.n_heads)?,
            as_i32(OP, "qk_nope", d.nope)?,
            as_i32(OP, "kv_lora", d.kvr)?,
        ];
        let mut cfg = row_grid(OP, "n_slot", n_slot, T_THREADS)?;
        cfg.grid_dim.1 = grid_yz(OP, "kv_lora / 128", d.kvr.div_ceil(T_THREADS as usize))?;
        let f = self.function("mla", &name)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(w.slice()).arg(x.slice()).arg(lat.slice_mut());
        for i in &ints {
            l.arg(i);
        }
        // SAFETY: matches mla_absorb_t_<fmt>(w, x, lat, n_heads, nope, kvr); sizes checked
        // above (w holds n_heads·nope rows of kvr, whole blocks).
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }

    /// Multi-head latent attention in its absorbed form over an f16 latent cache, as
    /// kernels-cpu's [`mla_attention`](strata_kernels_cpu::ops::mla_attention): every head
    /// of every token attends over its sequence's cached rows `[rotary key | latent]`
    /// (`cache`: rows of `width` f16 bits), the whole row as the key and the part from `s.v_off` as
    /// the value, scores scaled by `s.scale`. A head's query is `[q_pe | q_lat]`: `q_pe`
    /// is `n_tokens × n_heads × v_off` (the rotary part), `q_lat` `n_tokens × n_heads ×
    /// (width − v_off)` (the part absorbed into the latent space); `out`
    /// `n_tokens × n_heads × (width − v_off)`; token t attends to its sequence's rows
    /// 0 … `pos[t]` ([`CacheRows`]), clamped to `n_ctx`. Rows up to
    /// [`MLA_MAX_WIDTH`] wide with a value part up to [`MLA_MAX_LATENT`].
    #[allow(clippy::too_many_arguments)]
    pub fn mla_attention(
        &self,
        q_pe: &DeviceBuffer<f32>,
        q_lat: &DeviceBuffer<f32>,
        cache: &DeviceBuffer<u16>,
        width: usize,
        at: &CacheRows,
        out: &mut DeviceBuffer<f32>,
        s: &MlaShape,
    ) -> Result<(), CudaError> {
        if width == 0 || width > MLA_MAX_WIDTH {
            return Err(CudaError::shape(
                OP,
                format!("row width = {width} not in 1..={MLA_MAX_WIDTH}"),
            ));
        }
        if s.v_off >= width || width - s.v_off > MLA_MAX_LATENT {
            return Err(CudaError::shape(
                OP,
                format!(
                    "value offset {} leaves no value, or more than {MLA_MAX_LATENT}, in rows \
                     of {width}",
                    s.v_off
                ),
            ));
        }
        if s.n_heads == 0 {
            return Err(CudaError::shape(OP, "n_heads = 0: no heads"));
        }
        if cache.is_empty() || !cache.len().is_multiple_of(width) {
            return Err(CudaError::shape(
                OP,
                format!(
                    "a cache of {} values is not whole rows of {width}, or none",
                    cache.len()
                ),
            ));
        }
        let dv = width - s.v_off;
        need(OP, "q_pe", q_pe.len(), s.n_tokens * s.n_heads * s.v_off)?;
        need(OP, "q_lat", q_lat.len(), s.n_tokens * s.n_heads * dv)?;
        need(OP, "out", out.len(), s.n_tokens * s.n_heads * dv)?;
        let (n_ctx, rows) = at.check(OP, s.n_tokens, cache.len() / width)?;
        let (nh, w, v_off) = (
            as_i32(OP, "n_heads", s.n_heads)?,
            width as i32,
            s.v_off as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (
                s.n_heads.div_ceil(HEADS_PER_CTA) as u32,
                grid_yz(OP, "n_tokens", s.n_tokens)?,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("mla", "mla_attention_f16")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(q_pe.slice())
            .arg(q_lat.slice())
            .arg(cache.slice())
            .arg(out.slice_mut())
            .arg(&nh)
            .arg(&w)
            .arg(&v_off)
            .arg(at.pos.slice())
            .arg(at.base.slice())
            .arg(&n_ctx)
            .arg(&rows)
            .arg(&s.scale);
        // SAFETY: matches mla_attention_f16(q_pe, q_lat, cache, out, n_heads, width, v_off,
        // pos, base, n_ctx, rows, scale); sizes checked above, rows bounded in the kernel.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
