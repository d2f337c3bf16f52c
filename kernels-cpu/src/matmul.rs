//! Y = X·Wᵀ for many tokens (prefill): x is n×cols row-major, y is n×rows row-major.
//!
//! The activations are quantized once; each parallel task takes a few weight rows (kept in
//! L1/L2) and runs them over every token, so each weight row is read from memory once per
//! call and each activation row is reused by all rows of the task while it is in L1. Where
//! the format has a tile kernel (`dot::tile_kernel`), rows and tokens go 4 × 4 a call; the
//! task writes its results straight into y.

use rayon::prelude::*;

use crate::act::{quantize_acts_isa, QuantizedActs};
use crate::dot::{self, ActRow, Tiles, TILE_ROWS, TILE_TOKENS};
use crate::formats::{FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::shape::check_shape;

/// `y`'s cells, written by the parallel tasks (each its own rows, so never the same cell).
#[derive(Clone, Copy)]
struct Cells(*mut f32);
// SAFETY: tasks write disjoint cells of one live `&mut [f32]` (see the call site).
unsafe impl Send for Cells {}
unsafe impl Sync for Cells {}

impl Cells {
    /// The cell at index `i`; the caller keeps `i` inside the slice.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Weight rows per task: enough to reuse each activation row while it sits in L1, few
/// enough that the task's rows stay in L2 and both threads get work on 576-row matrices.
/// A multiple of `TILE_ROWS`, so only a matrix's last rows % 4 miss the tiles, as in matvec.
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
    let tiles = dot::tile_kernel(ty, isa);
    // Token groups of the 4-token tiles: 0, 4, 8, … and, when n is not a multiple of 4, a
    // last one ending at n that overlaps the one before (a tile's result for a token does
    // not depend on the other tokens in it, so the overlap rewrites the same values).
    // Fewer than 4 tokens go through the 1-token tile, as matvec does.
    let groups: Vec<usize> = match tiles {
        Some(_) if n >= TILE_TOKENS => (0..n - TILE_TOKENS)
            .step_by(TILE_TOKENS)
            .chain([n - TILE_TOKENS])
            .collect(),
        _ => Vec::new(),
    };
    let cells = Cells(y.as_mut_ptr());
    (0..rows.div_ceil(TASK_ROWS)).into_par_iter().for_each(|c| {
        let r0 = c * TASK_ROWS;
        let task_rows = TASK_ROWS.min(rows - r0);
        let tiled_rows = match tiles {
            Some(t) if n >= TILE_TOKENS || t.one.is_some() => task_rows / TILE_ROWS * TILE_ROWS,
            _ => 0,
        };
        // SAFETY (the writes): t < n and r0 + r < rows, so inside y (n×rows, checked by
        // check_shape); this task alone writes rows r0..r0 + task_rows.
        let put = |t: usize, r: usize, v: f32| unsafe { *cells.at(t * rows + r0 + r) = v };
        let tile_rows = |rr: usize| &w[(r0 + rr) * row_bytes..(r0 + rr + TILE_ROWS) * row_bytes];
        match tiles {
            Some(tiles) if n >= TILE_TOKENS => {
                for &t0 in &groups {
                    let a: [ActRow; TILE_TOKENS] = std::array::from_fn(|i| act_rows[t0 + i]);
                    for rr in (0..tiled_rows).step_by(TILE_ROWS) {
                        let mut o = [[0f32; TILE_TOKENS]; TILE_ROWS];
                        (tiles.four)(tile_rows(rr), row_bytes, &a, &mut o);
                        for (r, o) in o.iter().enumerate() {
                            for (t, &v) in o.iter().enumerate() {
                                put(t0 + t, rr + r, v);
                            }
                        }
                    }
                }
            }
            Some(Tiles { one: Some(one), .. }) => {
                for (t, a) in act_rows.iter().enumerate() {
                    for rr in (0..tiled_rows).step_by(TILE_ROWS) {
                        let mut o = [[0f32; 1]; TILE_ROWS];
                        one(tile_rows(rr), row_bytes, &[*a], &mut o);
                        for (r, o) in o.iter().enumerate() {
                            put(t, rr + r, o[0]);
                        }
                    }
                }
            }
            _ => {}
        }
        // The rows past the tiles (or all rows without tiles), token by token.
        for (t, a) in act_rows.iter().enumerate() {
            for r in tiled_rows..task_rows {
                let row = (r0 + r) * row_bytes..(r0 + r + 1) * row_bytes;
                put(t, r, dot(&w[row], a));
            }
        }
    });
    Ok(())
}
