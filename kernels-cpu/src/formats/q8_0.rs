//! Q8_0: 32 elements per block, y = q·d with q an i8. Both a weight format and the
//! activation format that Q4_0, Q5_0 and Q8_0 weights are dotted with.
//!
//! `quantize` is the activation-quantization reference and reproduces `gguf.quants.Q8_0`
//! (and ggml's `quantize_row_q8_0_ref`) byte for byte: d = max|x| / 127 in f32,
//! q = round(x·(1/d)) with halves rounded away from zero (C's `roundf`, Rust's
//! `f32::round`), and d stored as f16 only afterwards (q uses the f32 d).

use half::f16;

use super::blocks::{BlockQ8_0, QK};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ8_0], y: &mut [f32]) {
    check_lengths(GgmlType::Q8_0, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = f32::from(q) * d;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ8_0]) {
    check_lengths(GgmlType::Q8_0, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = quantize_block(x);
        b.d = f16::from_f32(d);
        b.qs = qs;
    }
}

/// The f32 scale and the quants of one 32-element block (shared with Q8_1).
pub(crate) fn quantize_block(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, qs)
}
