//! AVX2 dot products for the K-quants (256-element super-blocks, Q8_K activations).
//!
//! Each format unpacks a super-block into eight groups of 32 unsigned quants u (before any
//! offset) and sixteen i16 sub-block scales (one per 16 elements); [`scaled_idot`] computes
//! Σ_j sc_j·Σ u·a exactly in i32 (`maddubs`: u ≤ 63 times |a| ≤ 127, pairs ≤ 16002, no
//! saturation; then `madd` with the scales). Offsets (Q3_K: 4, Q6_K: 32) come off as
//! o·Σ_j sc_j·bsum_j, mins as dmin·Σ_j m_j·bsum_j, both from the activation's `bsums`.

use std::arch::x86_64::*;

use super::avx2::{f16_at, hsum};
use super::{row_blocks, ActRow, DotFn};
use crate::formats::blocks::BlockQ8K;
use crate::formats::GgmlType;
use crate::prefetch;

pub fn kernel(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match ty {
        Q2_K => |w, a| unsafe { q2_k(w, a) },
        Q3_K => |w, a| unsafe { q3_k(w, a) },
        Q4_K => |w, a| unsafe { q4_k(w, a) },
        Q5_K => |w, a| unsafe { q5_k(w, a) },
        Q6_K => |w, a| unsafe { q6_k(w, a) },
        _ => return None,
    })
}
// SAFETY (all kernels in this file): handed out by `dot::kernel` only where AVX2/FMA/F16C
// are present; reads bounded by `row_blocks`.

/// Σ_j sc_j·Σ_{i∈j} u_i·a_i as 8 i32 lanes: group g covers elements 32g..32g+32, with
/// scale `sc[2g]` (i16 lane 2g of `sc`) for its first 16 and `sc[2g+1]` for its last 16.
/// The scales stay in a register: built in a stack array, their vector reloads missed
/// store forwarding (measured: Q3_K 3x slower).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scaled_idot(u: &[__m256i; 8], sc: __m256i, a: *const i8) -> __m256i {
    let halves = [
        _mm256_permute2x128_si256::<0x00>(sc, sc),
        _mm256_permute2x128_si256::<0x11>(sc, sc),
    ];
    let mut acc = [_mm256_setzero_si256(); 2];
    for g in 0..8 {
        // Word 2g % 8 of the half in the low 128 bits, word 2g % 8 + 1 in the high ones.
        let w = (2 * g % 8) as i16;
        let pick = _mm256_set_m128i(
            _mm_set1_epi16(((2 * w + 3) << 8) | (2 * w + 2)),
            _mm_set1_epi16(((2 * w + 1) << 8) | (2 * w)),
        );
        let s = _mm256_shuffle_epi8(halves[g / 4], pick);
        let p = _mm256_maddubs_epi16(u[g], _mm256_loadu_si256(a.add(32 * g).cast()));
        acc[g % 2] = _mm256_add_epi32(acc[g % 2], _mm256_madd_epi16(p, s));
    }
    _mm256_add_epi32(acc[0], acc[1])
}

/// Σ_j c_j·bsum_j over the 16 sums of 16 activations, c as 16 i16 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bsum_dot_v(y: &BlockQ8K, c: __m256i) -> i32 {
    let p = _mm256_madd_epi16(c, _mm256_loadu_si256(y.bsums.as_ptr().cast()));
    let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Bytes 0–31: `v` masked to `mask` after shifting right by `shift`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits(v: __m256i, shift: i32, mask: i8) -> __m256i {
    _mm256_and_si256(
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)),
        _mm256_set1_epi8(mask),
    )
}

/// One row: `$unpack(block_ptr, y) -> (u, sc, d, side)` per super-block, where the super-block
/// contributes y.d·(d·Σ sc·u·a − side).
macro_rules! k_kernel {
    ($name:ident, $ty:ident, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::$ty, w, a);
            let ts = GgmlType::$ty.type_size();
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let y = a.q8_k.get_unchecked(b);
                prefetch::ahead(w.as_ptr().add(b * ts), ts);
                let (u, sc, d, s) = $unpack(w.as_ptr().add(b * ts), y);
                let isum = scaled_idot(&u, sc, y.qs.as_ptr());
                // The side term, an eighth in each lane (exact), joins the super-block's
                // dot there (they largely cancel; see the legacy kernels in `avx2`).
                let side = _mm256_set1_ps(-0.125 * y.d * s);
                let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(y.d * d), side);
                acc = _mm256_add_ps(acc, v);
            }
            hsum(acc)
        }
    };
}

type Unpacked = ([__m256i; 8], __m256i, f32, f32);

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q2_k(b: *const u8, y: &BlockQ8K) -> Unpacked {
    // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82.
    let bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(b.cast()));
    let sc = _mm256_and_si256(bytes, _mm256_set1_epi16(0xF));
    let mins = bsum_dot_v(y, _mm256_srli_epi16::<4>(bytes));
    let mut u = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let q = _mm256_loadu_si256(b.add(16 + 32 * h).cast());
        for s in 0..4 {
            u[4 * h + s] = bits(q, 2 * s as i32, 3);
        }
    }
    (u, sc, f16_at(b.add(80)), f16_at(b.add(82)) * mins as f32)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q3_k(b: *const u8, y: &BlockQ8K) -> Unpacked {
    // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108. u = low two bits, plus 4
    // where the hmask bit is set; the stored value is u − 4.
    // Six-bit scales from 12 bytes in u32 words (layout in FORMATS.md), minus 32.
    let a0 = std::ptr::read_unaligned(b.add(96).cast::<u32>());
    let a1 = std::ptr::read_unaligned(b.add(100).cast::<u32>());
    let tmp = std::ptr::read_unaligned(b.add(104).cast::<u32>());
    const LOW2: u32 = 0x0303_0303;
    const LOW4: u32 = 0x0f0f_0f0f;
    let packed = _mm_setr_epi32(
        ((a0 & LOW4) | ((tmp & LOW2) << 4)) as i32,
        ((a1 & LOW4) | (((tmp >> 2) & LOW2) << 4)) as i32,
        (((a0 >> 4) & LOW4) | (((tmp >> 4) & LOW2) << 4)) as i32,
        (((a1 >> 4) & LOW4) | (((tmp >> 6) & LOW2) << 4)) as i32,
    );
    let sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(packed), _mm256_set1_epi16(32));
    let hm = _mm256_loadu_si256(b.cast());
    let mut u = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let q = _mm256_loadu_si256(b.add(32 + 32 * h).cast());
        for s in 0..4 {
            let high = _mm256_slli_epi16::<2>(bits(hm, (4 * h + s) as i32, 1));
            u[4 * h + s] = _mm256_or_si256(bits(q, 2 * s as i32, 3), high);
        }
    }
    let d = f16_at(b.add(108));
    (u, sc, d, d * (4 * bsum_dot_v(y, sc)) as f32)
}

/// The sub-block scales (each repeated for both halves of 16) and Σ m_j·bsums of Q4_K/Q5_K.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_q45(scales: &[u8; 12], y: &BlockQ8K) -> (__m256i, i32) {
    let (sc, m) = super::avx512_k::scales_mins(scales);
    let sc8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(sc)));
    let m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(m)));
    let sc = _mm256_set_m128i(_mm_unpackhi_epi16(sc8, sc8), _mm_unpacklo_epi16(sc8, sc8));
    let m = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    (sc, bsum_dot_v(y, m))
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q4_k(b: *const u8, y: &BlockQ8K) -> Unpacked {
    // d at 0, dmin at 2, scales[12] at 4, qs[128] at 16.
    let (sc, mins) = scales_q45(&std::ptr::read_unaligned(b.add(4).cast()), y);
    let mut u = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        let q = _mm256_loadu_si256(b.add(16 + 32 * k).cast());
        u[2 * k] = bits(q, 0, 0xF);
        u[2 * k + 1] = bits(q, 4, 0xF);
    }
    (u, sc, f16_at(b), f16_at(b.add(2)) * mins as f32)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q5_k(b: *const u8, y: &BlockQ8K) -> Unpacked {
    // d at 0, dmin at 2, scales[12] at 4, qh[32] at 16, qs[128] at 48.
    let (sc, mins) = scales_q45(&std::ptr::read_unaligned(b.add(4).cast()), y);
    let qh = _mm256_loadu_si256(b.add(16).cast());
    let mut u = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        let q = _mm256_loadu_si256(b.add(48 + 32 * k).cast());
        for half in 0..2 {
            let j = 2 * k + half;
            let high = _mm256_slli_epi16::<4>(bits(qh, j as i32, 1));
            u[j] = _mm256_or_si256(bits(q, 4 * half as i32, 0xF), high);
        }
    }
    (u, sc, f16_at(b), f16_at(b.add(2)) * mins as f32)
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q6_k(b: *const u8, y: &BlockQ8K) -> Unpacked {
    // ql[128] at 0, qh[64] at 128, scales[16] (i8) at 192, d at 208; stored value u − 32.
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
    let mut u = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let qh = _mm256_loadu_si256(b.add(128 + 32 * h).cast());
        for s in 0..4 {
            let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (s % 2)).cast());
            let low = bits(ql, 4 * (s / 2) as i32, 0xF);
            let high = _mm256_slli_epi16::<4>(bits(qh, 2 * s as i32, 3));
            u[4 * h + s] = _mm256_or_si256(low, high);
        }
    }
    let d = f16_at(b.add(208));
    (u, sc, d, d * (32 * bsum_dot_v(y, sc)) as f32)
}

k_kernel!(q2_k, Q2_K, unpack_q2_k);
k_kernel!(q3_k, Q3_K, unpack_q3_k);
k_kernel!(q4_k, Q4_K, unpack_q4_k);
k_kernel!(q5_k, Q5_K, unpack_q5_k);
k_kernel!(q6_k, Q6_K, unpack_q6_k);
