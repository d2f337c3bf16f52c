//! Scalar reference dot products, written from the block structs and the formulas in
//! `formats`: the twin every fast path is tested against.
//!
//! Each weight block is dotted with its activation block in integers (exact), then scaled
//! and summed in f32 in block order, as ggml's `ggml_vec_dot_*_ref` do; so these also match
//! golden `y_q` (ggml-style results with quantized activations) up to f32 rounding.

use bytemuck::pod_read_unaligned;
use half::f16;

use super::ActRow;
use crate::formats::blocks::*;
use crate::formats::float::f32_from_bf16_bits;

/// Block `i` of a weight row given as raw bytes of any alignment.
fn block<B: Block>(w: &[u8], i: usize) -> B {
    let size = std::mem::size_of::<B>();
    pod_read_unaligned(&w[i * size..(i + 1) * size])
}

fn blocks<B: Block>(w: &[u8]) -> impl Iterator<Item = B> + '_ {
    (0..w.len() / std::mem::size_of::<B>()).map(move |i| block(w, i))
}

pub fn f32_f32(w: &[u8], a: &ActRow) -> f32 {
    w.chunks_exact(4)
        .zip(a.x)
        .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
        .sum()
}

pub fn f16_f32(w: &[u8], a: &ActRow) -> f32 {
    let h = |b: &[u8]| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    w.chunks_exact(2).zip(a.x).map(|(b, x)| h(b) * x).sum()
}

pub fn bf16_f32(w: &[u8], a: &ActRow) -> f32 {
    let h = |b: &[u8]| f32_from_bf16_bits(u16::from_le_bytes([b[0], b[1]]));
    w.chunks_exact(2).zip(a.x).map(|(b, x)| h(b) * x).sum()
}

/// The 32 values of a legacy block, element j from the low nibble of qs[j], j+16 the high.
fn nibbles(qs: &[u8; 16]) -> [i32; 32] {
    let mut q = [0; 32];
    for j in 0..16 {
        q[j] = i32::from(qs[j] & 0x0F);
        q[j + 16] = i32::from(qs[j] >> 4);
    }
    q
}

/// Adds the fifth bit (bit j of `qh` as a little-endian u32) to element j.
fn with_fifth_bit(mut q: [i32; 32], qh: [u8; 4]) -> [i32; 32] {
    let qh = u32::from_le_bytes(qh);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((qh >> j) & 1) as i32) << 4;
    }
    q
}

fn idot(q: &[i32], a: &[i8]) -> i32 {
    q.iter().zip(a).map(|(&q, &a)| q * i32::from(a)).sum()
}

pub fn q4_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ4_0>(w).zip(a.q8_0) {
        let q = nibbles(&b.qs).map(|v| v - 8);
        sum += idot(&q, &y.qs) as f32 * (b.d.to_f32() * y.d.to_f32());
    }
    sum
}

pub fn q4_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ4_1>(w).zip(a.q8_1) {
        let q = nibbles(&b.qs);
        sum += idot(&q, &y.qs) as f32 * (b.d.to_f32() * y.d.to_f32()) + b.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub fn q5_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ5_0>(w).zip(a.q8_0) {
        let q = with_fifth_bit(nibbles(&b.qs), b.qh).map(|v| v - 16);
        sum += idot(&q, &y.qs) as f32 * (b.d.to_f32() * y.d.to_f32());
    }
    sum
}

pub fn q5_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ5_1>(w).zip(a.q8_1) {
        let q = with_fifth_bit(nibbles(&b.qs), b.qh);
        sum += idot(&q, &y.qs) as f32 * (b.d.to_f32() * y.d.to_f32()) + b.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub fn q8_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ8_0>(w).zip(a.q8_0) {
        let q = b.qs.map(i32::from);
        sum += idot(&q, &y.qs) as f32 * (b.d.to_f32() * y.d.to_f32());
    }
    sum
}

/// Σ over the 16 sums of 16 activations, each times its weight.
fn bsum_dot(bsums: &[i16; 16], m: impl Fn(usize) -> i32) -> i32 {
    (0..16).map(|j| i32::from(bsums[j]) * m(j)).sum()
}

pub fn q2_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ2K>(w).zip(a.q8_k) {
        // Element 128·h + 32·s + l sits in qs[32·h + l] at bit shift 2·s.
        let mut isum = 0i32;
        for h in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let e = 128 * h + 32 * s + l;
                    let q = i32::from((b.qs[32 * h + l] >> (2 * s)) & 3);
                    isum += i32::from(b.scales[e / 16] & 0xF) * q * i32::from(y.qs[e]);
                }
            }
        }
        let mins = bsum_dot(&y.bsums, |j| i32::from(b.scales[j] >> 4));
        sum += y.d * b.d.to_f32() * isum as f32 - y.d * b.dmin.to_f32() * mins as f32;
    }
    sum
}

/// The sixteen 6-bit Q3_K scales, unpacked from 12 bytes (low nibbles from bytes 0–7, high
/// two bits from bytes 8–11), each minus 32.
fn q3_k_scales(s: &[u8; 12]) -> [i32; 16] {
    let mut out = [0; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = i32::from(low | (high << 4)) - 32;
    }
    out
}

pub fn q3_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ3K>(w).zip(a.q8_k) {
        let sc = q3_k_scales(&b.scales);
        let mut isum = 0i32;
        // As Q2_K for the low two bits; the high bit of element e is bit (e / 32) of hmask[e % 32].
        for h in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let e = 128 * h + 32 * s + l;
                    let low = i32::from((b.qs[32 * h + l] >> (2 * s)) & 3);
                    let high = (b.hmask[l] >> (4 * h + s)) & 1;
                    let q = low - if high == 1 { 0 } else { 4 };
                    isum += sc[e / 16] * q * i32::from(y.qs[e]);
                }
            }
        }
        sum += y.d * b.d.to_f32() * isum as f32;
    }
    sum
}

/// Scale and min of sub-block j (of 8) of Q4_K/Q5_K, six bits each.
pub(crate) fn k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q45_k(d: f16, dmin: f16, scales: &[u8; 12], q: impl Fn(usize) -> i32, y: &BlockQ8K) -> f32 {
    let mut isum = 0i32;
    let mut mins = 0i32;
    for j in 0..8 {
        let (sc, m) = k_scale_min(j, scales);
        let part: i32 = (32 * j..32 * j + 32)
            .map(|e| q(e) * i32::from(y.qs[e]))
            .sum();
        isum += i32::from(sc) * part;
        mins += i32::from(m) * (i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]));
    }
    y.d * d.to_f32() * isum as f32 - y.d * dmin.to_f32() * mins as f32
}

pub fn q4_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ4K>(w).zip(a.q8_k) {
        // Sub-block 2k is the low nibbles of qs[32k..32k+32], 2k+1 the high ones.
        let q = |e: usize| {
            let byte = b.qs[32 * (e / 64) + e % 32];
            i32::from(if (e / 32).is_multiple_of(2) {
                byte & 0xF
            } else {
                byte >> 4
            })
        };
        sum += q45_k(b.d, b.dmin, &b.scales, q, y);
    }
    sum
}

pub fn q5_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ5K>(w).zip(a.q8_k) {
        let q = |e: usize| {
            let byte = b.qs[32 * (e / 64) + e % 32];
            let low = if (e / 32).is_multiple_of(2) {
                byte & 0xF
            } else {
                byte >> 4
            };
            let high = (b.qh[e % 32] >> (e / 32)) & 1;
            i32::from(low | (high << 4))
        };
        sum += q45_k(b.d, b.dmin, &b.scales, q, y);
    }
    sum
}

pub fn q6_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in blocks::<BlockQ6K>(w).zip(a.q8_k) {
        // Half h (128 elements) uses ql[64h..64h+64] and qh[32h..32h+32]; within it, quarter
        // s takes nibble s/2 of ql[64h + 32(s%2) + l] and bits 2s..2s+2 of qh[32h + l].
        let mut isum = 0i32;
        for h in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let e = 128 * h + 32 * s + l;
                    let byte = b.ql[64 * h + 32 * (s % 2) + l];
                    let low = if s < 2 { byte & 0xF } else { byte >> 4 };
                    let high = (b.qh[32 * h + l] >> (2 * s)) & 3;
                    let q = i32::from(low | (high << 4)) - 32;
                    isum += i32::from(b.scales[e / 16]) * q * i32::from(y.qs[e]);
                }
            }
        }
        sum += y.d * b.d.to_f32() * isum as f32;
    }
    sum
}
