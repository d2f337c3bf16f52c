//! Q5_0: 32 elements per block, y = (q − 16)·d with q in 0..=31; the fifth bit of element
//! j is bit j of `qh` read as a little-endian u32.
//!
//! `quantize` reproduces `gguf.quants.Q5_0` byte for byte: d = (the first element of
//! largest magnitude) / −16, q = trunc(x·(1/d) + 16.5) clamped to 31 (half rounds up).

use half::f16;

use super::blocks::{BlockQ5_0, QK};
use super::legacy::{high_bits, pack_nibbles, signed_extreme, split_five_bits};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ5_0], y: &mut [f32]) {
    check_lengths(GgmlType::Q5_0, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(split_five_bits(&b.qs, b.qh).iter()) {
            *y = d * (i32::from(q) - 16) as f32;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ5_0]) {
    check_lengths(GgmlType::Q5_0, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let d = signed_extreme(x) / -16.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = ((v * id + 16.5).trunc() as u8).min(31);
        }
        b.d = f16::from_f32(d);
        b.qh = high_bits(&q);
        b.qs = pack_nibbles(&q);
    }
}
