//! Q5_1: 32 elements per block, y = q·d + m with five-bit q (fifth bits in `qh` as Q5_0).
//!
//! `quantize` reproduces `gguf.quants.Q5_1` byte for byte: m = min, d = (max − min)/31,
//! q = trunc((x − m)·(1/d) + 0.5) clamped to 31 (half rounds up). Dequantize computes d·q
//! in f32, then adds m, as `gguf` does.

use half::f16;

use super::blocks::{BlockQ5_1, QK};
use super::legacy::{high_bits, min_max, pack_nibbles, split_five_bits};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ5_1], y: &mut [f32]) {
    check_lengths(GgmlType::Q5_1, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, &q) in y.iter_mut().zip(split_five_bits(&b.qs, b.qh).iter()) {
            *y = d * f32::from(q) + m;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ5_1]) {
    check_lengths(GgmlType::Q5_1, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (((v - min) * id + 0.5).trunc() as u8).min(31);
        }
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        b.qh = high_bits(&q);
        b.qs = pack_nibbles(&q);
    }
}
