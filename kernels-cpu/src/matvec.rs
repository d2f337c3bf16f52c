//! y = W·x for one token: every weight read once, so bound by memory bandwidth.
//!
//! Rows are split into chunks that rayon spreads over the threads; the activation is
//! quantized once (or passed in already quantized, so q/k/v or gate/up share it).

use rayon::prelude::*;

use crate::act::{quantize_acts_isa, QuantizedActs};
use crate::dot::TILE_ROWS;
use crate::formats::{FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::registry;
use crate::shape::check_shape;

/// y = W·x with W `rows`×`cols` of type `ty` (raw row-major bytes, any alignment), at the
/// active ISA level.
pub fn matvec(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), FormatError> {
    matvec_isa(isa::active(), ty, w, rows, cols, x, y)
}

/// [`matvec`] at an explicit ISA level (which the CPU must support).
pub fn matvec_isa(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), FormatError> {
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), x, 1, cols)?;
    matvec_quantized_isa(isa, ty, w, rows, cols, &acts, y)
}

/// y = W·x with x already quantized to `ty.vec_dot_type()` (one row of `cols`).
pub fn matvec_quantized(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    matvec_quantized_isa(isa::active(), ty, w, rows, cols, acts, y)
}

/// [`matvec_quantized`] at an explicit ISA level.
pub fn matvec_quantized_isa(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    let dot = check_shape(isa, ty, w, rows, cols, acts, 1, y)?;
    let row_bytes = w.len() / rows.max(1);
    let a = acts.row(0);
    // Computed once: the task offsets must use the same chunk size that cut `y`.
    let chunk = chunk_rows(rows, row_bytes);
    let one = registry::format(ty).tiles(isa).and_then(|t| t.one);
    let run = |(c, ys): (usize, &mut [f32])| {
        let r0 = c * chunk;
        // Whole tiles of 4 rows first (chunks are whole tiles, so these are the rows matmul
        // tiles too), then the row kernel.
        let mut done = 0;
        if let Some(one) = one {
            for (i, ys) in ys.chunks_exact_mut(TILE_ROWS).enumerate() {
                let row = r0 + i * TILE_ROWS;
                let mut o = [[0f32; 1]; TILE_ROWS];
                let bytes = row * row_bytes..(row + TILE_ROWS) * row_bytes;
                one(&w[bytes], row_bytes, &[a], &mut o);
                for (y, o) in ys.iter_mut().zip(o) {
                    *y = o[0];
                }
                done += TILE_ROWS;
            }
        }
        for (r, y) in ys.iter_mut().enumerate().skip(done) {
            let row = r0 + r;
            *y = dot(&w[row * row_bytes..(row + 1) * row_bytes], &a);
        }
    };
    if chunk >= rows {
        run((0, y));
    } else {
        y.par_chunks_mut(chunk).enumerate().for_each(run);
    }
    Ok(())
}

/// Rows per parallel task: about four tasks per thread so an uneven finish is small, but
/// each task at least ~16 KiB of weights (rayon's per-task cost is a few µs, the time to
/// read that much), except that a matrix with rows for two threads is always split (SmolLM2's
/// 576×576 Q4_1 is 207 KB: worth both cores).
pub(crate) fn chunk_rows(rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || rows * row_bytes < 32 * 1024 {
        return rows.max(1);
    }
    let by_count = rows.div_ceil(4 * threads);
    let by_size = (16 * 1024usize).div_ceil(row_bytes.max(1));
    let at_most = rows.div_ceil(threads);
    // Whole tiles: only the matrix's last rows % 4 then miss the tiles, as in matmul.
    by_count
        .max(by_size.min(at_most))
        .max(1)
        .next_multiple_of(TILE_ROWS)
}
