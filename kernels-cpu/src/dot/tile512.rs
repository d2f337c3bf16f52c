//! AVX-512 tiles: 4 weight rows × NT tokens per call: F16 prefill (NT = 4) and Q4_0
//! decode (NT = 1; Q4_0 prefill runs on `panel512`'s panels).
//!
//! A row-at-a-time dot pays, per row and token, for everything around the multiply-adds:
//! unpacking the weight quants, fetching the block scales (a gather), the tail blocks and
//! the final horizontal sums. A tile does each weight-side step once for its tokens and
//! each activation-side step once for 4 rows, and keeps 4·NT accumulators in registers.
//! Each (row, token) accumulator sees the same operations whatever NT and the tile's other
//! rows and tokens are, so a result does not depend on the tile shape: matvec and matmul
//! of fewer than 4 tokens agree bit for bit.
//!
//! Q4_0 (against Q8_0 activations) feeds `vpdpbusd` the unsigned nibbles u = w + 8. The
//! offset is removed exactly in the integer domain: each (token, step) starts its
//! accumulator at −8·Σa per lane, itself one `vpdpbusd` of the constant 8 against the
//! activations, shared by the 4 rows.

use std::arch::x86_64::*;

use super::avx2::{f16_head, unpack_q4_0};
use super::{row_blocks, ActRow, TILE_ROWS};
use crate::formats::GgmlType;
use crate::prefetch::PREFETCH_AHEAD;

type Acc<const NT: usize> = [[__m512; NT]; TILE_ROWS];
type Out<const NT: usize> = [[f32; NT]; TILE_ROWS];

// SAFETY (all tiles): the registry (`Format::tiles`) hands these out only when the CPU has
// AVX-512 VNNI (F16: AVX-512 F/BW); `check` bounds every read.

/// Blocks per row, checking that `w` holds the tile's rows and every token covers them.
fn check<const NT: usize>(ty: GgmlType, w: &[u8], row_bytes: usize, a: &[ActRow; NT]) -> usize {
    assert!(w.len() >= TILE_ROWS * row_bytes, "{ty}: tile needs 4 rows");
    let row = &w[..row_bytes];
    let nb = row_blocks(ty, row, &a[0]);
    for t in &a[1..] {
        assert_eq!(row_blocks(ty, row, t), nb);
    }
    nb
}

#[inline]
#[target_feature(enable = "avx512f")]
fn reduce<const NT: usize>(acc: &Acc<NT>, out: &mut Out<NT>) {
    for (o, a) in out.iter_mut().zip(acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_ps(*a);
        }
    }
}

/// F16 weights × f32 activations, 16 elements a step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn f16_f32<const NT: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &[ActRow; NT],
    out: &mut Out<NT>,
) {
    let n = check(GgmlType::F16, w, row_bytes, a);
    let wp = w.as_ptr();
    let mut acc: Acc<NT> = [[_mm512_setzero_ps(); NT]; TILE_ROWS];
    let mut i = 0;
    while i < n {
        // The last step masks off the elements past the row (masked lanes are not read).
        let m: __mmask16 = if n - i >= 16 {
            0xFFFF
        } else {
            ((1u32 << (n - i)) - 1) as u16
        };
        let mut wv = [_mm512_setzero_ps(); TILE_ROWS];
        for (r, wv) in wv.iter_mut().enumerate() {
            *wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                m,
                wp.add(r * row_bytes + 2 * i).cast(),
            ));
        }
        for t in 0..NT {
            let xv = _mm512_maskz_loadu_ps(m, a[t].x.as_ptr().add(i));
            for r in 0..TILE_ROWS {
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
        i += 16;
    }
    reduce(&acc, out);
}

/// The 16 f16 scales at the starts of blocks `g..g + 16` of a row (stride `ts`), as f32;
/// lanes past `m` are 0 and not read.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn scales16(row: *const u8, g: usize, ts: usize, m: __mmask16) -> __m512 {
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(ts as i32),
    );
    // Each d is read as 4 bytes at its block's start: inside the block.
    let raw =
        _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), m, idx, row.add(g * ts).cast());
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw))
}

/// The tail: one block `b` per call for the blocks after the last whole step, in 8 lanes.
/// `unpack(blk)` gives its 32 unsigned quants (w + o) in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tail_block<const NT: usize>(
    ty: GgmlType,
    w: *const u8,
    row_bytes: usize,
    b: usize,
    o: i8,
    unpack: unsafe fn(*const u8) -> __m256i,
    a: &[ActRow; NT],
    acc: &mut Acc<NT>,
) {
    let ts = ty.type_size();
    let mut u = [_mm512_setzero_si512(); TILE_ROWS];
    let mut dw = [0f32; TILE_ROWS];
    for r in 0..TILE_ROWS {
        let blk = w.add(r * row_bytes + b * ts);
        u[r] = _mm512_zextsi256_si512(unpack(blk));
        dw[r] = f16_head(blk);
    }
    for t in 0..NT {
        let av = _mm512_zextsi256_si512(_mm256_loadu_si256(a[t].qs.as_ptr().add(32 * b).cast()));
        let neg = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(o), av),
        );
        let da = *a[t].d.get_unchecked(b);
        for r in 0..TILE_ROWS {
            let isum = _mm512_dpbusd_epi32(neg, u[r], av);
            acc[r][t] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(isum),
                _mm512_set1_ps(dw[r] * da),
                acc[r][t],
            );
        }
    }
}

/// Word indices for `vpermt2w` gathering the 16 `qs` bytes of four Q4_0 blocks from two
/// 64-byte loads (at `qs` of the first block and at the four blocks' end − 64) into
/// [A, B, C, D]: the layout of `ActRow::qs4`. As `avx512::gather4_index`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn gather4_q4_0() -> __m512i {
    const TS: usize = 18;
    let mut idx = [0u16; 32];
    for (k, v) in idx.iter_mut().enumerate() {
        let src = 2 + TS * (2 * k / 16) + (2 * k) % 16;
        *v = if src - 2 < 64 {
            ((src - 2) / 2) as u16
        } else {
            32 + ((src - (4 * TS - 64)) / 2) as u16
        };
    }
    // SAFETY: 64 bytes read from a 64-byte array.
    unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
}

/// Q4_0 weights × Q8_0 activations: four blocks a step, low nibbles against the
/// activations' first halves and high nibbles against the second halves (`qs4`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn q4_0_q8_0<const NT: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &[ActRow; NT],
    out: &mut Out<NT>,
) {
    const TS: usize = 18;
    let nb = check(GgmlType::Q4_0, w, row_bytes, a);
    let wp = w.as_ptr();
    let gather = gather4_q4_0();
    let tile_bytes = TILE_ROWS * row_bytes;
    let ahead_bytes = PREFETCH_AHEAD.div_ceil(tile_bytes.max(1)) * tile_bytes;
    let low = _mm512_set1_epi8(0x0F);
    let eight = _mm512_set1_epi8(8);
    let mut acc: Acc<NT> = [[_mm512_setzero_ps(); NT]; TILE_ROWS];
    let whole = nb / 4 * 4;
    for g in (0..whole).step_by(16) {
        let in_group = (whole - g).min(16);
        let m = ((1u32 << in_group) - 1) as u16;
        let mut ws = [_mm512_setzero_ps(); TILE_ROWS];
        for (r, ws) in ws.iter_mut().enumerate() {
            *ws = scales16(wp.add(r * row_bytes), g, TS, m);
        }
        let mut das = [_mm512_setzero_ps(); NT];
        for (t, das) in das.iter_mut().enumerate() {
            *das = _mm512_maskz_loadu_ps(m, a[t].d.as_ptr().add(g));
        }
        // Lanes [4q ×4, 4q+1 ×4, 4q+2 ×4, 4q+3 ×4] for quad q.
        let mut lanes = _mm512_srli_epi32::<2>(_mm512_setr_epi32(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        ));
        for q in 0..in_group / 4 {
            let b = g + 4 * q;
            let mut u_lo = [_mm512_setzero_si512(); TILE_ROWS];
            let mut u_hi = [_mm512_setzero_si512(); TILE_ROWS];
            let mut sw = [_mm512_setzero_ps(); TILE_ROWS];
            for r in 0..TILE_ROWS {
                let blk = wp.add(r * row_bytes + b * TS);
                if NT == 1 {
                    // Decode streams the matrix once: ask for the same spot of a later
                    // tile's rows (whole tiles, at least PREFETCH_AHEAD bytes on) now, so its
                    // memory latency overlaps this work (a prefetch never faults, even past
                    // the matrix).
                    let ahead = blk.wrapping_add(ahead_bytes);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
                }
                let raw = _mm512_permutex2var_epi16(
                    _mm512_loadu_si512(blk.add(2).cast()),
                    gather,
                    _mm512_loadu_si512(blk.add(4 * TS - 64).cast()),
                );
                u_lo[r] = _mm512_and_si512(raw, low);
                u_hi[r] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low);
                sw[r] = _mm512_permutexvar_ps(lanes, ws[r]);
            }
            for t in 0..NT {
                let act = a[t].qs4.as_ptr().add(32 * b);
                let (alo, ahi) = (
                    _mm512_loadu_si512(act.cast()),
                    _mm512_loadu_si512(act.add(64).cast()),
                );
                let neg = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_dpbusd_epi32(
                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, alo),
                        eight,
                        ahi,
                    ),
                );
                let sa = _mm512_permutexvar_ps(lanes, das[t]);
                for r in 0..TILE_ROWS {
                    let isum = _mm512_dpbusd_epi32(neg, u_lo[r], alo);
                    let isum = _mm512_dpbusd_epi32(isum, u_hi[r], ahi);
                    acc[r][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(isum),
                        _mm512_mul_ps(sw[r], sa),
                        acc[r][t],
                    );
                }
            }
            lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(4));
        }
    }
    for b in whole..nb {
        tail_block(
            GgmlType::Q4_0,
            wp,
            row_bytes,
            b,
            8,
            unpack_q4_0,
            a,
            &mut acc,
        );
    }
    reduce(&acc, out);
}
