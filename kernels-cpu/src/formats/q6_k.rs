//! Q6_K: 256 elements in 16 sub-blocks of 16, y = (d·sc_j)·(q − 32) with six-bit q and i8
//! scales. For each half c of the block (128 elements), element 128c + 64h + l (l < 64)
//! has its low four bits in nibble h of `ql[64c + l]`, and element 128c + 32s + l (l < 32)
//! its top two bits at shift 2s of `qh[32c + l]`.
//!
//! `dequantize` follows `gguf.quants.Q6_K`'s order (d·sc first, then ·(q − 32)).
//! `quantize` is ours (see `kquant_fit`).

use super::blocks::{BlockQ6K, QK_K};
use super::kquant_fit::SignedBlock;
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ6K], y: &mut [f32]) {
    check_lengths(GgmlType::Q6_K, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (i, y) in y.iter_mut().enumerate() {
            let dl = d * f32::from(b.scales[i / 16]);
            *y = dl * f32::from(quant(b, i) as i8 - 32);
        }
    }
}

/// The unsigned six-bit quant of element `i`.
fn quant(b: &BlockQ6K, i: usize) -> u8 {
    let (c, r) = (i / 128, i % 128);
    let low = (b.ql[64 * c + r % 64] >> (4 * (r / 64))) & 0x0F;
    let high = (b.qh[32 * c + r % 32] >> (2 * (r / 32))) & 0x03;
    low | (high << 4)
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ6K]) {
    check_lengths(GgmlType::Q6_K, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
        let fit = SignedBlock::<16>::quantize(x, (-32, 31), (-128, 127));
        b.ql = [0; QK_K / 2];
        b.qh = [0; QK_K / 4];
        for (i, &q) in fit.q.iter().enumerate() {
            let u = (q + 32) as u8;
            let (c, r) = (i / 128, i % 128);
            b.ql[64 * c + r % 64] |= (u & 0x0F) << (4 * (r / 64));
            b.qh[32 * c + r % 32] |= (u >> 4) << (2 * (r / 32));
        }
        b.scales = fit.sc;
        b.d = fit.d;
    }
}
