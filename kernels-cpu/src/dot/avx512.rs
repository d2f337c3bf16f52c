//! AVX-512 dot products for the legacy formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and for
//! F32/F16/BF16, in two flavours: `Vnni` (`vpdpbusd`) and `Avx512` (F+BW: `vpmaddubsw` + `vpmaddwd`).
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

use super::avx2::{f16_head, unpack_q4_0, unpack_q4_1, unpack_q5_0, unpack_q5_1};
use super::{row_blocks, ActRow, DotFn};
use crate::formats::GgmlType;
use crate::isa::Isa;
use crate::prefetch;

pub fn kernel(ty: GgmlType, level: Isa) -> Option<DotFn> {
    use GgmlType::*;
    Some(match (ty, level) {
        (F32, _) => |w, a| unsafe { f32_dot(w, a) },
        (F16, _) => |w, a| unsafe { f16_dot(w, a) },
        (BF16, _) => |w, a| unsafe { bf16_dot(w, a) },
        (Q4_0, Isa::Vnni) => |w, a| unsafe { vnni::q4_0(w, a) },
        (Q4_1, Isa::Vnni) => |w, a| unsafe { vnni::q4_1(w, a) },
        (Q5_0, Isa::Vnni) => |w, a| unsafe { vnni::q5_0(w, a) },
        (Q5_1, Isa::Vnni) => |w, a| unsafe { vnni::q5_1(w, a) },
        (Q8_0, Isa::Vnni) => |w, a| unsafe { vnni::q8_0(w, a) },
        (Q4_0, Isa::Avx512) => |w, a| unsafe { bw::q4_0(w, a) },
        (Q4_1, Isa::Avx512) => |w, a| unsafe { bw::q4_1(w, a) },
        (Q5_0, Isa::Avx512) => |w, a| unsafe { bw::q5_0(w, a) },
        (Q5_1, Isa::Avx512) => |w, a| unsafe { bw::q5_1(w, a) },
        (Q8_0, Isa::Avx512) => |w, a| unsafe { bw::q8_0(w, a) },
        _ => return None,
    })
}
// SAFETY (all kernels in this file): `dot::kernel` hands these out only at levels the CPU
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

/// A nibble-format row dot at one flavour. Four blocks at a time: their 64 `qs` bytes are
/// gathered into one register by `vpermt2b`; low nibbles meet the activations' first
/// halves and high nibbles their second halves (the `qs4` layout), both summed by
/// `$udot(acc, u, a)` (Σ u·a per 4 bytes into i32) into the same lanes, four per block.
/// `$qh`: byte offset of the fifth bits (Q5) or None; `$m`: offset of the min (Q4_1/Q5_1) or
/// None; `$o`: the offset subtracted from u (0 with a min); `$single(blk)` unpacks one block
/// for the tail.
macro_rules! legacy_rows {
    ($feat:literal, $udot:ident, $name:ident, $ty:ident, $qs:expr, $qh:expr, $single:ident, $m:expr, $o:expr) => {
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $name(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::$ty, w, a);
            let ts = GgmlType::$ty.type_size();
            let (qs_off, qh_off, m_off): (usize, Option<usize>, Option<usize>) = ($qs, $qh, $m);
            let (wp, qs, qs4) = (w.as_ptr(), a.qs.as_ptr(), a.qs4.as_ptr());
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
                let s16 = _mm512_mul_ps(d16, _mm512_loadu_ps(a.d.as_ptr().add(g)));
                let side_w = match m_off {
                    Some(off) => _mm512_cvtph_ps(_mm512_cvtepi32_epi16(
                        _mm512_i32gather_epi32::<1>(idx, base.add(off).cast()),
                    )),
                    None => d16,
                };
                side = _mm512_fmadd_ps(side_w, _mm512_loadu_ps(a.dsum.as_ptr().add(g)), side);
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
                        u_lo = _mm512_or_si512(
                            u_lo,
                            _mm512_maskz_mov_epi8(mlo, _mm512_set1_epi8(0x10)),
                        );
                        u_hi = _mm512_or_si512(
                            u_hi,
                            _mm512_maskz_mov_epi8(mhi, _mm512_set1_epi8(0x10)),
                        );
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
                tail += _mm512_reduce_add_epi32(isum) as f32 * (dw * *a.d.get_unchecked(b));
                side_tail += match m_off {
                    Some(off) => f16_head(blk.add(off)),
                    None => dw,
                } * *a.dsum.get_unchecked(b);
            }
            let sign = if m_off.is_some() { 1.0 } else { -($o as f32) };
            _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
                + tail
                + sign * (_mm512_reduce_add_ps(side) + side_tail)
        }
    };
}

/// Q8_0 weights: `$prep(w, a) -> (u, a')` makes the unsigned/signed operand pair, `$o` the
/// offset that `u` carries (128 for w + 128, 0 for the sign trick).
macro_rules! q8_0_rows {
    ($feat:literal, $udot:ident, $prep:ident, $o:expr) => {
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn q8_0(w: &[u8], a: &ActRow) -> f32 {
            let nb = row_blocks(GgmlType::Q8_0, w, a);
            let (wp, qs) = (w.as_ptr(), a.qs.as_ptr());
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
                let s16 = _mm512_mul_ps(d16, _mm512_loadu_ps(a.d.as_ptr().add(g)));
                if $o != 0 {
                    side = _mm512_fmadd_ps(d16, _mm512_loadu_ps(a.dsum.as_ptr().add(g)), side);
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
                tail += _mm512_reduce_add_epi32(isum) as f32 * (dw * *a.d.get_unchecked(b));
                tail -= ($o as f32) * dw * *a.dsum.get_unchecked(b);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + tail
                - ($o as f32) * _mm512_reduce_add_ps(side)
        }
    };
}

macro_rules! legacy_family {
    ($feat:literal, $udot:ident, $q8prep:ident, $q8o:expr) => {
        legacy_rows!($feat, $udot, q4_0, Q4_0, 2, None, unpack_q4_0, None, 8);
        legacy_rows!(
            $feat,
            $udot,
            q4_1,
            Q4_1,
            4,
            None,
            unpack_q4_1,
            Some(2usize),
            0
        );
        legacy_rows!(
            $feat,
            $udot,
            q5_0,
            Q5_0,
            6,
            Some(2usize),
            unpack_q5_0,
            None,
            16
        );
        legacy_rows!(
            $feat,
            $udot,
            q5_1,
            Q5_1,
            8,
            Some(4usize),
            unpack_q5_1,
            Some(2usize),
            0
        );
        q8_0_rows!($feat, $udot, $q8prep, $q8o);
    };
}

pub(super) mod vnni {
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

    legacy_family!(
        "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
        udot,
        q8_prep,
        128
    );
}

pub(super) mod bw {
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

    legacy_family!("avx512f,avx512bw,avx512vl,avx2,fma,f16c", udot, q8_prep, 0);
}

/// Σ w·x, 16 f32 lanes and four accumulators; `$load(p)` gives 16 weights at byte `p`.
macro_rules! float_rows {
    ($name:ident, $ty:ident, $bytes:expr, $load:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &ActRow) -> f32 {
            let n = row_blocks(GgmlType::$ty, w, a);
            let (wp, x) = (w.as_ptr(), a.x.as_ptr());
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i + 64 <= n {
                prefetch::ahead(wp.add(i * $bytes), 64 * $bytes);
                for (k, acc) in acc.iter_mut().enumerate() {
                    let j = i + 16 * k;
                    *acc =
                        _mm512_fmadd_ps($load(wp.add(j * $bytes)), _mm512_loadu_ps(x.add(j)), *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] =
                    _mm512_fmadd_ps($load(wp.add(i * $bytes)), _mm512_loadu_ps(x.add(i)), acc[0]);
                i += 16;
            }
            let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            // The last n % 16 elements go through the AVX2 kernel's scalar tail.
            let rest = ActRow {
                x: &a.x[i..n],
                ..ActRow::default()
            };
            _mm512_reduce_add_ps(total)
                + super::avx2::kernel(GgmlType::$ty).expect("AVX2 float kernel")(
                    &w[i * $bytes..n * $bytes],
                    &rest,
                )
        }
    };
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

float_rows!(f32_dot, F32, 4, load_f32x16);
/// bf16 is the top half of an f32: widen each u16 to 32 bits and shift it up.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_bf16x16(p: *const u8) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
        _mm256_loadu_si256(p.cast()),
    )))
}

float_rows!(f16_dot, F16, 2, load_f16x16);
float_rows!(bf16_dot, BF16, 2, load_bf16x16);
