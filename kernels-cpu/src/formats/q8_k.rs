//! Q8_K: 256 elements per block, y = q·d with an f32 d, plus `bsums` (the sum of each 16
//! quants) so that a K-quant weight's mins enter a dot product as dmin·Σ m_j·bsum_j.
//! Activations only, never stored in files.
//!
//! `quantize` is the activation-quantization reference, following ggml's
//! `quantize_row_q8_K_ref`: take the first element of largest magnitude, `max`; the scale
//! is iscale = −127/max, q = round(iscale·x) with halves to even (ggml's `nearest_int`),
//! capped at 127, and d = 1/iscale. Note the sign: d is negative when `max` is positive,
//! so that element becomes −127. An all-zero block has d = 0 and all quants and sums 0.

use super::blocks::{BlockQ8K, QK_K};
use super::legacy::signed_extreme;
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ8K], y: &mut [f32]) {
    check_lengths(GgmlType::Q8_K, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = b.d * f32::from(q);
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ8K]) {
    check_lengths(GgmlType::Q8_K, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
        let max = signed_extreme(x);
        if max == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (sum, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *sum = qs.iter().map(|&q| i16::from(q)).sum();
        }
        b.d = 1.0 / iscale;
    }
}
