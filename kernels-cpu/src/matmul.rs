//! Y = X·Wᵀ for many tokens (prefill): x is n×cols row-major, y is n×rows row-major.
//!
//! The activations are quantized once; each parallel task takes a few weight rows (kept in
//! L1/L2) and runs them over every token, so each weight row is read from memory once per
//! call and each activation row is reused by all rows of the task while it is in L1.

use rayon::prelude::*;

use crate::act::{quantize_acts_isa, QuantizedActs};
use crate::dot::{self, ActRow, TILE_ROWS, TILE_TOKENS};
use crate::formats::{FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::shape::check_shape;

/// Weight rows per task: enough to reuse each activation row while it sits in L1, few
/// enough that the task's rows stay in L2 and both threads get work on 576-row matrices.
const TASK_ROWS: usize = 16;

/// y (n×rows) = x (n×cols) · Wᵀ, W `rows`×`cols` of type `ty`, at the active ISA level.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), FormatError> {
    matmul_isa(isa::active(), ty, w, rows, cols, x, n, y)
}

/// [`matmul`] at an explicit ISA level (which the CPU must support).
#[allow(clippy::too_many_arguments)]
pub fn matmul_isa(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), FormatError> {
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), x, n, cols)?;
    matmul_quantized_isa(isa, ty, w, rows, cols, &acts, y)
}

/// [`matmul`] with x already quantized (`acts.n()` tokens of `cols`).
pub fn matmul_quantized(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    matmul_quantized_isa(isa::active(), ty, w, rows, cols, acts, y)
}

/// [`matmul_quantized`] at an explicit ISA level.
pub fn matmul_quantized_isa(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    let n = acts.n();
    let dot = check_shape(isa, ty, w, rows, cols, acts, n, y)?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let row_bytes = w.len() / rows;
    let act_rows: Vec<_> = (0..n).map(|t| acts.row(t)).collect();
    // Results per task as rows×n (a task's rows contiguous), transposed into y at the end:
    // that transpose is n·rows moves against n·rows·cols multiply-adds.
    let mut yt = vec![0.0f32; rows * n];
    let tile = dot::tile_kernel(ty, isa);
    yt.par_chunks_mut(TASK_ROWS * n)
        .enumerate()
        .for_each(|(c, out)| {
            let r0 = c * TASK_ROWS;
            let task_rows = out.len() / n;
            let row = |r: usize| &w[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes];
            // Whole tiles of rows × tokens first; then the row kernel for what is left.
            let (tiled_rows, tiled_tokens) = match tile {
                Some(_) => (
                    task_rows / TILE_ROWS * TILE_ROWS,
                    n / TILE_TOKENS * TILE_TOKENS,
                ),
                None => (0, 0),
            };
            if let Some(tile) = tile {
                for t0 in (0..tiled_tokens).step_by(TILE_TOKENS) {
                    let a: [ActRow; TILE_TOKENS] = std::array::from_fn(|i| act_rows[t0 + i]);
                    for rr in (0..tiled_rows).step_by(TILE_ROWS) {
                        let mut o = [[0f32; TILE_TOKENS]; TILE_ROWS];
                        let rows_bytes = (r0 + rr) * row_bytes..(r0 + rr + TILE_ROWS) * row_bytes;
                        tile(&w[rows_bytes], row_bytes, &a, &mut o);
                        for (r, o) in o.iter().enumerate() {
                            out[(rr + r) * n + t0..][..TILE_TOKENS].copy_from_slice(o);
                        }
                    }
                }
            }
            for (t, a) in act_rows.iter().enumerate() {
                let first = if t < tiled_tokens { tiled_rows } else { 0 };
                for r in first..task_rows {
                    out[r * n + t] = dot(row(r), a);
                }
            }
        });
    for (r, col) in yt.chunks_exact(n).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            y[t * rows + r] = v;
        }
    }
    Ok(())
}
