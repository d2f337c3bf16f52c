//! Portable dot products written with `wide` (SSE2 on x86-64 by default, NEON on aarch64),
//! for CPUs without a dedicated path.
//!
//! Quantized formats work on 16-bit words: 16 bytes loaded as 8 words hold 16 quants, the
//! even-numbered ones in the low bytes and the odd ones in the high bytes (little-endian, as
//! the block layouts are). One shift and one mask per word vector extract a field (a nibble,
//! two bits, a high bit, a signed byte) of the even or of the odd bytes as i16 lanes, for
//! the weights and the activation quants alike, so nothing is widened byte by byte and no
//! element is touched by scalar code; `i16x8::dot` (a multiply-add of lane pairs into i32)
//! then dots even with even and odd with odd.
//!
//! Block dots are exact in i32, as in the reference: legacy quants (|q| ≤ 31 after the
//! offset) times activations (|a| ≤ 128) through `dot`; K-quants form the products q·a in
//! i16, add those that share a sub-block scale there, and multiply-add them with the scale
//! into i32 (bounds at [`scaled_idot`]); Q3_K's and Q6_K's offsets come off in i32 as
//! o·Σ sc_j·bsum_j, from the activation's exact per-16 sums. Without mins, each block's
//! i32 lanes are converted to f32 and scaled by d_w·d_a into f32 lane accumulators, summed
//! across lanes once per row. With mins (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) each block's (K:
//! super-block's) dot is summed to one i32 and combined with its min term before the row
//! sum, in the reference's order: the two largely cancel, and two separate row-long sums
//! lost the digits SmolLM2's logits need. So results differ from the reference only in f32
//! rounding and summation order (the tolerance derived in `tests/dot_twins.rs` covers it).
//!
//! f16 values (scales, F16 weights) are converted inline: the bits moved into f32 position
//! are the value times 2⁻¹¹², for normals, subnormals and zeros alike, so one exact
//! multiply finishes the job; only Inf/NaN (exponent 31) need another path.

use half::f16;
use wide::{f32x4, f32x8, i16x8, i32x4, i32x8, u16x8};

use super::{row_blocks, ActRow};
use crate::formats::blocks::BlockQ8K;
use crate::formats::float::f32_from_bf16_bits;
use crate::formats::{k_scales, GgmlType};

// ---- words and fields ----

/// The first 16 bytes of `b` as 8 words.
#[inline(always)]
fn words(b: &[u8]) -> i16x8 {
    bytemuck::pod_read_unaligned(&b[..16])
}

/// The first 16 activation quants of `a` as 8 words.
#[inline(always)]
fn act_words(a: &[i8]) -> i16x8 {
    words(bytemuck::cast_slice(&a[..16]))
}

/// The signed bytes of `w`: [even bytes, odd bytes] as i16 lanes.
#[inline(always)]
fn split_i8(w: i16x8) -> [i16x8; 2] {
    [(w << 8) >> 8, w >> 8]
}

/// The `width`-bit field at bit `from` of every byte of `w`, moved to bit `to` of the same
/// byte (all other bits zero). As the field lies within its byte (from + width ≤ 8), no
/// bit of the other byte can shift into a field position, and the arithmetic shift's sign
/// bits land only above the high byte's field, where the mask clears them.
#[inline(always)]
fn field(w: i16x8, from: u32, width: u32, to: u32) -> i16x8 {
    let mask = i16x8::splat((0x0101 * (((1u32 << width) - 1) << to)) as i16);
    let moved = if from >= to {
        w >> (from - to)
    } else {
        w << (to - from)
    };
    moved & mask
}

/// [`field`] split at once: [even bytes, odd bytes] as i16 lanes, each shifted from `w`
/// directly (fewer instructions than [`split_u8`] after [`field`] where one field is all).
#[inline(always)]
fn split_field(w: i16x8, from: u32, width: u32) -> [i16x8; 2] {
    let mask = i16x8::splat(((1u32 << width) - 1) as i16);
    [(w >> from) & mask, (w >> (from + 8)) & mask]
}

/// The bytes of `w`, each below 128: [even bytes, odd bytes] as i16 lanes.
#[inline(always)]
fn split_u8(w: i16x8) -> [i16x8; 2] {
    [w & i16x8::splat(0xFF), w >> 8]
}

/// Two 16-byte halves' [even, odd] pairs as the four vectors of 32 quants.
#[inline(always)]
fn halves(half: impl Fn(usize) -> [i16x8; 2]) -> [i16x8; 4] {
    let ([a, b], [c, d]) = (half(0), half(1));
    [a, b, c, d]
}

/// `(x | y) − offset` lane by lane: a low field, its high bits, the format's offset.
#[inline(always)]
fn combine(x: [i16x8; 4], y: [i16x8; 4], offset: i16) -> [i16x8; 4] {
    let o = i16x8::splat(offset);
    std::array::from_fn(|i| (x[i] | y[i]) - o)
}

/// An f16 (as bits) as f32, exactly as `half` converts it.
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    if h & 0x7C00 == 0x7C00 {
        return f16::from_bits(h).to_f32();
    }
    let bits = (u32::from(h & 0x8000) << 16) | (u32::from(h & 0x7FFF) << 13);
    f32::from_bits(bits) * TWO_POW_112
}

/// 2¹¹²: f16 bits in f32 position read as 2⁻¹¹² times the f16 value.
const TWO_POW_112: f32 = f32::from_bits((127 + 112) << 23);

/// The f16 at byte `off` of `b` as f32.
#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16_bits_to_f32(u16_at(b, off))
}

// ---- legacy formats (32-element blocks, Q8_0/Q8_1 activations) ----

/// Σ q·a over one block as 4 i32 lanes: `q` is [even, odd] of elements 0–15, then of
/// 16–31, `a` the block's 32 activation quants.
#[inline(always)]
fn block_dot(q: [i16x8; 4], a: &[i8]) -> i32x4 {
    let [e0, o0] = split_i8(act_words(&a[..16]));
    let [e1, o1] = split_i8(act_words(&a[16..32]));
    (q[0].dot(e0) + q[1].dot(o0)) + (q[2].dot(e1) + q[3].dot(o1))
}

/// A legacy row: `load(block)` reads a block's fields (its quant bytes as words, its f16
/// header as bits), `decode` turns them into the block's signed quants (offset applied), d
/// and its min (0 for formats without); `MIN` says whether the format has mins (added as
/// m·s, s the activation block's `dsum`).
///
/// Each block is loaded one iteration before it is used: while a block computes, the next
/// one's loads are already in flight, which measured (x86, 256 MiB from memory) 1.6–1.9x
/// faster than loading at the use where the hardware prefetcher does not keep up.
#[inline(always)]
fn legacy_row<const TS: usize, const MIN: bool, R: Copy>(
    ty: GgmlType,
    w: &[u8],
    a: &ActRow,
    load: impl Fn(&[u8; TS]) -> R,
    decode: impl Fn(R) -> ([i16x8; 4], f32, f32),
) -> f32 {
    let nb = row_blocks(ty, w, a);
    let (blocks, _) = w.as_chunks::<TS>();
    let (qs, da, dsum) = (&a.qs[..32 * nb], &a.d[..nb], &a.dsum[..nb]);
    let mut acc = f32x4::ZERO;
    let mut sum = 0.0f32;
    let Some(first) = blocks.first() else {
        return 0.0;
    };
    let mut next = load(first);
    for b in 0..nb {
        let cur = next;
        next = load(&blocks[(b + 1).min(nb - 1)]);
        let (q, d, m) = decode(cur);
        let dot = block_dot(q, &qs[32 * b..32 * b + 32]);
        if MIN {
            // Combined per block, in the reference's order (see `k_row`: d·Σ and the min
            // term largely cancel).
            sum += dot.reduce_add() as f32 * (d * da[b]) + m * dsum[b];
        } else {
            acc += dot.round_float() * f32x4::splat(d * da[b]);
        }
    }
    acc.reduce_add() + sum
}

/// The u16 at byte `off` of `b` (an f16's bits).
#[inline(always)]
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// The u32 at byte `off` of `b` (a legacy block's fifth bits).
#[inline(always)]
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A legacy block's 16 nibble bytes as words: low nibbles are elements 0–15, high ones
/// 16–31.
#[inline(always)]
fn nibbles(w: i16x8) -> [i16x8; 4] {
    let ([e0, o0], [e1, o1]) = (split_field(w, 0, 4), split_field(w, 4, 4));
    [e0, o0, e1, o1]
}

/// 16 where bit j of `qh` is set, for element j, in [`nibbles`] order.
#[inline(always)]
fn fifth_bits(qh: u32) -> [i16x8; 4] {
    // Lane k of the even vector is element 2k (bit 2k), of the odd one element 2k + 1.
    const EVEN: [i16; 8] = [1, 4, 16, 64, 256, 1024, 4096, 16384];
    const ODD: [i16; 8] = [2, 8, 32, 128, 512, 2048, 8192, i16::MIN];
    let bit = |bits: u32, lanes: [i16; 8]| {
        let m = i16x8::from(lanes);
        (i16x8::splat(bits as u16 as i16) & m).simd_eq(m) & i16x8::splat(16)
    };
    let (lo, hi) = (qh, qh >> 16);
    [bit(lo, EVEN), bit(lo, ODD), bit(hi, EVEN), bit(hi, ODD)]
}

pub(crate) fn q4_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, qs at 2.
    legacy_row::<18, false, _>(
        GgmlType::Q4_0,
        w,
        a,
        |b| (u16_at(b, 0), words(&b[2..])),
        |(d, qs)| {
            let q = nibbles(qs).map(|v| v - i16x8::splat(8));
            (q, f16_bits_to_f32(d), 0.0)
        },
    )
}

pub(crate) fn q4_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, m at 2, qs at 4.
    legacy_row::<20, true, _>(
        GgmlType::Q4_1,
        w,
        a,
        |b| (u16_at(b, 0), u16_at(b, 2), words(&b[4..])),
        |(d, m, qs)| (nibbles(qs), f16_bits_to_f32(d), f16_bits_to_f32(m)),
    )
}

pub(crate) fn q5_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, qh at 2, qs at 6.
    legacy_row::<22, false, _>(
        GgmlType::Q5_0,
        w,
        a,
        |b| (u16_at(b, 0), u32_at(b, 2), words(&b[6..])),
        |(d, qh, qs)| {
            let q = combine(nibbles(qs), fifth_bits(qh), 16);
            (q, f16_bits_to_f32(d), 0.0)
        },
    )
}

pub(crate) fn q5_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, m at 2, qh at 4, qs at 8.
    legacy_row::<24, true, _>(
        GgmlType::Q5_1,
        w,
        a,
        |b| (u16_at(b, 0), u16_at(b, 2), u32_at(b, 4), words(&b[8..])),
        |(d, m, qh, qs)| {
            let q = combine(nibbles(qs), fifth_bits(qh), 0);
            (q, f16_bits_to_f32(d), f16_bits_to_f32(m))
        },
    )
}

pub(crate) fn q8_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, qs at 2.
    legacy_row::<34, false, _>(
        GgmlType::Q8_0,
        w,
        a,
        |b| (u16_at(b, 0), words(&b[2..]), words(&b[18..])),
        |(d, lo, hi)| {
            let ([e0, o0], [e1, o1]) = (split_i8(lo), split_i8(hi));
            ([e0, o0, e1, o1], f16_bits_to_f32(d), 0.0)
        },
    )
}

// ---- K-quants (256-element super-blocks, Q8_K activations) ----

/// A super-block's integer scales: one per 16 elements (Q2_K, Q3_K, Q6_K) or per 32 (Q4_K,
/// Q5_K).
enum SubScales {
    Of16([i16; 16]),
    Of32([i16; 8]),
}

/// Σ_j sc_j·Σ_{i∈j} q_i·a_i over one super-block as 4 i32 lanes: `group(g)` gives the
/// quants of elements 32g..32g+32 as [`block_dot`]'s `q`.
///
/// The products q·a are formed in i16 and those sharing a scale added there first (two per
/// lane for scales of 16, four for 32: |Σ| ≤ 2·63·128 (Q6_K before its offset) or 4·31·128
/// (Q5_K), < 2¹⁵), so each scale costs one multiply-add into i32 (|pair| ≤ 2·16128·128,
/// a lane's 16 of them far from 2³¹).
#[inline(always)]
fn scaled_idot(group: impl Fn(usize) -> [i16x8; 4], sc: &SubScales, a: &[i8; 256]) -> i32x4 {
    let step = |g: usize| {
        let q = group(g);
        let [e0, o0] = split_i8(act_words(&a[32 * g..]));
        let [e1, o1] = split_i8(act_words(&a[32 * g + 16..]));
        let (p0, p1) = (q[0] * e0 + q[1] * o0, q[2] * e1 + q[3] * o1);
        match sc {
            SubScales::Of16(s) => {
                p0.dot(i16x8::splat(s[2 * g])) + p1.dot(i16x8::splat(s[2 * g + 1]))
            }
            SubScales::Of32(s) => (p0 + p1).dot(i16x8::splat(s[g])),
        }
    };
    // Unrolled by hand: each group's shift counts are then constants (a loop the compiler
    // keeps rolled shifts by register and branches on the shift direction).
    let mut acc = step(0);
    acc += step(1);
    acc += step(2);
    acc += step(3);
    acc += step(4);
    acc += step(5);
    acc += step(6);
    acc + step(7)
}

/// Σ_j m_j·bsum_j over the 16 sums of 16 activations.
#[inline(always)]
fn bsum_dot(m: [i16; 16], bsums: &[i16; 16]) -> i32 {
    let v = |x: &[i16]| i16x8::from(<[i16; 8]>::try_from(x).expect("8 lanes"));
    (v(&m[..8]).dot(v(&bsums[..8])) + v(&m[8..]).dot(v(&bsums[8..]))).reduce_add()
}

/// A K-quant row: `block(bytes, y)` gives a super-block's Σ sc·q·a lanes, its d and its
/// min term dmin·Σ m_j·bsum_j (0 without mins); the super-block contributes
/// y.d·d·Σ − y.d·min.
#[inline(always)]
fn k_row<const TS: usize>(
    ty: GgmlType,
    w: &[u8],
    a: &ActRow,
    block: impl Fn(&[u8; TS], &BlockQ8K) -> (i32x4, f32, f32),
) -> f32 {
    row_blocks(ty, w, a);
    let (blocks, _) = w.as_chunks::<TS>();
    // Per super-block, in the reference's order: the scaled sum and the min term largely
    // cancel, so they are combined before the row sum (kept apart, the two row-long sums
    // grow large and their difference loses the digits the engine's logits need: SmolLM2's
    // golden test moved 1.45 logit from the packed kernels so).
    let mut sum = 0.0f32;
    for (blk, y) in blocks.iter().zip(a.q8_k) {
        let (isum, d, min) = block(blk, y);
        sum += y.d * d * isum.reduce_add() as f32 - y.d * min;
    }
    sum
}

/// Scales or mins of Q4_K/Q5_K as i16.
#[inline(always)]
fn wide_u8(v: [u8; 8]) -> [i16; 8] {
    v.map(i16::from)
}

/// Mins of sub-blocks of 32 repeated for both of their `bsums` (one per 16).
#[inline(always)]
fn per_16(v: [u8; 8]) -> [i16; 16] {
    std::array::from_fn(|j| i16::from(v[j / 2]))
}

/// The 8 six-bit scales and 8 mins of Q4_K/Q5_K from their 12 bytes.
#[inline(always)]
fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    k_scales::unpack(s[..12].try_into().expect("12 scale bytes"))
}

pub(crate) fn q2_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82. Group 4h + s is bits 2s of
    // qs[32h..32h + 32].
    k_row::<84>(GgmlType::Q2_K, w, a, |b, y| {
        let sc = std::array::from_fn(|j| i16::from(b[j] & 0xF));
        let mins = std::array::from_fn(|j| i16::from(b[j] >> 4));
        let group = |g: usize| {
            let (h, s) = (g / 4, (g % 4) as u32);
            halves(|c| split_field(words(&b[16 + 32 * h + 16 * c..]), 2 * s, 2))
        };
        let min = f16_at(b, 82) * bsum_dot(mins, &y.bsums) as f32;
        (
            scaled_idot(group, &SubScales::Of16(sc), &y.qs),
            f16_at(b, 80),
            min,
        )
    })
}

pub(crate) fn q3_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108. Low bits as Q2_K; the high
    // bit of group g is bit g of hmask; q = u − 4 with u = low | high << 2, the 4 taken
    // off as 4·Σ sc·bsum.
    k_row::<110>(GgmlType::Q3_K, w, a, |b, y| {
        let s = &b[96..108];
        let sc = std::array::from_fn(|j| {
            let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            i16::from(low | (high << 4)) - 32
        });
        let group = |g: usize| {
            let (h, s) = (g / 4, (g % 4) as u32);
            halves(|c| {
                let low = field(words(&b[32 + 32 * h + 16 * c..]), 2 * s, 2, 0);
                split_u8(low | field(words(&b[16 * c..]), g as u32, 1, 2))
            })
        };
        let isum = scaled_idot(group, &SubScales::Of16(sc), &y.qs);
        let offset = 4 * bsum_dot(sc, &y.bsums);
        (isum - i32x4::from([offset, 0, 0, 0]), f16_at(b, 108), 0.0)
    })
}

pub(crate) fn q4_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, dmin at 2, scales[12] at 4, qs[128] at 16. Group 2k + n is nibble n of
    // qs[32k..32k + 32].
    k_row::<144>(GgmlType::Q4_K, w, a, |b, y| {
        let (sc, m) = scales_mins(&b[4..16]);
        let group = |g: usize| {
            let (k, n) = (g / 2, (g % 2) as u32);
            halves(|c| split_field(words(&b[16 + 32 * k + 16 * c..]), 4 * n, 4))
        };
        let min = f16_at(b, 2) * bsum_dot(per_16(m), &y.bsums) as f32;
        (
            scaled_idot(group, &SubScales::Of32(wide_u8(sc)), &y.qs),
            f16_at(b, 0),
            min,
        )
    })
}

pub(crate) fn q5_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    // d at 0, dmin at 2, scales[12] at 4, qh[32] at 16, qs[128] at 48. Nibbles as Q4_K;
    // the fifth bit of group g is bit g of qh.
    k_row::<176>(GgmlType::Q5_K, w, a, |b, y| {
        let (sc, m) = scales_mins(&b[4..16]);
        let group = |g: usize| {
            let (k, n) = (g / 2, (g % 2) as u32);
            halves(|c| {
                let low = field(words(&b[48 + 32 * k + 16 * c..]), 4 * n, 4, 0);
                split_u8(low | field(words(&b[16 + 16 * c..]), g as u32, 1, 4))
            })
        };
        let min = f16_at(b, 2) * bsum_dot(per_16(m), &y.bsums) as f32;
        (
            scaled_idot(group, &SubScales::Of32(wide_u8(sc)), &y.qs),
            f16_at(b, 0),
            min,
        )
    })
}

pub(crate) fn q6_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    // ql[128] at 0, qh[64] at 128, scales[16] (i8) at 192, d at 208. Group 4h + s: nibble
    // s / 2 of ql[64h + 32(s % 2)..][..32], bits 2s of qh[32h..32h + 32] above it; minus 32,
    // taken off as 32·Σ sc·bsum.
    k_row::<210>(GgmlType::Q6_K, w, a, |b, y| {
        let sc = std::array::from_fn(|j| i16::from(b[192 + j] as i8));
        let group = |g: usize| {
            let (h, s) = (g / 4, g % 4);
            let ql = 64 * h + 32 * (s % 2);
            let qh = 128 + 32 * h;
            halves(|c| {
                let low = field(words(&b[ql + 16 * c..]), 4 * (s / 2) as u32, 4, 0);
                split_u8(low | field(words(&b[qh + 16 * c..]), 2 * s as u32, 2, 4))
            })
        };
        let isum = scaled_idot(group, &SubScales::Of16(sc), &y.qs);
        let offset = 32 * bsum_dot(sc, &y.bsums);
        (isum - i32x4::from([offset, 0, 0, 0]), f16_at(b, 208), 0.0)
    })
}

// ---- float formats (F32 activations) ----

/// Σ w·x with four f32x8 accumulators: `raw(i)` loads weights 8i..8i + 8, `convert` makes
/// them f32, `scalar(i)` gives weight i (for the tail of fewer than 8).
///
/// Each 32 weights are loaded one iteration before they are used, as in [`legacy_row`].
#[inline(always)]
fn float_dot<R: Copy>(
    n: usize,
    x: &[f32],
    raw: impl Fn(usize) -> R,
    convert: impl Fn(R) -> f32x8,
    scalar: impl Fn(usize) -> f32,
) -> f32 {
    let xv = |i: usize| {
        bytemuck::pod_read_unaligned::<f32x8>(bytemuck::cast_slice(&x[8 * i..8 * i + 8]))
    };
    let chunks = n / 8;
    let quads = chunks / 4;
    let mut acc = [f32x8::ZERO; 4];
    if quads > 0 {
        let load4 = |q: usize| [raw(4 * q), raw(4 * q + 1), raw(4 * q + 2), raw(4 * q + 3)];
        let mut next = load4(0);
        for q in 0..quads {
            let cur = next;
            next = load4((q + 1).min(quads - 1));
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = convert(cur[k]).mul_add(xv(4 * q + k), *acc);
            }
        }
    }
    for i in 4 * quads..chunks {
        acc[0] = convert(raw(i)).mul_add(xv(i), acc[0]);
    }
    let sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
    sum + (8 * chunks..n).map(|j| scalar(j) * x[j]).sum::<f32>()
}

/// 8 consecutive u16 of `w` from element `i` (bytes 2i..2i + 16).
#[inline(always)]
fn u16x8_at(w: &[u8], i: usize) -> u16x8 {
    bytemuck::pod_read_unaligned(&w[2 * i..2 * i + 16])
}

/// [`f16_bits_to_f32`] for 8 lanes (Inf/NaN lanes blended in from the bits).
#[inline(always)]
fn f16x8_to_f32(h: u16x8) -> f32x8 {
    let x = i32x8::from_u16x8(h);
    let bits = ((x & i32x8::splat(0x8000)) << 16) | ((x & i32x8::splat(0x7FFF)) << 13);
    let finite = bytemuck::cast::<i32x8, f32x8>(bits) * f32x8::splat(TWO_POW_112);
    // Exponent 31: f32 exponent 255, same mantissa and sign.
    let special = (x & i32x8::splat(0x7C00)).simd_eq(i32x8::splat(0x7C00));
    let inf_nan = bytemuck::cast::<i32x8, f32x8>(bits | i32x8::splat(0x7000_0000));
    bytemuck::cast::<i32x8, f32x8>(special).select(inf_nan, finite)
}

pub(crate) fn f32_f32(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::F32, w, a);
    float_dot(
        n,
        a.x,
        |i| bytemuck::pod_read_unaligned(&w[32 * i..32 * i + 32]),
        |v| v,
        |i| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]),
    )
}

pub(crate) fn f16_f32(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::F16, w, a);
    float_dot(
        n,
        a.x,
        |i| u16x8_at(w, 8 * i),
        f16x8_to_f32,
        |i| f16_at(w, 2 * i),
    )
}

pub(crate) fn bf16_f32(w: &[u8], a: &ActRow) -> f32 {
    let n = row_blocks(GgmlType::BF16, w, a);
    float_dot(
        n,
        a.x,
        |i| u16x8_at(w, 8 * i),
        |h| bytemuck::cast(i32x8::from_u16x8(h) << 16),
        |i| f32_from_bf16_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 bit pattern converts as `half` does (NaNs: to some NaN).
    #[test]
    fn f16_conversion_matches_half() {
        let same = |got: f32, want: f32| {
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
        };
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            assert!(same(f16_bits_to_f32(h), want), "{h:#06x}");
            let v = f16x8_to_f32(u16x8::splat(h)).to_array();
            assert!(v.iter().all(|&g| same(g, want)), "{h:#06x} (8 lanes)");
        }
    }
}
