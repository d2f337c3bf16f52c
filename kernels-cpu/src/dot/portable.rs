//! Portable dot products written with `wide`, for CPUs without a dedicated path.
//!
//! Blocks are decoded to signed quants (offset already applied) with scalar bit operations
//! the compiler vectorizes, then dotted 16 at a time in i16 lanes (`i16x16::dot`, a
//! multiply-add of pairs into i32) and scaled in f32 per block, as the reference does.

use half::f16;
use wide::{f32x8, i16x16, i32x8, i8x16};

use super::reference::k_scale_min;
use super::{row_blocks, ActRow, DotFn};
use crate::formats::blocks::*;
use crate::formats::float::f32_from_bf16_bits;
use crate::formats::GgmlType;

pub fn kernel(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => f32_dot,
        F16 => f16_dot,
        BF16 => bf16_dot,
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q2_K => q2_k,
        Q3_K => q3_k,
        Q4_K => q4_k,
        Q5_K => q5_k,
        Q6_K => q6_k,
        Q8_1 | Q8_K => return None,
    })
}

fn block<B: Block>(w: &[u8], i: usize) -> B {
    let size = std::mem::size_of::<B>();
    bytemuck::pod_read_unaligned(&w[i * size..(i + 1) * size])
}

/// Σ q·a over 16 signed quants, in i32 lanes.
#[inline]
fn dot16(q: &[i8], a: &[i8]) -> i32x8 {
    let q = i16x16::from_i8x16(i8x16::from(<[i8; 16]>::try_from(&q[..16]).expect("16")));
    let a = i16x16::from_i8x16(i8x16::from(<[i8; 16]>::try_from(&a[..16]).expect("16")));
    q.dot(a)
}

#[inline]
fn dot32(q: &[i8; 32], a: &[i8]) -> i32 {
    (dot16(&q[..16], &a[..16]) + dot16(&q[16..], &a[16..32])).reduce_add()
}

fn nibbles(qs: &[u8; 16], qh: u32, offset: i8) -> [i8; 32] {
    let mut q = [0i8; 32];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        q[j] = ((qs[j] & 0xF) | (h0 << 4)) as i8 - offset;
        q[j + 16] = ((qs[j] >> 4) | (h1 << 4)) as i8 - offset;
    }
    q
}

fn legacy(nb: usize, a: &ActRow, block: impl Fn(usize) -> ([i8; 32], f32, f32)) -> f32 {
    let mut sum = 0.0f32;
    for b in 0..nb {
        let (q, d, m) = block(b);
        sum += dot32(&q, &a.qs[32 * b..]) as f32 * (d * a.d[b]) + m * a.dsum[b];
    }
    sum
}

fn q4_0(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q4_0, w, a);
    legacy(nb, a, |i| {
        let b: BlockQ4_0 = block(w, i);
        (nibbles(&b.qs, 0, 8), b.d.to_f32(), 0.0)
    })
}

fn q4_1(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q4_1, w, a);
    legacy(nb, a, |i| {
        let b: BlockQ4_1 = block(w, i);
        (nibbles(&b.qs, 0, 0), b.d.to_f32(), b.m.to_f32())
    })
}

fn q5_0(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q5_0, w, a);
    legacy(nb, a, |i| {
        let b: BlockQ5_0 = block(w, i);
        (
            nibbles(&b.qs, u32::from_le_bytes(b.qh), 16),
            b.d.to_f32(),
            0.0,
        )
    })
}

fn q5_1(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q5_1, w, a);
    legacy(nb, a, |i| {
        let b: BlockQ5_1 = block(w, i);
        (
            nibbles(&b.qs, u32::from_le_bytes(b.qh), 0),
            b.d.to_f32(),
            b.m.to_f32(),
        )
    })
}

fn q8_0(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q8_0, w, a);
    legacy(nb, a, |i| {
        let b: BlockQ8_0 = block(w, i);
        (b.qs, b.d.to_f32(), 0.0)
    })
}

/// A K-quant super-block decoded: signed quants, one integer scale per 16, d, and the
/// min term dmin·Σ m_j·bsum_j (0 for formats without mins).
struct KDecoded {
    q: [i8; 256],
    sc: [i32; 16],
    d: f32,
    min_term: f32,
}

fn k_row(nb: usize, a: &ActRow, decode: impl Fn(usize, &BlockQ8K) -> KDecoded) -> f32 {
    let mut sum = 0.0f32;
    for b in 0..nb {
        let y = &a.q8_k[b];
        let k = decode(b, y);
        let mut isum = 0i32;
        for j in 0..16 {
            isum += k.sc[j] * dot16(&k.q[16 * j..], &y.qs[16 * j..]).reduce_add();
        }
        sum += y.d * (k.d * isum as f32 - k.min_term);
    }
    sum
}

fn q2_k(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q2_K, w, a);
    k_row(nb, a, |i, y| {
        let b: BlockQ2K = block(w, i);
        let mut q = [0i8; 256];
        for (e, q) in q.iter_mut().enumerate() {
            let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
            *q = ((b.qs[32 * h + l] >> (2 * s)) & 3) as i8;
        }
        let mins: i32 = (0..16)
            .map(|j| i32::from(b.scales[j] >> 4) * i32::from(y.bsums[j]))
            .sum();
        KDecoded {
            q,
            sc: b.scales.map(|s| i32::from(s & 0xF)),
            d: b.d.to_f32(),
            min_term: b.dmin.to_f32() * mins as f32,
        }
    })
}

fn q3_k(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q3_K, w, a);
    k_row(nb, a, |i, _| {
        let b: BlockQ3K = block(w, i);
        let mut q = [0i8; 256];
        for (e, q) in q.iter_mut().enumerate() {
            let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
            let low = ((b.qs[32 * h + l] >> (2 * s)) & 3) as i8;
            let high = (b.hmask[l] >> (4 * h + s)) & 1;
            *q = low - if high == 1 { 0 } else { 4 };
        }
        let s = &b.scales;
        let mut sc = [0i32; 16];
        for (j, sc) in sc.iter_mut().enumerate() {
            let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            *sc = i32::from(low | (high << 4)) - 32;
        }
        KDecoded {
            q,
            sc,
            d: b.d.to_f32(),
            min_term: 0.0,
        }
    })
}

fn q45_k(d: f16, dmin: f16, scales: &[u8; 12], q: [i8; 256], y: &BlockQ8K) -> KDecoded {
    let mut sc = [0i32; 16];
    let mut mins = 0i32;
    for j in 0..8 {
        let (s, m) = k_scale_min(j, scales);
        sc[2 * j] = i32::from(s);
        sc[2 * j + 1] = i32::from(s);
        mins += i32::from(m) * (i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]));
    }
    KDecoded {
        q,
        sc,
        d: d.to_f32(),
        min_term: dmin.to_f32() * mins as f32,
    }
}

fn q4_k(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q4_K, w, a);
    k_row(nb, a, |i, y| {
        let b: BlockQ4K = block(w, i);
        let mut q = [0i8; 256];
        for (e, q) in q.iter_mut().enumerate() {
            let byte = b.qs[32 * (e / 64) + e % 32];
            *q = (if (e / 32) % 2 == 0 {
                byte & 0xF
            } else {
                byte >> 4
            }) as i8;
        }
        q45_k(b.d, b.dmin, &b.scales, q, y)
    })
}

fn q5_k(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q5_K, w, a);
    k_row(nb, a, |i, y| {
        let b: BlockQ5K = block(w, i);
        let mut q = [0i8; 256];
        for (e, q) in q.iter_mut().enumerate() {
            let byte = b.qs[32 * (e / 64) + e % 32];
            let low = if (e / 32) % 2 == 0 {
                byte & 0xF
            } else {
                byte >> 4
            };
            *q = (low | (((b.qh[e % 32] >> (e / 32)) & 1) << 4)) as i8;
        }
        q45_k(b.d, b.dmin, &b.scales, q, y)
    })
}

fn q6_k(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q6_K, w, a);
    k_row(nb, a, |i, _| {
        let b: BlockQ6K = block(w, i);
        let mut q = [0i8; 256];
        for (e, q) in q.iter_mut().enumerate() {
            let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
            let byte = b.ql[64 * h + 32 * (s % 2) + l];
            let low = if s < 2 { byte & 0xF } else { byte >> 4 };
            *q = (low | (((b.qh[32 * h + l] >> (2 * s)) & 3) << 4)) as i8 - 32;
        }
        KDecoded {
            q,
            sc: b.scales.map(i32::from),
            d: b.d.to_f32(),
            min_term: 0.0,
        }
    })
}

/// Σ w·x with 8 f32 lanes; `wf(i)` is weight i as f32.
fn float_dot(n: usize, x: &[f32], wf: impl Fn(usize) -> f32) -> f32 {
    let mut acc = f32x8::splat(0.0);
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let wv = f32x8::from(std::array::from_fn::<f32, 8, _>(|k| wf(i + k)));
        let xv = f32x8::from(<[f32; 8]>::try_from(&x[i..i + 8]).expect("8"));
        acc = wv.mul_add(xv, acc);
    }
    acc.reduce_add() + (full..n).map(|i| wf(i) * x[i]).sum::<f32>()
}

fn f32_dot(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::F32, w, a);
    float_dot(n, a.x, |i| {
        f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]])
    })
}

fn f16_dot(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::F16, w, a);
    float_dot(n, a.x, |i| {
        f16::from_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])).to_f32()
    })
}

fn bf16_dot(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::BF16, w, a);
    float_dot(n, a.x, |i| {
        f32_from_bf16_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]]))
    })
}
