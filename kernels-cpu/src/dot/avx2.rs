//! AVX2 dot products for every weight format, one `fn` per format named by what it
//! multiplies (`q4_k_q8_k`: Q4_K weights by Q8_K activations), as in every ISA file.
//!
//! Legacy blocks are unpacked to 32 unsigned bytes u (the stored quant, before any offset),
//! dotted with the activation quants by `maddubs` (u ≤ 31 times |a| ≤ 127, pairs summed:
//! ≤ 7874, no i16 saturation), and scaled by d_w·d_a in f32. The format's offset o
//! (Q4_0: 8, Q5_0: 16) is applied once per row as o·Σ d_w·(d_a·Σa), from the activation's
//! per-block sums; Q4_1/Q5_1 add Σ m_w·s_a the same way. Q8_0 weights are signed and use the
//! sign trick instead: |w| · (a with w's sign).

use std::arch::x86_64::*;

use super::{row_blocks, ActRow};
use crate::formats::blocks::BlockQ8K;
use crate::formats::GgmlType;
use crate::prefetch;

// SAFETY (all kernels in this file): the registry hands these out only for ISA levels the
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

/// The body of a legacy format's row dot over `$w`, `$a`: `$unpack(block_ptr)` gives the
/// 32 unsigned quants, `$m` the byte offset of the min or None, `$o` the offset subtracted
/// from u. A macro so that each kernel is a `fn` of its own with its own target features.
macro_rules! legacy_row {
    ($ty:ident, $unpack:ident, $m:expr, $o:expr, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::$ty, $w, $a);
        let ts = GgmlType::$ty.type_size();
        let (wp, qs) = ($w.as_ptr(), $a.qs.as_ptr());
        let m_off: Option<usize> = $m;
        let mut acc = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            let blk = wp.add(b * ts);
            prefetch::ahead(blk, ts);
            let dw = f16_head(blk);
            let u = $unpack(blk);
            let x = _mm256_loadu_si256(qs.add(32 * b).cast());
            let s = _mm256_set1_ps(dw * *$a.d.get_unchecked(b));
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
                    let side = f16_head(blk.add(off)) * *$a.dsum.get_unchecked(b);
                    let p = udot32(u, x);
                    let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, _mm256_set1_ps(0.125 * side));
                    acc[0] = _mm256_add_ps(acc[0], v);
                }
            }
            acc.swap(0, 1);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }};
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    legacy_row!(Q4_0, unpack_q4_0, None, 8, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    legacy_row!(Q4_1, unpack_q4_1, Some(2usize), 0, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
    legacy_row!(Q5_0, unpack_q5_0, None, 16, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
    legacy_row!(Q5_1, unpack_q5_1, Some(2usize), 0, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
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

/// The body of a float row dot Σ w·x over f32 lanes: `$load(p)` gives 8 weights at byte
/// `p` as f32, `$scalar(p)` one.
macro_rules! float_row {
    ($ty:ident, $bytes:expr, $load:ident, $scalar:ident, $w:ident, $a:ident) => {{
        let n = row_blocks(GgmlType::$ty, $w, $a);
        let (wp, x) = ($w.as_ptr(), $a.x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            prefetch::ahead(wp.add(i * $bytes), 32 * $bytes);
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                *acc = _mm256_fmadd_ps($load(wp.add(j * $bytes)), _mm256_loadu_ps(x.add(j)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps($load(wp.add(i * $bytes)), _mm256_loadu_ps(x.add(i)), acc[0]);
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
    }};
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_f32(w: &[u8], a: &ActRow) -> f32 {
    float_row!(F32, 4, load_f32x8, f32_at, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_f32(w: &[u8], a: &ActRow) -> f32 {
    float_row!(F16, 2, load_f16x8, f16_at, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16_f32(w: &[u8], a: &ActRow) -> f32 {
    float_row!(BF16, 2, load_bf16x8, bf16_at, w, a)
}

// ---- K-quants (256-element super-blocks, Q8_K activations) ----
// Each format unpacks a super-block into eight groups of 32 unsigned quants u (before any
// offset) and sixteen i16 sub-block scales (one per 16 elements); `scaled_idot` computes
// Σ_j sc_j·Σ u·a exactly in i32 (`maddubs`: u ≤ 63 times |a| ≤ 127, pairs ≤ 16002, no
// saturation; then `madd` with the scales). Offsets (Q3_K: 4, Q6_K: 32) come off as
// o·Σ_j sc_j·bsum_j, mins as dmin·Σ_j m_j·bsum_j, both from the activation's `bsums`.

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

/// The body of a K-quant row dot: `$unpack(block_ptr, y) -> (u, sc, d, side)` per
/// super-block, where the super-block contributes y.d·(d·Σ sc·u·a − side).
macro_rules! k_row {
    ($ty:ident, $unpack:ident, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::$ty, $w, $a);
        let ts = GgmlType::$ty.type_size();
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let y = $a.q8_k.get_unchecked(b);
            prefetch::ahead($w.as_ptr().add(b * ts), ts);
            let (u, sc, d, s) = $unpack($w.as_ptr().add(b * ts), y);
            let isum = scaled_idot(&u, sc, y.qs.as_ptr());
            // The side term, an eighth in each lane (exact), joins the super-block's
            // dot there (they largely cancel; see the legacy kernels in `avx2`).
            let side = _mm256_set1_ps(-0.125 * y.d * s);
            let v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(y.d * d), side);
            acc = _mm256_add_ps(acc, v);
        }
        hsum(acc)
    }};
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
    // Six-bit scales from 12 bytes in u32 words (the layout of `formats::q3_k`), minus 32.
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

/// Q4_K/Q5_K's eight 6-bit scales and eight 6-bit mins from their 12 packed bytes, with
/// word operations on the three little-endian u32s (the packing `formats::k_scales` reads).
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

/// The sub-block scales (each repeated for both halves of 16) and Σ m_j·bsums of Q4_K/Q5_K.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_q45(scales: &[u8; 12], y: &BlockQ8K) -> (__m256i, i32) {
    let (sc, m) = scales_mins(scales);
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

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q2_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    k_row!(Q2_K, unpack_q2_k, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q3_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    k_row!(Q3_K, unpack_q3_k, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    k_row!(Q4_K, unpack_q4_k, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    k_row!(Q5_K, unpack_q5_k, w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
    k_row!(Q6_K, unpack_q6_k, w, a)
}

#[cfg(test)]
mod tests {
    use super::scales_mins;

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
