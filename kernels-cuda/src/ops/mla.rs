use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::ops::MlaShape;

use super::{as_i32, grid_yz, need};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

const OP: &str = "mla_attention";
/// The widest cached row mla.cu takes (18 values a lane): DeepSeek's 64 rotary values and
/// latent of 512.
pub const MLA_MAX_WIDTH: usize = 576;
/// The widest value (latent) part of a row (16 accumulators a lane and head).
pub const MLA_MAX_LATENT: usize = 512;
/// mla.cu's MLA_HEADS (query heads a CTA) and MLA_WARPS.
const HEADS_PER_CTA: usize = 4;
const THREADS: u32 = 4 * 32;

impl Gpu {
    /// Multi-head latent attention in its absorbed form over an f16 latent cache, as
    /// kernels-cpu's [`mla_attention`](strata_kernels_cpu::ops::mla_attention): every head
    /// of every token attends over the same cached rows `[rotary key | latent]` (`cache`:
    /// `n_ctx × width` f16 bits), the whole row as the key and the part from `s.v_off` as
    /// the value, scores scaled by `s.scale`. `q` is `n_tokens × n_heads × width`, `out`
    /// `n_tokens × n_heads × (width − v_off)`; token t is at position `pos[t]` (device
    /// memory) and attends to rows 0 … `pos[t]`, clamped to the cache's rows. Rows up to
    /// [`MLA_MAX_WIDTH`] wide with a value part up to [`MLA_MAX_LATENT`].
    pub fn mla_attention(
        &self,
        q: &DeviceBuffer<f32>,
        cache: &DeviceBuffer<u16>,
        width: usize,
        pos: &DeviceBuffer<i32>,
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
        need(OP, "q", q.len(), s.n_tokens * s.n_heads * width)?;
        need(OP, "out", out.len(), s.n_tokens * s.n_heads * dv)?;
        need(OP, "pos", pos.len(), s.n_tokens)?;
        let (nh, w, v_off, n_ctx) = (
            as_i32(OP, "n_heads", s.n_heads)?,
            width as i32,
            s.v_off as i32,
            as_i32(OP, "cache rows", cache.len() / width)?,
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
        l.arg(q.slice())
            .arg(cache.slice())
            .arg(out.slice_mut())
            .arg(&nh)
            .arg(&w)
            .arg(&v_off)
            .arg(pos.slice())
            .arg(&n_ctx)
            .arg(&s.scale);
        // SAFETY: matches mla_attention_f16(q, cache, out, n_heads, width, v_off, pos, n_ctx,
        // scale); sizes checked above, positions clamped to n_ctx in the kernel.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
