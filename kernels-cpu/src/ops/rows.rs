//! A weighted sum of a quantized matrix's rows, `out += Σ_j p_j · row_j`: the product of one
//! vector with the matrix's transpose. MLA absorbs a query through an older file's
//! `attn_kv_b` this way round (its rows are the query's dimensions), every decode token.
//!
//! For the legacy formats with a scale per 32-element block (Q8_0, Q4_0) each block adds
//! (p_j·d)·(q − o) to its 32 sums, a multiply and an add an element: the fast path expands
//! a block's quants in registers (Q4_0's nibbles to floats by a 16-entry table) into
//! accumulators that stay in registers across all the rows, and the reference does the same
//! arithmetic in the same order, so the two agree bit for bit. Other formats are dequantized
//! a row at a time by their reference code and added as p_j·w.

use crate::formats::{dequantize, FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::shape::check_rows;

/// `out += Σ_j p[j] · row_j`, the rows being `p.len()` rows of `out.len()` elements of type
/// `ty`, back to back in `w`, at the active ISA level.
///
/// Errors if `w` is not exactly those rows.
pub fn weighted_rows(
    ty: GgmlType,
    w: &[u8],
    p: &[f32],
    out: &mut [f32],
) -> Result<(), FormatError> {
    weighted_rows_isa(isa::active(), ty, w, p, out)
}

/// [`weighted_rows`] at level `isa` (a level the CPU lacks runs the best one below it). The
/// legacy 8-bit and 4-bit formats (Q8_0, Q4_0) have an AVX-512 path; every other format and
/// level runs the reference.
pub fn weighted_rows_isa(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    p: &[f32],
    out: &mut [f32],
) -> Result<(), FormatError> {
    let row_bytes = check_rows(ty, w, p.len(), out.len())?;
    #[cfg(target_arch = "x86_64")]
    if let super::Path::Simd(level) = super::Path::of(isa) {
        if level == super::simd::Level::Avx512 && matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) {
            // SAFETY: the level says the CPU has AVX-512 F + BW; `check` made `w` whole
            // rows of `out.len()` elements (whole 32-element blocks) for each weight of `p`.
            unsafe { avx512::weighted_rows(ty, w, row_bytes, p, out) };
            return Ok(());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, row_bytes);
    weighted_rows_ref(ty, w, p, out)
}

/// The reference twin: per row j and block, `out[c] += (p_j·d)·(q_c − o)` for Q8_0
/// (o = 0) and Q4_0 (o = 8); other formats a row dequantized by the format's reference code,
/// then `out[c] += p_j · w_c`. Rows in order.
pub fn weighted_rows_ref(
    ty: GgmlType,
    w: &[u8],
    p: &[f32],
    out: &mut [f32],
) -> Result<(), FormatError> {
    let row_bytes = check_rows(ty, w, p.len(), out.len())?;
    let rows = p.iter().zip(w.chunks_exact(row_bytes.max(1)));
    if let Some(offset) = legacy_offset(ty) {
        let size = ty.type_size();
        for (&pj, row) in rows {
            for (blk, out) in row.chunks_exact(size).zip(out.chunks_exact_mut(32)) {
                let coef = pj * half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let qs = &blk[2..];
                if offset == 8 {
                    // Element e < 16: the low nibble of byte e; e ≥ 16: the high one of e − 16.
                    let (lo, hi) = out.split_at_mut(16);
                    for ((l, h), &b) in lo.iter_mut().zip(hi).zip(qs) {
                        *l += coef * (i32::from(b & 0x0F) - offset) as f32;
                        *h += coef * (i32::from(b >> 4) - offset) as f32;
                    }
                } else {
                    for (o, &b) in out.iter_mut().zip(qs) {
                        *o += coef * f32::from(b as i8);
                    }
                }
            }
        }
        return Ok(());
    }
    let mut row = vec![0.0f32; out.len()];
    for (&pj, bytes) in rows {
        dequantize(ty, bytes, &mut row)?;
        for (o, &v) in out.iter_mut().zip(&row) {
            *o += pj * v;
        }
    }
    Ok(())
}

/// The offset o of a legacy 32-element format with a scale only (w = d·(q − o)): Q4_0's 8,
/// Q8_0's 0; `None` for every other format.
fn legacy_offset(ty: GgmlType) -> Option<i32> {
    match ty {
        GgmlType::Q4_0 => Some(8),
        GgmlType::Q8_0 => Some(0),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::formats::GgmlType;

    /// Blocks of 32 elements summed together in registers: 8 blocks, 16 accumulators.
    const SPAN: usize = 8;

    /// Rows ahead whose lines the first pass over the rows asks for: the passes walk the
    /// matrix down its columns (a row's span at a time), which the hardware prefetcher does
    /// not follow.
    const ROWS_AHEAD: usize = 4;

    /// [`super::weighted_rows`] for Q4_0 (element e < 16 the low nibble of byte e, e ≥ 16
    /// the high nibble of byte e − 16, less 8) and Q8_0 (signed bytes): a span of [`SPAN`]
    /// blocks of `out` stays in registers while every row adds its blocks there.
    ///
    /// # Safety
    /// AVX-512 F + BW; `w` holds `p.len()` rows of `row_bytes` bytes, each `out.len() / 32`
    /// blocks of `ty` (Q4_0 or Q8_0).
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn weighted_rows(
        ty: GgmlType,
        w: &[u8],
        row_bytes: usize,
        p: &[f32],
        out: &mut [f32],
    ) {
        let (q4, block) = (ty == GgmlType::Q4_0, ty.type_size());
        // Q4_0's nibble n as a float, n − 8, by `vpermps`.
        let table = _mm512_setr_ps(
            -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
        );
        let nb = out.len() / 32;
        let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
        let mut b0 = 0;
        while b0 < nb {
            let span = SPAN.min(nb - b0);
            let mut acc = [_mm512_setzero_ps(); 2 * SPAN];
            for (k, acc) in acc.iter_mut().enumerate().take(2 * span) {
                *acc = _mm512_loadu_ps(op.add(32 * b0 + 16 * k));
            }
            for (j, &pj) in p.iter().enumerate() {
                if b0 == 0 {
                    let ahead = wp.wrapping_add((j + ROWS_AHEAD) * row_bytes);
                    crate::prefetch::span(ahead, row_bytes);
                }
                let row = wp.add(j * row_bytes + b0 * block);
                for (s, acc) in acc.chunks_exact_mut(2).enumerate().take(span) {
                    let blk = row.add(s * block);
                    let h = i32::from(blk.cast::<u16>().read_unaligned());
                    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
                    let coef = _mm512_set1_ps(pj * d);
                    let (lo, hi) = if q4 {
                        nibbles(blk.add(2), table)
                    } else {
                        bytes(blk.add(2))
                    };
                    // A multiply and an add, as the reference (which has no FMA everywhere).
                    acc[0] = _mm512_add_ps(acc[0], _mm512_mul_ps(coef, lo));
                    acc[1] = _mm512_add_ps(acc[1], _mm512_mul_ps(coef, hi));
                }
            }
            for (k, acc) in acc.iter().enumerate().take(2 * span) {
                _mm512_storeu_ps(op.add(32 * b0 + 16 * k), *acc);
            }
            b0 += span;
        }
    }

    /// A Q4_0 block's 32 quants at `qs`, less 8, as floats: elements 0..16 (low nibbles),
    /// 16..32 (high).
    #[inline(always)]
    unsafe fn nibbles(qs: *const u8, table: __m512) -> (__m512, __m512) {
        let (raw, m) = (_mm_loadu_si128(qs.cast()), _mm_set1_epi8(0x0F));
        let lo = _mm512_cvtepu8_epi32(_mm_and_si128(raw, m));
        let hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(raw), m));
        (
            _mm512_permutexvar_ps(lo, table),
            _mm512_permutexvar_ps(hi, table),
        )
    }

    /// A Q8_0 block's 32 signed quants at `qs` as floats: elements 0..16, 16..32.
    #[inline(always)]
    unsafe fn bytes(qs: *const u8) -> (__m512, __m512) {
        let half = |at: usize| {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs.add(at).cast())))
        };
        (half(0), half(16))
    }
}
