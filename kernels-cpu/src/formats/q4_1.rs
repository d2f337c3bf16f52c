//! Q4_1: 32 elements per block, y = q·d + m with q in 0..=15.
//!
//! `quantize` reproduces `gguf.quants.Q4_1` byte for byte: m = min, d = (max − min)/15,
//! q = trunc((x − m)·(1/d) + 0.5) clamped to 15 (half rounds up). Dequantize computes
//! d·q in f32, then adds m (two roundings, no fused multiply-add), as `gguf` does.

use half::f16;

use super::blocks::{BlockQ4_1, QK};
use super::legacy::{min_max, pack_nibbles, split_nibbles};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ4_1], y: &mut [f32]) {
    check_lengths(GgmlType::Q4_1, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, &q) in y.iter_mut().zip(split_nibbles(&b.qs).iter()) {
            *y = d * f32::from(q) + m;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ4_1]) {
    check_lengths(GgmlType::Q4_1, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (((v - min) * id + 0.5).trunc() as u8).min(15);
        }
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        b.qs = pack_nibbles(&q);
    }
}
