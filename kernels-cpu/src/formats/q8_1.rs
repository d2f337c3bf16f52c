//! Q8_1: 32 elements per block, y = q·d, plus s = d·Σq so that a Q4_1/Q5_1 weight's min m
//! enters a dot product as m·s. Activations only, never stored in files.
//!
//! `quantize` is the activation-quantization reference, following ggml's
//! `quantize_row_q8_1_ref`: d and q exactly as Q8_0 (halves away from zero), and
//! s = f16(f32(Σq) · d) with the f32 d, before d itself is rounded to f16.

use half::f16;

use super::blocks::{BlockQ8_1, QK};
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ8_1], y: &mut [f32]) {
    check_lengths(GgmlType::Q8_1, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = f32::from(q) * d;
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ8_1]) {
    check_lengths(GgmlType::Q8_1, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = super::q8_0::quantize_block(x);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
        b.qs = qs;
    }
}
