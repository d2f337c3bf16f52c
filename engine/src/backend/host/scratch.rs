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
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub ff: Vec<f32>,
    pub out: Vec<f32>,
    pub logits: Vec<f32>,
    /// Quantized copy of the input of the next matrix product(s); its own buffers grow to
    /// at most `layout.act_q_bytes` and are then reused.
    pub acts: QuantizedActs,
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
            gate: z(layout.gate)?,
            up: z(layout.up)?,
            ff: z(layout.ff)?,
            out: z(layout.out)?,
            logits: z(layout.logits)?,
            acts: QuantizedActs::new(),
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
        };
        for (n_batch, n_out) in [(16, 1), (4, 4)] {
            let layout = ScratchLayout::new(&cfg, n_batch, n_out);
            let s = Scratch::try_new(layout).unwrap();
            let held: usize = [
                &s.x, &s.xn, &s.q, &s.k, &s.v, &s.attn, &s.gate, &s.up, &s.ff, &s.out, &s.logits,
            ]
            .iter()
            .map(|b| b.len())
            .sum();
            assert_eq!(held, layout.f32_elems());
            assert_eq!(s.logits.len(), n_out * cfg.n_vocab);
        }
    }
}
