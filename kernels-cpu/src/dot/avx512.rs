//! AVX-512 dot products for F32/F16/BF16, the legacy formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
//! and the K-quants Q3_K to Q6_K; the integer ones in two flavours, `vnni::q4_k_q8_k`
//! (`vpdpbusd`/`vpdpwssd`) and `bw::q4_k_q8_k` (AVX-512 F+BW: `vpmaddubsw` + `vpmaddwd`).
//! Q2_K stays on the AVX2 kernel: written this way it measured ~4% slower in cache.
//!
//! Nibble formats take four blocks per step (see `legacy_rows`); Q8_0 two blocks per
//! 512-bit register (64 quants in element order). Their int dots come
//! out as 16 i32 lanes (8 per block), converted to f32 and multiplied by a vector holding
//! each lane's block scale d_w·d_a. The scales are fetched 16 blocks at a time: one gather
//! of the 16 d fields (each read as 4 bytes at the block's start, which stays inside the
//! block), one f16→f32 conversion, one multiply by the activations' 16 d values. As in the
//! AVX2 kernels, a format's offset or min is applied once per row from the activation's
//! per-block sums (`dsum`), not per element.
//!
//! Q8_0 at `Vnni` feeds `vpdpbusd` w + 128 (unsigned) and removes 128·Σa the same way; at
//! `Avx512` it uses |w| and a with w's sign (no sign instruction at 512 bits: a masked
//! negate).

use std::arch::x86_64::*;

use super::avx2::{f16_at, scales_mins};
use super::avx2::{f16_head, unpack_q4_0, unpack_q4_1, unpack_q5_0, unpack_q5_1};
use super::{row_blocks, ActRow};
use crate::formats::GgmlType;
use crate::prefetch;

// SAFETY (all kernels in this file): the registry hands these out only at levels the CPU
// supports (`Vnni` kernels only with AVX-512 VNNI); reads are bounded by `row_blocks`.

/// Lane indices [2p ×8, 2p+1 ×8] for pair p = 0.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_index0() -> __m512i {
    _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
}

/// Word indices for `vpermt2w` that gather the 16 `qs` bytes of four consecutive blocks
/// (stride `ts`, `qs` at `qs_off`, both even in every nibble format) from two 64-byte loads,
/// the first at `qs_off` and the second at `4·ts − 64` (both inside the four blocks), into
/// [A, B, C, D]. Words, not bytes: `vpermt2b` would need AVX-512 VBMI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn gather4_index(ts: usize, qs_off: usize) -> __m512i {
    let mut idx = [0u16; 32];
    for (k, v) in idx.iter_mut().enumerate() {
        let src = qs_off + ts * (2 * k / 16) + (2 * k) % 16;
        *v = if src - qs_off < 64 {
            ((src - qs_off) / 2) as u16
        } else {
            32 + ((src - (4 * ts - 64)) / 2) as u16
        };
    }
    // SAFETY: 64 bytes read from a 64-byte array.
    unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
}

/// Fifth bits of four Q5 blocks for the [A,B,C,D] nibble order: (low-half mask, high-half
/// mask), bit 16·j + l being bit l (resp. 16 + l) of block j's qh.
#[inline]
unsafe fn fifth_masks4(blk: *const u8, ts: usize, qh_off: usize) -> (u64, u64) {
    let (mut lo, mut hi) = (0u64, 0u64);
    for j in 0..4 {
        let qh = u64::from(std::ptr::read_unaligned(
            blk.add(j * ts + qh_off).cast::<u32>(),
        ));
        lo |= (qh & 0xFFFF) << (16 * j);
        hi |= (qh >> 16) << (16 * j);
    }
    (lo, hi)
}

/// The body of a nibble-format row dot over `$w`, `$a` at one flavour. Four blocks at a time: their 64 `qs` bytes are
/// gathered into one register by `vpermt2b`; low nibbles meet the activations' first
/// halves and high nibbles their second halves (the `qs4` layout), both summed by
/// `$udot(acc, u, a)` (Σ u·a per 4 bytes into i32) into the same lanes, four per block.
/// `$qh`: byte offset of the fifth bits (Q5) or None; `$m`: offset of the min (Q4_1/Q5_1) or
/// None; `$o`: the offset subtracted from u (0 with a min); `$single(blk)` unpacks one block
/// for the tail.
macro_rules! legacy_rows {
    ($udot:ident, $ty:ident, $qs:expr, $qh:expr, $single:ident, $m:expr, $o:expr, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::$ty, $w, $a);
        let ts = GgmlType::$ty.type_size();
        let (qs_off, qh_off, m_off): (usize, Option<usize>, Option<usize>) = ($qs, $qh, $m);
        let (wp, qs, qs4) = ($w.as_ptr(), $a.qs.as_ptr(), $a.qs4.as_ptr());
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(ts as i32),
        );
        let gather = gather4_index(ts, qs_off);
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut side = _mm512_setzero_ps();
        let full = nb / 16 * 16;
        for g in (0..full).step_by(16) {
            let base = wp.add(g * ts);
            let d16 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32::<1>(
                idx,
                base.cast(),
            )));
            let s16 = _mm512_mul_ps(d16, _mm512_loadu_ps($a.d.as_ptr().add(g)));
            let side_w = match m_off {
                Some(off) => _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32::<1>(
                    idx,
                    base.add(off).cast(),
                ))),
                None => d16,
            };
            side = _mm512_fmadd_ps(side_w, _mm512_loadu_ps($a.dsum.as_ptr().add(g)), side);
            // Lane indices [4q ×4, 4q+1 ×4, 4q+2 ×4, 4q+3 ×4] for group q.
            let mut lanes = _mm512_srli_epi32::<2>(_mm512_setr_epi32(
                0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
            ));
            for q in 0..4 {
                let blk = base.add(4 * q * ts);
                prefetch::ahead(blk, 4 * ts);
                let raw = _mm512_permutex2var_epi16(
                    _mm512_loadu_si512(blk.add(qs_off).cast()),
                    gather,
                    _mm512_loadu_si512(blk.add(4 * ts - 64).cast()),
                );
                let mut u_lo = _mm512_and_si512(raw, low);
                let mut u_hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low);
                if let Some(off) = qh_off {
                    let (mlo, mhi) = fifth_masks4(blk, ts, off);
                    u_lo =
                        _mm512_or_si512(u_lo, _mm512_maskz_mov_epi8(mlo, _mm512_set1_epi8(0x10)));
                    u_hi =
                        _mm512_or_si512(u_hi, _mm512_maskz_mov_epi8(mhi, _mm512_set1_epi8(0x10)));
                }
                let act = qs4.add(32 * (g + 4 * q));
                let isum = $udot(_mm512_setzero_si512(), u_lo, _mm512_loadu_si512(act.cast()));
                let isum = $udot(isum, u_hi, _mm512_loadu_si512(act.add(64).cast()));
                let sp = _mm512_permutexvar_ps(lanes, s16);
                acc[q % 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), sp, acc[q % 2]);
                lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(4));
            }
        }
        let mut tail = 0.0f32;
        let mut side_tail = 0.0f32;
        for b in full..nb {
            let blk = wp.add(b * ts);
            let dw = f16_head(blk);
            let u = _mm512_castsi256_si512($single(blk));
            let av = _mm512_castsi256_si512(_mm256_loadu_si256(qs.add(32 * b).cast()));
            // Only the low 8 lanes hold this block; the upper ones are masked off.
            let isum = _mm512_maskz_mov_epi32(0x00FF, $udot(_mm512_setzero_si512(), u, av));
            tail += _mm512_reduce_add_epi32(isum) as f32 * (dw * *$a.d.get_unchecked(b));
            side_tail += match m_off {
                Some(off) => f16_head(blk.add(off)),
                None => dw,
            } * *$a.dsum.get_unchecked(b);
        }
        let sign = if m_off.is_some() { 1.0 } else { -($o as f32) };
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
            + tail
            + sign * (_mm512_reduce_add_ps(side) + side_tail)
    }};
}

/// The body of the Q8_0 row dot over `$w`, `$a`: `$prep(w, a) -> (u, a')` makes the unsigned/signed operand pair, `$o` the
/// offset that `u` carries (128 for w + 128, 0 for the sign trick).
macro_rules! q8_0_rows {
    ($udot:ident, $prep:ident, $o:expr, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::Q8_0, $w, $a);
        let (wp, qs) = ($w.as_ptr(), $a.qs.as_ptr());
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(34),
        );
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut side = _mm512_setzero_ps();
        let full = nb / 16 * 16;
        for g in (0..full).step_by(16) {
            let base = wp.add(g * 34);
            let d16 = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32::<1>(
                idx,
                base.cast(),
            )));
            let s16 = _mm512_mul_ps(d16, _mm512_loadu_ps($a.d.as_ptr().add(g)));
            if $o != 0 {
                side = _mm512_fmadd_ps(d16, _mm512_loadu_ps($a.dsum.as_ptr().add(g)), side);
            }
            let mut lanes = pair_index0();
            for p in 0..8 {
                let blk = base.add(2 * p * 34);
                prefetch::ahead(blk, 68);
                let wv = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(blk.add(2).cast())),
                    _mm256_loadu_si256(blk.add(36).cast()),
                );
                let (u, av) = $prep(wv, _mm512_loadu_si512(qs.add(32 * (g + 2 * p)).cast()));
                let isum = $udot(_mm512_setzero_si512(), u, av);
                let sp = _mm512_permutexvar_ps(lanes, s16);
                acc[p % 2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), sp, acc[p % 2]);
                lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(2));
            }
        }
        let mut tail = 0.0f32;
        for b in full..nb {
            let blk = wp.add(b * 34);
            let wv = _mm512_castsi256_si512(_mm256_loadu_si256(blk.add(2).cast()));
            let (u, av) = $prep(
                wv,
                _mm512_castsi256_si512(_mm256_loadu_si256(qs.add(32 * b).cast())),
            );
            let isum = _mm512_maskz_mov_epi32(0x00FF, $udot(_mm512_setzero_si512(), u, av));
            let dw = f16_head(blk);
            tail += _mm512_reduce_add_epi32(isum) as f32 * (dw * *$a.d.get_unchecked(b));
            tail -= ($o as f32) * dw * *$a.dsum.get_unchecked(b);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + tail
            - ($o as f32) * _mm512_reduce_add_ps(side)
    }};
}

// ---- K-quants ----
// Each 64 quants (two Q4_K/Q5_K sub-blocks, four Q3_K/Q6_K ones) are unpacked to
// unsigned bytes in one register and multiplied with the activations by `vpmaddubsw`
// (u ≤ 63, |a| ≤ 127: a pair ≤ 16002, no saturation), then scaled per sub-block and summed
// into i32 lanes by `vpdpwssd` (VNNI) or `vpmaddwd` + add, against a vector with each i16
// lane's sub-block scale. The super-block's i32 sum is exact; it is converted and scaled by
// d·d_a once. Offsets (Q6_K: 32, Q3_K: 4) come off as o·Σ sc_j·bsum_j; mins (Q4_K, Q5_K)
// as dmin·Σ m_j·bsum_j.

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

/// The body of the Q4_K row dot over `$w`, `$a`; `$sdot` sums pairs of i16 products
/// with the scales into i32 lanes.
macro_rules! q4_k_row {
    ($sdot:ident, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::Q4_K, $w, $a);
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
            let blk = $w.as_ptr().add(b * 144);
            prefetch::ahead(blk, 144);
            let y = $a.q8_k.get_unchecked(b);
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
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<4>(q)),
                    low4,
                );
                let p =
                    _mm512_maddubs_epi16(u, _mm512_loadu_si512(y.qs.as_ptr().add(64 * k).cast()));
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
    }};
}

/// The body of the Q5_K row dot over `$w`, `$a`: as `q4_k_row!`, with each quant's fifth
/// bit from `qh`: bit 2k (low nibbles) and 2k+1 (high nibbles) of `qh[l]` for chunk k; a
/// byte-mask test adds 16 where it is set.
macro_rules! q5_k_row {
    ($sdot:ident, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::Q5_K, $w, $a);
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
            let blk = $w.as_ptr().add(b * 176);
            prefetch::ahead(blk, 176);
            let y = $a.q8_k.get_unchecked(b);
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
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<4>(q)),
                    low4,
                );
                let hi = _mm512_test_epi8_mask(h2, _mm512_set1_epi8(1 << (2 * k)));
                let u = _mm512_mask_add_epi8(u, hi, u, sixteen);
                let p =
                    _mm512_maddubs_epi16(u, _mm512_loadu_si512(y.qs.as_ptr().add(64 * k).cast()));
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
    }};
}

/// The body of the Q3_K row dot over `$w`, `$a`.
/// Q3_K: qs[32n..] holds the low two bits of the four 32-element groups of half n
/// at shifts 0, 2, 4, 6; u adds 4 where the hmask bit (bit 4n + s of hmask[l] for
/// group s of half n) is set; the stored value is that u − 4, so 4·Σ sc_j·bsum_j
/// comes off the i32 sum. Scales are six bits, minus 32.
macro_rules! q3_k_row {
    ($sdot:ident, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::Q3_K, $w, $a);
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
            let blk = $w.as_ptr().add(b * 110);
            prefetch::ahead(blk, 110);
            let y = $a.q8_k.get_unchecked(b);
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
            let mut isum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offs));
            // hmask in the low half, hmask >> 1 in the high half: bit 4n serves groups 0
            // and 1 of half n, bit 4n + 2 groups 2 and 3 (only bits 0-6 are tested, so
            // the bit the 16-bit shift brings in from the next byte is never read).
            let hm = _mm256_loadu_si256(blk.cast());
            let h2 =
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hm), _mm256_srli_epi16::<1>(hm));
            for n in 0..2 {
                let q = _mm256_loadu_si256(blk.add(32 + 32 * n).cast());
                let u01 = _mm512_and_si512(
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<2>(q)),
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
    }};
}

/// The body of the Q6_K row dot over `$w`, `$a`; `$sdot` sums pairs of i16 products
/// with the scales into i32 lanes.
macro_rules! q6_k_row {
    ($sdot:ident, $w:ident, $a:ident) => {{
        let nb = row_blocks(GgmlType::Q6_K, $w, $a);
        let idx = [
            scale_index(0, 4),
            scale_index(1, 4),
            scale_index(2, 4),
            scale_index(3, 4),
        ];
        let (low4, bits45) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
        let mut acc = _mm512_setzero_ps();
        for b in 0..nb {
            let blk = $w.as_ptr().add(b * 210);
            prefetch::ahead(blk, 210);
            let y = $a.q8_k.get_unchecked(b);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192).cast()));
            let sc = _mm512_castsi256_si512(sc16);
            // 32·Σ sc_j·bsum_j, subtracted from the first 8 lanes.
            let offs = _mm256_slli_epi32::<5>(_mm256_madd_epi16(
                sc16,
                _mm256_loadu_si256(y.bsums.as_ptr().cast()),
            ));
            let mut isum = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offs));
            for h in 0..2 {
                // ql[64h..] holds quarters 0,1 (low nibbles) and 2,3 (high); qh[32h..]
                // their bits 4-5 at shifts 0, 2, 4, 6.
                let l = _mm512_loadu_si512(blk.add(64 * h).cast());
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * h).cast());
                let h2 =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
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
    }};
}

pub(crate) mod vnni {
    use super::*;

    /// Σ u·a per 4 bytes into `acc` (`vpdpbusd`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(in crate::dot) fn udot(acc: __m512i, u: __m512i, a: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, u, a)
    }

    /// Q8_0 operands: w + 128 as unsigned (128·Σa comes off through `dsum`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn q8_prep(w: __m512i, a: __m512i) -> (__m512i, __m512i) {
        (_mm512_xor_si512(w, _mm512_set1_epi8(-128)), a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q4_0, 2, None, unpack_q4_0, None, 8, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q4_1, 4, None, unpack_q4_1, Some(2usize), 0, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q5_0, 6, Some(2usize), unpack_q5_0, None, 16, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(
            udot,
            Q5_1,
            8,
            Some(4usize),
            unpack_q5_1,
            Some(2usize),
            0,
            w,
            a
        )
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q8_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        q8_0_rows!(udot, q8_prep, 128, w, a)
    }

    /// acc + Σ pairs of p·s (`vpdpwssd`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn sdot(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        _mm512_dpwssd_epi32(acc, p, s)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q4_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q5_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q3_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q3_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn q6_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q6_k_row!(sdot, w, a)
    }
}

pub(crate) mod bw {
    use super::*;

    /// Σ u·a per 4 bytes into `acc` (`vpmaddubsw` then `vpmaddwd` by ones; callers keep
    /// u·a pairs within i16: u ≤ 128, |a| ≤ 127).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::dot) fn udot(acc: __m512i, u: __m512i, a: __m512i) -> __m512i {
        _mm512_add_epi32(
            acc,
            _mm512_madd_epi16(_mm512_maddubs_epi16(u, a), _mm512_set1_epi16(1)),
        )
    }

    /// Q8_0 operands by the sign trick: |w| (≤ 128 as unsigned), and a negated where w < 0.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn q8_prep(w: __m512i, a: __m512i) -> (__m512i, __m512i) {
        let neg = _mm512_movepi8_mask(w);
        (
            _mm512_abs_epi8(w),
            _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a),
        )
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q4_0, 2, None, unpack_q4_0, None, 8, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q4_1, 4, None, unpack_q4_1, Some(2usize), 0, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(udot, Q5_0, 6, Some(2usize), unpack_q5_0, None, 16, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_1_q8_1(w: &[u8], a: &ActRow) -> f32 {
        legacy_rows!(
            udot,
            Q5_1,
            8,
            Some(4usize),
            unpack_q5_1,
            Some(2usize),
            0,
            w,
            a
        )
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q8_0_q8_0(w: &[u8], a: &ActRow) -> f32 {
        q8_0_rows!(udot, q8_prep, 0, w, a)
    }

    /// acc + Σ pairs of p·s (`vpmaddwd` + add).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn sdot(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        _mm512_add_epi32(acc, _mm512_madd_epi16(p, s))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q4_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q4_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q5_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q5_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q3_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q3_k_row!(sdot, w, a)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn q6_k_q8_k(w: &[u8], a: &ActRow) -> f32 {
        q6_k_row!(sdot, w, a)
    }
}

/// The body of a float row dot Σ w·x, 16 f32 lanes and four accumulators: `$load(p)`
/// gives 16 weights at byte `p`; the last n % 16 go through the AVX2 kernel `$tail`.
macro_rules! float_rows {
    ($ty:ident, $bytes:expr, $load:ident, $tail:ident, $w:ident, $a:ident) => {{
        let n = row_blocks(GgmlType::$ty, $w, $a);
        let (wp, x) = ($w.as_ptr(), $a.x.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            prefetch::ahead(wp.add(i * $bytes), 64 * $bytes);
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 16 * k;
                *acc = _mm512_fmadd_ps($load(wp.add(j * $bytes)), _mm512_loadu_ps(x.add(j)), *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps($load(wp.add(i * $bytes)), _mm512_loadu_ps(x.add(i)), acc[0]);
            i += 16;
        }
        let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        // The last n % 16 elements go through the AVX2 kernel's scalar tail.
        let rest = ActRow {
            x: &$a.x[i..n],
            ..ActRow::default()
        };
        _mm512_reduce_add_ps(total) + super::avx2::$tail(&$w[i * $bytes..n * $bytes], &rest)
    }};
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_f32x16(p: *const u8) -> __m512 {
    _mm512_loadu_ps(p.cast())
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_f16x16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn f32_f32(w: &[u8], a: &ActRow) -> f32 {
    float_rows!(F32, 4, load_f32x16, f32_f32, w, a)
}

/// bf16 is the top half of an f32: widen each u16 to 32 bits and shift it up.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_bf16x16(p: *const u8) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
        _mm256_loadu_si256(p.cast()),
    )))
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn f16_f32(w: &[u8], a: &ActRow) -> f32 {
    float_rows!(F16, 2, load_f16x16, f16_f32, w, a)
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn bf16_f32(w: &[u8], a: &ActRow) -> f32 {
    float_rows!(BF16, 2, load_bf16x16, bf16_f32, w, a)
}
