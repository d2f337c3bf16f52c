//! Q4_K: 256 elements in 8 sub-blocks of 32, y = (d·sc_j)·q − (dmin·m_j) with q in 0..=15
//! and six-bit sc_j, m_j (packed as `k_scales` describes). Bytes 32k..32k+32 of `qs` hold
//! sub-block 2k in their low nibbles and 2k+1 in their high nibbles.
//!
//! `dequantize` follows `gguf.quants.Q4_K`'s order of operations. `quantize` is ours (see
//! `kquant_fit`).

use super::blocks::{BlockQ4K, QK_K};
use super::kquant_fit::AffineBlock;
use super::{check_lengths, k_scales, GgmlType};

pub fn dequantize(blocks: &[BlockQ4K], y: &mut [f32]) {
    check_lengths(GgmlType::Q4_K, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let (sc, m) = k_scales::unpack(&b.scales);
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let dl = d * f32::from(sc[j]);
            let ml = dmin * f32::from(m[j]);
            let shift = 4 * (j % 2);
            for (l, y) in y.iter_mut().enumerate() {
                let q = (b.qs[32 * (j / 2) + l] >> shift) & 0x0F;
                *y = dl * f32::from(q) - ml;
            }
        }
    }
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ4K]) {
    check_lengths(GgmlType::Q4_K, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
        let fit = AffineBlock::<8>::quantize(x, 15, 63);
        b.d = fit.d;
        b.dmin = fit.dmin;
        b.scales = k_scales::pack(&fit.sc, &fit.m);
        b.qs = [0; QK_K / 2];
        for (i, &q) in fit.q.iter().enumerate() {
            let (j, l) = (i / 32, i % 32);
            b.qs[32 * (j / 2) + l] |= q << (4 * (j % 2));
        }
    }
}
