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
    pub fn new(layout: ScratchLayout) -> Scratch {
        let z = |n: usize| vec![0.0f32; n];
        Scratch {
            layout,
            x: z(layout.x),
            xn: z(layout.xn),
            q: z(layout.q),
            k: z(layout.k),
            v: z(layout.v),
            attn: z(layout.attn),
            gate: z(layout.gate),
            up: z(layout.up),
            ff: z(layout.ff),
            out: z(layout.out),
            logits: z(layout.logits),
            acts: QuantizedActs::new(),
        }
    }

    /// Bytes held by the f32 buffers (what [`ScratchLayout::f32_elems`] promised).
    pub fn f32_bytes(&self) -> u64 {
        [
            &self.x,
            &self.xn,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.gate,
            &self.up,
            &self.ff,
            &self.out,
            &self.logits,
        ]
        .iter()
        .map(|b| b.len() as u64 * 4)
        .sum()
    }
}
