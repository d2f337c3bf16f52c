//! AVX-512 dot products for the K-quants Q3_K to Q6_K, in two flavours: `Vnni` and `Avx512`
//! (F+BW). Q2_K stays on the AVX2 kernel: written this way it measured ~4% slower in cache.
//!
//! Each 64 quants (two Q4_K/Q5_K sub-blocks, four Q3_K/Q6_K ones) are unpacked to
//! unsigned bytes in one register and multiplied with the activations by `vpmaddubsw`
//! (u ≤ 63, |a| ≤ 127: a pair ≤ 16002, no saturation), then scaled per sub-block and summed
//! into i32 lanes by `vpdpwssd` (VNNI) or `vpmaddwd` + add, against a vector with each i16
//! lane's sub-block scale. The super-block's i32 sum is exact; it is converted and scaled by
//! d·d_a once. Offsets (Q6_K: 32, Q3_K: 4) come off as o·Σ sc_j·bsum_j; mins (Q4_K, Q5_K)
//! as dmin·Σ m_j·bsum_j.

use std::arch::x86_64::*;

use super::avx2::f16_at;
use super::{row_blocks, ActRow, DotFn};
use crate::formats::GgmlType;
use crate::isa::Isa;
use crate::prefetch;

pub fn kernel(ty: GgmlType, level: Isa) -> Option<DotFn> {
    use GgmlType::*;
    Some(match (ty, level) {
        (Q3_K, Isa::Vnni) => |w, a| unsafe { vnni::q3_k(w, a) },
        (Q4_K, Isa::Vnni) => |w, a| unsafe { vnni::q4_k(w, a) },
        (Q5_K, Isa::Vnni) => |w, a| unsafe { vnni::q5_k(w, a) },
        (Q6_K, Isa::Vnni) => |w, a| unsafe { vnni::q6_k(w, a) },
        (Q3_K, Isa::Avx512) => |w, a| unsafe { bw::q3_k(w, a) },
        (Q4_K, Isa::Avx512) => |w, a| unsafe { bw::q4_k(w, a) },
        (Q5_K, Isa::Avx512) => |w, a| unsafe { bw::q5_k(w, a) },
        (Q6_K, Isa::Avx512) => |w, a| unsafe { bw::q6_k(w, a) },
        _ => return None,
    })
}
// SAFETY (all kernels in this file): handed out by `dot::kernel` only at levels the CPU
// supports; reads bounded by `row_blocks`.

/// Q4_K/Q5_K's eight 6-bit scales and eight 6-bit mins from their 12 packed bytes, with
/// word operations on the three little-endian u32s (layout in FORMATS.md).
#[inline]
pub(super) fn scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let sc_lo = w0 & LOW6;
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_lo = w1 & LOW6;
    let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let cat = |a: u32, b: u32| (u64::from(a) | (u64::from(b) << 32)).to_le_bytes();
    (cat(sc_lo, sc_hi), cat(m_lo, m_hi))
}

/// i16 lane indices for `vpermw`: lane l of group `g` takes scale `g·per + l / (32/per)`,
/// `per` sub-blocks per 64 quants.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn scale_index(g: i16, per: i16) -> __m512i {
    let mut idx = [0i16; 32];
    for (l, v) in idx.iter_mut().enumerate() {
        *v = g * per + l as i16 / (32 / per);
    }
    // SAFETY: 64 bytes read from a 64-byte array.
    unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
}

macro_rules! k_family {
    ($feat:literal, $sdot:ident) => {
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn q4_k(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::Q4_K, w, a);
            let idx = [
                scale_index(0, 2),
                scale_index(1, 2),
                scale_index(2, 2),
                scale_index(3, 2),
            ];
            let low4 = _mm512_set1_epi8(0x0F);
            let mut acc = _mm512_setzero_ps();
            let mut side = _mm_setzero_ps();
            for b in 0..nb {
                let blk = w.as_ptr().add(b * 144);
                prefetch::ahead(blk, 144);
                let y = a.q8_k.get_unchecked(b);
                let (sc, m) = scales_mins(&std::ptr::read_unaligned(blk.add(4).cast()));
                let sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(
                    i64::from_le_bytes(sc),
                )));
                // Mins: Σ m_j·(bsum_2j + bsum_2j+1), as 4 i32 lanes.
                let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bs),
                    _mm256_extracti128_si256::<1>(bs),
                );
                let mins = _mm_madd_epi16(
                    _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(m))),
                    pairs,
                );
                side = _mm_fmadd_ps(
                    _mm_cvtepi32_ps(mins),
                    _mm_set1_ps(y.d * f16_at(blk.add(2))),
                    side,
                );
                let mut isum = _mm512_setzero_si512();
                for k in 0..4 {
                    let q = _mm256_loadu_si256(blk.add(16 + 32 * k).cast());
                    let u = _mm512_and_si512(
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(q),
                            _mm256_srli_epi16::<4>(q),
                        ),
                        low4,
                    );
                    let p = _mm512_maddubs_epi16(
                        u,
                        _mm512_loadu_si512(y.qs.as_ptr().add(64 * k).cast()),
                    );
                    isum = $sdot(isum, p, _mm512_permutexvar_epi16(idx[k], sc));
                }
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(y.d * f16_at(blk)),
                    acc,
                );
            }
            let side = _mm_add_ps(side, _mm_movehl_ps(side, side));
            let side = _mm_add_ss(side, _mm_movehdup_ps(side));
            _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(side)
        }

        /// As `q4_k`, with each quant's fifth bit from `qh`: bit 2k (low nibbles) and 2k+1
        /// (high nibbles) of `qh[l]` for chunk k; a byte-mask test adds 16 where it is set.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn q5_k(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::Q5_K, w, a);
            let idx = [
                scale_index(0, 2),
                scale_index(1, 2),
                scale_index(2, 2),
                scale_index(3, 2),
            ];
            let (low4, sixteen) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(16));
            let mut acc = _mm512_setzero_ps();
            let mut side = _mm_setzero_ps();
            for b in 0..nb {
                let blk = w.as_ptr().add(b * 176);
                prefetch::ahead(blk, 176);
                let y = a.q8_k.get_unchecked(b);
                let (sc, m) = scales_mins(&std::ptr::read_unaligned(blk.add(4).cast()));
                let sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(
                    i64::from_le_bytes(sc),
                )));
                let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bs),
                    _mm256_extracti128_si256::<1>(bs),
                );
                let mins = _mm_madd_epi16(
                    _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(m))),
                    pairs,
                );
                side = _mm_fmadd_ps(
                    _mm_cvtepi32_ps(mins),
                    _mm_set1_ps(y.d * f16_at(blk.add(2))),
                    side,
                );
                // qh in the low half, qh >> 1 in the high half: bit 2k then serves both.
                let qh = _mm256_loadu_si256(blk.add(16).cast());
                let h2 =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<1>(qh));
                let mut isum = _mm512_setzero_si512();
                for k in 0..4 {
                    let q = _mm256_loadu_si256(blk.add(48 + 32 * k).cast());
                    let u = _mm512_and_si512(
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(q),
                            _mm256_srli_epi16::<4>(q),
                        ),
                        low4,
                    );
                    let hi = _mm512_test_epi8_mask(h2, _mm512_set1_epi8(1 << (2 * k)));
                    let u = _mm512_mask_add_epi8(u, hi, u, sixteen);
                    let p = _mm512_maddubs_epi16(
                        u,
                        _mm512_loadu_si512(y.qs.as_ptr().add(64 * k).cast()),
                    );
                    isum = $sdot(isum, p, _mm512_permutexvar_epi16(idx[k], sc));
                }
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(y.d * f16_at(blk)),
                    acc,
                );
            }
            let side = _mm_add_ps(side, _mm_movehl_ps(side, side));
            let side = _mm_add_ss(side, _mm_movehdup_ps(side));
            _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(side)
        }

        /// Q3_K: qs[32n..] holds the low two bits of the four 32-element groups of half n
        /// at shifts 0, 2, 4, 6; u adds 4 where the hmask bit (bit 4n + s of hmask[l] for
        /// group s of half n) is set; the stored value is that u − 4, so 4·Σ sc_j·bsum_j
        /// comes off the i32 sum. Scales are six bits, minus 32.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn q3_k(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::Q3_K, w, a);
            let idx = [
                scale_index(0, 4),
                scale_index(1, 4),
                scale_index(2, 4),
                scale_index(3, 4),
            ];
            let (three, four) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
            const LOW2: u32 = 0x0303_0303;
            const LOW4: u32 = 0x0f0f_0f0f;
            let mut acc = _mm512_setzero_ps();
            for b in 0..nb {
                // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108.
                let blk = w.as_ptr().add(b * 110);
                prefetch::ahead(blk, 110);
                let y = a.q8_k.get_unchecked(b);
                let a0 = std::ptr::read_unaligned(blk.add(96).cast::<u32>());
                let a1 = std::ptr::read_unaligned(blk.add(100).cast::<u32>());
                let tmp = std::ptr::read_unaligned(blk.add(104).cast::<u32>());
                let packed = _mm_setr_epi32(
                    ((a0 & LOW4) | ((tmp & LOW2) << 4)) as i32,
                    ((a1 & LOW4) | (((tmp >> 2) & LOW2) << 4)) as i32,
                    (((a0 >> 4) & LOW4) | (((tmp >> 4) & LOW2) << 4)) as i32,
                    (((a1 >> 4) & LOW4) | (((tmp >> 6) & LOW2) << 4)) as i32,
                );
                let sc16 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(packed), _mm256_set1_epi16(32));
                let sc = _mm512_castsi256_si512(sc16);
                let offs = _mm256_slli_epi32::<2>(_mm256_madd_epi16(
                    sc16,
                    _mm256_loadu_si256(y.bsums.as_ptr().cast()),
                ));
                let mut isum =
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offs));
                // hmask in the low half, hmask >> 1 in the high half: bit 4n serves groups 0
                // and 1 of half n, bit 4n + 2 groups 2 and 3 (only bits 0-6 are tested, so
                // the bit the 16-bit shift brings in from the next byte is never read).
                let hm = _mm256_loadu_si256(blk.cast());
                let h2 =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hm), _mm256_srli_epi16::<1>(hm));
                for n in 0..2 {
                    let q = _mm256_loadu_si256(blk.add(32 + 32 * n).cast());
                    let u01 = _mm512_and_si512(
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(q),
                            _mm256_srli_epi16::<2>(q),
                        ),
                        three,
                    );
                    let u23 = _mm512_and_si512(
                        _mm512_inserti64x4::<1>(
                            _mm512_castsi256_si512(_mm256_srli_epi16::<4>(q)),
                            _mm256_srli_epi16::<6>(q),
                        ),
                        three,
                    );
                    let m01 = _mm512_test_epi8_mask(h2, _mm512_set1_epi8(1 << (4 * n)));
                    let m23 = _mm512_test_epi8_mask(h2, _mm512_set1_epi8(1 << (4 * n + 2)));
                    let u01 = _mm512_mask_add_epi8(u01, m01, u01, four);
                    let u23 = _mm512_mask_add_epi8(u23, m23, u23, four);
                    let a01 = _mm512_loadu_si512(y.qs.as_ptr().add(128 * n).cast());
                    let a23 = _mm512_loadu_si512(y.qs.as_ptr().add(128 * n + 64).cast());
                    isum = $sdot(
                        isum,
                        _mm512_maddubs_epi16(u01, a01),
                        _mm512_permutexvar_epi16(idx[2 * n], sc),
                    );
                    isum = $sdot(
                        isum,
                        _mm512_maddubs_epi16(u23, a23),
                        _mm512_permutexvar_epi16(idx[2 * n + 1], sc),
                    );
                }
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(y.d * f16_at(blk.add(108))),
                    acc,
                );
            }
            _mm512_reduce_add_ps(acc)
        }

        #[target_feature(enable = $feat)]
        pub(super) unsafe fn q6_k(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::Q6_K, w, a);
            let idx = [
                scale_index(0, 4),
                scale_index(1, 4),
                scale_index(2, 4),
                scale_index(3, 4),
            ];
            let (low4, bits45) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
            let mut acc = _mm512_setzero_ps();
            for b in 0..nb {
                let blk = w.as_ptr().add(b * 210);
                prefetch::ahead(blk, 210);
                let y = a.q8_k.get_unchecked(b);
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192).cast()));
                let sc = _mm512_castsi256_si512(sc16);
                // 32·Σ sc_j·bsum_j, subtracted from the first 8 lanes.
                let offs = _mm256_slli_epi32::<5>(_mm256_madd_epi16(
                    sc16,
                    _mm256_loadu_si256(y.bsums.as_ptr().cast()),
                ));
                let mut isum =
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offs));
                for h in 0..2 {
                    // ql[64h..] holds quarters 0,1 (low nibbles) and 2,3 (high); qh[32h..]
                    // their bits 4-5 at shifts 0, 2, 4, 6.
                    let l = _mm512_loadu_si512(blk.add(64 * h).cast());
                    let qh = _mm256_loadu_si256(blk.add(128 + 32 * h).cast());
                    let h2 = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(qh),
                        _mm256_srli_epi16::<2>(qh),
                    );
                    let u01 = _mm512_or_si512(
                        _mm512_and_si512(l, low4),
                        _mm512_and_si512(_mm512_slli_epi16::<4>(h2), bits45),
                    );
                    let u23 = _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(l), low4),
                        _mm512_and_si512(h2, bits45),
                    );
                    let a01 = _mm512_loadu_si512(y.qs.as_ptr().add(128 * h).cast());
                    let a23 = _mm512_loadu_si512(y.qs.as_ptr().add(128 * h + 64).cast());
                    isum = $sdot(
                        isum,
                        _mm512_maddubs_epi16(u01, a01),
                        _mm512_permutexvar_epi16(idx[2 * h], sc),
                    );
                    isum = $sdot(
                        isum,
                        _mm512_maddubs_epi16(u23, a23),
                        _mm512_permutexvar_epi16(idx[2 * h + 1], sc),
                    );
                }
                acc = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(isum),
                    _mm512_set1_ps(y.d * f16_at(blk.add(208))),
                    acc,
                );
            }
            _mm512_reduce_add_ps(acc)
        }
    };
}

pub(super) mod vnni {
    use super::*;

    /// acc + Σ pairs of p·s (`vpdpwssd`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn sdot(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        _mm512_dpwssd_epi32(acc, p, s)
    }

    k_family!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", sdot);
}

pub(super) mod bw {
    use super::*;

    /// acc + Σ pairs of p·s (`vpmaddwd` + add).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn sdot(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        _mm512_add_epi32(acc, _mm512_madd_epi16(p, s))
    }

    k_family!("avx512f,avx512bw,avx512vl,avx2,fma,f16c", sdot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_unpacking_matches_the_per_index_rule() {
        let q: [u8; 12] = std::array::from_fn(|i| (i as u8).wrapping_mul(97).wrapping_add(13));
        let (sc, m) = scales_mins(&q);
        for j in 0..8 {
            assert_eq!(
                (sc[j], m[j]),
                super::super::reference::k_scale_min(j, &q),
                "sub-block {j}"
            );
        }
    }
}
