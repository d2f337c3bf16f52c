//! One device's working memory, allocated once from a [`ScratchLayout`].

use strata_kernels_cpu::QuantizedActs;

use crate::buffers::ScratchLayout;

pub struct Scratch {
    pub layout: ScratchLayout,
    pub x: Vec<f32>,
    pub xn: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub kv_row: Vec<f32>,
    pub q_latent: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub ff: Vec<f32>,
    pub out: Vec<f32>,
    pub router: Vec<f32>,
    pub route_ids: Vec<u32>,
    pub route_weights: Vec<f32>,
    pub gathered_in: Vec<f32>,
    pub gathered_out: Vec<f32>,
    pub logits: Vec<f32>,
    /// Quantized copy of the input of the next matrix product(s); its own buffers grow to
    /// at most `layout.act_q_bytes` and are then reused.
    pub acts: QuantizedActs,
    /// One token's experts' own activations (their down products), one per expert run
    /// side by side; grown on first use like `acts`, within `layout.act_q_bytes`.
    pub expert_acts: Vec<QuantizedActs>,
}

impl Scratch {
    /// The buffers of `layout`, zeroed, or `None` if the allocator refuses them.
    pub fn try_new(layout: ScratchLayout) -> Option<Scratch> {
        let z = |n: usize| bytemuck::try_zeroed_vec::<f32>(n).ok();
        Some(Scratch {
            layout,
            x: z(layout.x)?,
            xn: z(layout.xn)?,
            q: z(layout.q)?,
            k: z(layout.k)?,
            v: z(layout.v)?,
            attn: z(layout.attn)?,
            kv_row: z(layout.kv_row)?,
            q_latent: z(layout.q_latent)?,
            gate: z(layout.gate)?,
            up: z(layout.up)?,
            ff: z(layout.ff)?,
            out: z(layout.out)?,
            router: z(layout.router)?,
            route_ids: bytemuck::try_zeroed_vec(layout.route_ids).ok()?,
            route_weights: z(layout.route_weights)?,
            gathered_in: z(layout.gathered_in)?,
            gathered_out: z(layout.gathered_out)?,
            logits: z(layout.logits)?,
            acts: QuantizedActs::new(),
            expert_acts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};

    #[test]
    fn holds_what_the_layout_promises() {
        let cfg = ModelConfig {
            arch: Arch::Llama,
            n_layer: 2,
            n_embd: 64,
            n_ff: 176,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_rot: 16,
            rms_eps: 1e-5,
            rope_freq_base: 10000.0,
            rope_freq_scale: 1.0,
            n_ctx_train: 256,
            n_vocab: 80,
            tied_output: true,
            qkv_bias: false,
            qk_norm: false,
            yarn_orig_ctx: None,
            yarn_log_mul: 0.0,
            moe: None,
            mla: None,
        };
        for (n_batch, n_out) in [(16, 1), (4, 4)] {
            let layout = ScratchLayout::new(&cfg, n_batch, n_out);
            let s = Scratch::try_new(layout).unwrap();
            let held: usize = [
                &s.x,
                &s.xn,
                &s.q,
                &s.k,
                &s.v,
                &s.attn,
                &s.kv_row,
                &s.q_latent,
                &s.gate,
                &s.up,
                &s.ff,
                &s.out,
                &s.router,
                &s.route_weights,
                &s.gathered_in,
                &s.gathered_out,
                &s.logits,
            ]
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
                + s.route_ids.len();
            assert_eq!(held, layout.f32_elems());
            assert_eq!(s.logits.len(), n_out * cfg.n_vocab);
        }
    }
}
