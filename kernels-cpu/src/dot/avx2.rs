//! AVX2 dot products for the float formats and the 32-element legacy formats.
//!
//! Legacy blocks are unpacked to 32 unsigned bytes u (the stored quant, before any offset),
//! dotted with the activation quants by `maddubs` (u ≤ 31 times |a| ≤ 127, pairs summed:
//! ≤ 7874, no i16 saturation), and scaled by d_w·d_a in f32. The format's offset o
//! (Q4_0: 8, Q5_0: 16) is applied once per row as o·Σ d_w·(d_a·Σa), from the activation's
//! per-block sums; Q4_1/Q5_1 add Σ m_w·s_a the same way. Q8_0 weights are signed and use the
//! sign trick instead: |w| · (a with w's sign).

use std::arch::x86_64::*;

use super::{row_blocks, ActRow, DotFn};
use crate::formats::GgmlType;
use crate::prefetch;

pub fn kernel(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => |w, a| unsafe { f32_dot(w, a) },
        F16 => |w, a| unsafe { f16_dot(w, a) },
        BF16 => |w, a| unsafe { bf16_dot(w, a) },
        Q4_0 => |w, a| unsafe { q4_0(w, a) },
        Q4_1 => |w, a| unsafe { q4_1(w, a) },
        Q5_0 => |w, a| unsafe { q5_0(w, a) },
        Q5_1 => |w, a| unsafe { q5_1(w, a) },
        Q8_0 => |w, a| unsafe { q8_0(w, a) },
        _ => return None,
    })
}
// SAFETY (all kernels in this file): `dot::kernel` hands these out only for ISA levels the
// CPU supports (AVX2, FMA, F16C at least), and each kernel bounds its reads by
// `row_blocks`, which checks the row and the activations.

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The f16 at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // asm for the reason given at `f16_head`; this form reads exactly the 2 bytes.
    let r: __m128;
    std::arch::asm!(
        "movzx {t:e}, word ptr [{p}]",
        "vmovd {r}, {t:e}",
        "vcvtph2ps {r}, {r}",
        p = in(reg) p,
        t = out(reg) _,
        r = out(xmm_reg) r,
        options(pure, readonly, nostack, preserves_flags)
    );
    _mm_cvtss_f32(r)
}

/// The f16 at `p` as f32, for a field with at least 14 more bytes of the same block after
/// it (legacy d and m; 8 bytes are read).
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_head(p: *const u8) -> f32 {
    // Written as asm: LLVM narrows any intrinsic form of this to a 2-byte `vpinsrw` that
    // merges into (and so waits for) an unrelated live register, here the row's side
    // accumulator: measured 3x slower legacy kernels.
    let r: __m128;
    std::arch::asm!(
        "vcvtph2ps {r}, qword ptr [{p}]",
        p = in(reg) p,
        r = out(xmm_reg) r,
        options(pure, readonly, nostack, preserves_flags)
    );
    _mm_cvtss_f32(r)
}

/// Low nibbles in bytes 0–15, high nibbles in bytes 16–31: element order of a legacy block.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nibbles32(qs: *const u8) -> __m256i {
    let v = _mm_loadu_si128(qs.cast());
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// 0x10 in byte j where bit j of the little-endian u32 at `qh` is set.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fifth_bits32(qh: *const u8) -> __m256i {
    let bits = std::ptr::read_unaligned(qh.cast::<u32>()) as i32;
    // Byte j gets byte j/8 of the mask, then keeps only its bit j%8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Σ u·a over 32 unsigned weight bytes and 32 activation bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn udot32(u: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1))
}

/// A legacy format's row dot: `$unpack(block_ptr)` gives the 32 unsigned quants, `$d`/`$m`
/// the byte offsets of d and of the min or None, `$o` the offset subtracted from u.
macro_rules! legacy_kernel {
    ($name:ident, $ty:ident, $unpack:ident, $m:expr, $o:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::$ty, w, a);
            let ts = GgmlType::$ty.type_size();
            let (wp, qs) = (w.as_ptr(), a.qs.as_ptr());
            let m_off: Option<usize> = $m;
            let mut acc = [_mm256_setzero_ps(); 2];
            for b in 0..nb {
                let blk = wp.add(b * ts);
                prefetch::ahead(blk, ts);
                let dw = f16_head(blk);
                let u = $unpack(blk);
                let x = _mm256_loadu_si256(qs.add(32 * b).cast());
                let s = _mm256_set1_ps(dw * *a.d.get_unchecked(b));
                let m: Option<usize> = m_off;
                match m {
                    // Offset formats: the block's whole dot Σ (u − o)·a in i32, exact (the
                    // sign trick of `q8_0`), so nothing is left to cancel in f32.
                    None => {
                        let q = _mm256_sub_epi8(u, _mm256_set1_epi8($o));
                        let p = udot32(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
                        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[0]);
                    }
                    // Min formats: the block's m_w·s_a, an eighth in each lane (exact), joins
                    // its dot there, off the accumulator's chain. The two largely cancel:
                    // kept as two row-long sums they lost the digits the engine's logits
                    // need (greedy SmolLM2 Q4_1 text left the reference's).
                    Some(off) => {
                        let side = f16_head(blk.add(off)) * *a.dsum.get_unchecked(b);
                        let p = udot32(u, x);
                        let v =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, _mm256_set1_ps(0.125 * side));
                        acc[0] = _mm256_add_ps(acc[0], v);
                    }
                }
                acc.swap(0, 1);
            }
            hsum(_mm256_add_ps(acc[0], acc[1]))
        }
    };
}

// Closures inside `#[target_feature]` functions do not inherit the features (they end up
// as out-of-line calls): the per-block unpacking is written as functions.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_q4_0(b: *const u8) -> __m256i {
    nibbles32(b.add(2))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_q4_1(b: *const u8) -> __m256i {
    nibbles32(b.add(4))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_q5_0(b: *const u8) -> __m256i {
    _mm256_or_si256(nibbles32(b.add(6)), fifth_bits32(b.add(2)))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_q5_1(b: *const u8) -> __m256i {
    _mm256_or_si256(nibbles32(b.add(8)), fifth_bits32(b.add(4)))
}

legacy_kernel!(q4_0, Q4_0, unpack_q4_0, None, 8);
legacy_kernel!(q4_1, Q4_1, unpack_q4_1, Some(2usize), 0);
legacy_kernel!(q5_0, Q5_0, unpack_q5_0, None, 16);
legacy_kernel!(q5_1, Q5_1, unpack_q5_1, Some(2usize), 0);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(w: &[u8], a: &ActRow) -> f32 {
    let nb = row_blocks(GgmlType::Q8_0, w, a);
    let (wp, qs) = (w.as_ptr(), a.qs.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    for b in 0..nb {
        let blk = wp.add(b * 34);
        prefetch::ahead(blk, 34);
        let q = _mm256_loadu_si256(blk.add(2).cast());
        let x = _mm256_loadu_si256(qs.add(32 * b).cast());
        let p = udot32(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
        let s = _mm256_set1_ps(f16_head(blk) * *a.d.get_unchecked(b));
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[0]);
        acc.swap(0, 1);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// Σ w·x over f32 lanes; `load(i)` gives weights i..i+8 as f32.
macro_rules! float_kernel {
    ($name:ident, $ty:ident, $bytes:expr, $load:ident, $scalar:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &ActRow) -> f32 {
            let n = row_blocks(GgmlType::$ty, w, a);
            let (wp, x) = (w.as_ptr(), a.x.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                prefetch::ahead(wp.add(i * $bytes), 32 * $bytes);
                for (k, acc) in acc.iter_mut().enumerate() {
                    let j = i + 8 * k;
                    *acc =
                        _mm256_fmadd_ps($load(wp.add(j * $bytes)), _mm256_loadu_ps(x.add(j)), *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] =
                    _mm256_fmadd_ps($load(wp.add(i * $bytes)), _mm256_loadu_ps(x.add(i)), acc[0]);
                i += 8;
            }
            let mut sum = hsum(_mm256_add_ps(
                _mm256_add_ps(acc[0], acc[1]),
                _mm256_add_ps(acc[2], acc[3]),
            ));
            for j in i..n {
                sum += $scalar(wp.add(j * $bytes)) * *x.add(j);
            }
            sum
        }
    };
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_f32x8(p: *const u8) -> __m256 {
    _mm256_loadu_ps(p.cast())
}

#[inline]
unsafe fn f32_at(p: *const u8) -> f32 {
    std::ptr::read_unaligned(p.cast::<f32>())
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load_f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
        _mm_loadu_si128(p.cast()),
    )))
}

#[inline]
unsafe fn bf16_at(p: *const u8) -> f32 {
    f32::from_bits(u32::from(std::ptr::read_unaligned(p.cast::<u16>())) << 16)
}

float_kernel!(f32_dot, F32, 4, load_f32x8, f32_at);
float_kernel!(f16_dot, F16, 2, load_f16x8, f16_at);
float_kernel!(bf16_dot, BF16, 2, load_bf16x8, bf16_at);
