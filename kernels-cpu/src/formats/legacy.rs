//! Helpers shared by the 32-element legacy formats (Q4_0 … Q5_1).

use super::blocks::QK;

/// The 32 four-bit values of a block: element j is the low nibble of `qs[j]`, element
/// j + 16 the high nibble.
pub(crate) fn split_nibbles(qs: &[u8; QK / 2]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &byte) in qs.iter().enumerate() {
        q[j] = byte & 0x0F;
        q[j + QK / 2] = byte >> 4;
    }
    q
}

/// Inverse of [`split_nibbles`]; only the low four bits of each value are kept.
pub(crate) fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for (j, byte) in qs.iter_mut().enumerate() {
        *byte = (q[j] & 0x0F) | (q[j + QK / 2] << 4);
    }
    qs
}

/// The fifth bits, bit j of the little-endian u32 being bit 4 of element j.
pub(crate) fn high_bits(q: &[u8; QK]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from((v >> 4) & 1) << j;
    }
    qh.to_le_bytes()
}

/// Five-bit values from the nibbles and the fifth bits.
pub(crate) fn split_five_bits(qs: &[u8; QK / 2], qh: [u8; 4]) -> [u8; QK] {
    let mut q = split_nibbles(qs);
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as u8) << 4;
    }
    q
}

/// The element of largest magnitude, keeping its sign; the first one on ties, and `x[0]`
/// when all are zero (numpy's `argmax` of `abs`, which is also what makes an all-zero block
/// of `-0.0`s give d = +0.0 as `gguf` does).
pub(crate) fn signed_extreme(x: &[f32]) -> f32 {
    let mut max = x[0];
    let mut amax = max.abs();
    for &v in &x[1..] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// (min, max) of a block, as numpy's `min`/`max` give them for finite input.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((x[0], x[0]), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}
