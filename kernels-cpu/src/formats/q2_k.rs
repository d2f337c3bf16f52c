//! Q2_K: 256 elements in 16 sub-blocks of 16, y = (d·(sc & 0xF))·q − dmin·(sc >> 4) with q
//! in 0..=3. Bytes 32c..32c+32 of `qs` hold elements 128c + 32s + l at bit shift 2s.
//!
//! `dequantize` follows `gguf.quants.Q2_K`'s order of operations (d·sc and dmin·m in f32
//! first, then ·q, then −). `quantize` is ours (see `kquant_fit`).

use super::blocks::{BlockQ2K, QK_K};
use super::kquant_fit::AffineBlock;
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ2K], y: &mut [f32]) {
    check_lengths(GgmlType::Q2_K, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (i, y) in y.iter_mut().enumerate() {
            let sc = b.scales[i / 16];
            let dl = d * f32::from(sc & 0xF);
            let ml = dmin * f32::from(sc >> 4);
            *y = dl * f32::from(quant(b, i)) - ml;
        }
    }
}

/// The two-bit quant of element `i`.
fn quant(b: &BlockQ2K, i: usize) -> u8 {
    let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
    (b.qs[32 * c + l] >> (2 * s)) & 3
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ2K]) {
    check_lengths(GgmlType::Q2_K, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
        let fit = AffineBlock::<16>::quantize(x, 3, 15);
        for j in 0..16 {
            b.scales[j] = fit.sc[j] | (fit.m[j] << 4);
        }
        b.qs = [0; QK_K / 4];
        for (i, &q) in fit.q.iter().enumerate() {
            let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
            b.qs[32 * c + l] |= q << (2 * s);
        }
        b.d = fit.d;
        b.dmin = fit.dmin;
    }
}
