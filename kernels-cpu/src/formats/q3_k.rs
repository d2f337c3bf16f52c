//! Q3_K: 256 elements in 16 sub-blocks of 16, y = (d·(sc − 32))·q with q in −4..=3: the low
//! two bits of q + 4 in `qs` (as Q2_K), its third bit in `hmask` (element 32b + l is bit b
//! of `hmask[l]`; a set bit means no −4). The 16 six-bit scales are packed in 12 bytes:
//! low nibbles in bytes 0..8 (scale j < 8 in the low half of byte j, scale j ≥ 8 in the
//! high half of byte j − 8), the top two bits in bytes 8..12 (scale j at byte 8 + j % 4,
//! shift 2·(j / 4)).
//!
//! `dequantize` follows `gguf.quants.Q3_K`'s order (d·(sc − 32) first, then ·q).
//! `quantize` is ours (see `kquant_fit`).

use super::blocks::{BlockQ3K, K_SCALE_SIZE, QK_K};
use super::kquant_fit::SignedBlock;
use super::{check_lengths, GgmlType};

pub fn dequantize(blocks: &[BlockQ3K], y: &mut [f32]) {
    check_lengths(GgmlType::Q3_K, blocks.len(), y.len());
    for (b, y) in blocks.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let scales = unpack_scales(&b.scales);
        for (i, y) in y.iter_mut().enumerate() {
            let dl = d * f32::from(scales[i / 16]);
            *y = dl * f32::from(quant(b, i));
        }
    }
}

/// The signed three-bit quant of element `i`.
fn quant(b: &BlockQ3K, i: usize) -> i8 {
    let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
    let low = ((b.qs[32 * c + l] >> (2 * s)) & 3) as i8;
    let high_set = (b.hmask[i % 32] >> (i / 32)) & 1 == 1;
    if high_set {
        low
    } else {
        low - 4
    }
}

/// The 16 six-bit scales of a Q3_K block, already minus 32 (in −32..=31).
pub fn unpack_scales(packed: &[u8; K_SCALE_SIZE]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, out) in out.iter_mut().enumerate() {
        let low = (packed[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *out = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// Inverse of [`unpack_scales`]; scales must be in −32..=31.
pub fn pack_scales(scales: &[i8; 16]) -> [u8; K_SCALE_SIZE] {
    let mut packed = [0u8; K_SCALE_SIZE];
    for (j, &s) in scales.iter().enumerate() {
        let v = (s + 32) as u8;
        packed[j % 8] |= (v & 0x0F) << (4 * (j / 8));
        packed[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
    }
    packed
}

pub fn quantize(x: &[f32], blocks: &mut [BlockQ3K]) {
    check_lengths(GgmlType::Q3_K, blocks.len(), x.len());
    for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
        let fit = SignedBlock::<16>::quantize(x, (-4, 3), (-32, 31));
        b.scales = pack_scales(&fit.sc);
        b.qs = [0; QK_K / 4];
        b.hmask = [0; QK_K / 8];
        for (i, &q) in fit.q.iter().enumerate() {
            let u = (q + 4) as u8;
            let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
            b.qs[32 * c + l] |= (u & 3) << (2 * s);
            b.hmask[i % 32] |= (u >> 2) << (i / 32);
        }
        b.d = fit.d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_pack_and_unpack() {
        let scales: [i8; 16] = std::array::from_fn(|j| (j as i8) * 4 - 32 + (j as i8 % 3));
        assert_eq!(unpack_scales(&pack_scales(&scales)), scales);
    }
}
