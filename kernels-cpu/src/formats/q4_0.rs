//! Q4_0: 32 elements per block, y = (q − 8)·d with q in 0..=15.
//!
//! `quantize` reproduces `gguf.quants.Q4_0` (and ggml's `quantize_row_q4_0_ref`) byte for
//! byte: d = (the element of largest magnitude, the first such one) / −8, and
//! q = trunc(x·(1/d) + 8.5) clamped to 15 — rounding half up, not half to even.

use half::f16;

use super::blocks::{BlockQ4_0, QK};
use super::legacy::{signed_extreme, split_nibbles};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ4_0], y: &mut [f32]) {
    check_lengths(GgmlType::Q4_0, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let q = split_nibbles(&b.qs);
        for (y, &q) in y.iter_mut().zip(q.iter()) {
            *y = d * (i32::from(q) - 8) as f32;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ4_0]) {
    check_lengths(GgmlType::Q4_0, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let d = signed_extreme(x) / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = ((v * id + 8.5).trunc() as u8).min(15);
        }
        b.d = f16::from_f32(d);
        b.qs = super::legacy::pack_nibbles(&q);
    }
}
