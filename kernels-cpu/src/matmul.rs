//! Y = X·Wᵀ for many tokens (prefill): x is n×cols row-major, y is n×rows row-major.
//!
//! The activations are quantized once; each parallel task takes a few weight rows (kept in
//! L1/L2) and runs them over every token, so each weight row is read from memory once per
//! call and each activation row is reused by all rows of the task while it is in L1. Q4_0,
//! Q4_1 and Q8_0 at VNNI run on repacked panels (`dot::panel512`), F16 on 4 × 4 register
//! tiles (the registry's tiles), the rest row by row; each task writes straight into y.

use rayon::prelude::*;

use crate::act::{quantize_acts_isa, QuantizedActs};
use crate::dot::{self, ActRow, TILE_ROWS, TILE_TOKENS};
use crate::formats::{FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::registry;
use crate::shape::check_shape;

/// `y`'s cells, written by the parallel tasks (each its own rows, so never the same cell);
/// also the packed kernels' (`packed::run`).
#[derive(Clone, Copy)]
pub(crate) struct Cells(pub(crate) *mut f32);
// SAFETY: tasks write disjoint cells of one live `&mut [f32]` (see the call sites).
unsafe impl Send for Cells {}
unsafe impl Sync for Cells {}

impl Cells {
    /// The cell at index `i`; the caller keeps `i` inside the slice.
    pub(crate) fn at(self, i: usize) -> *mut f32 {
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
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Vnni && n >= TILE_TOKENS {
        if let Some(f) = registry::format(ty).panel {
            matmul_panels(ty, f, w, rows, row_bytes, &act_rows, dot, y);
            return Ok(());
        }
    }
    let tiles = registry::format(ty).tiles(isa);
    // Fewer than 4 tokens go through the 1-token tile where there is one, as matvec does.
    let four = tiles.and_then(|t| t.four).filter(|_| n >= TILE_TOKENS);
    let one = tiles.and_then(|t| t.one);
    let groups: Vec<usize> = match four {
        Some(_) => token_groups(n),
        None => Vec::new(),
    };
    let cells = Cells(y.as_mut_ptr());
    let task = |c: usize| {
        let r0 = c * TASK_ROWS;
        let task_rows = TASK_ROWS.min(rows - r0);
        let tiled_rows = if four.is_some() || one.is_some() {
            task_rows / TILE_ROWS * TILE_ROWS
        } else {
            0
        };
        // SAFETY (the writes): t < n and r0 + r < rows, so inside y (n×rows, checked by
        // check_shape); this task alone writes rows r0..r0 + task_rows.
        let put = |t: usize, r: usize, v: f32| unsafe { *cells.at(t * rows + r0 + r) = v };
        let tile_rows = |rr: usize| &w[(r0 + rr) * row_bytes..(r0 + rr + TILE_ROWS) * row_bytes];
        match (four, one) {
            (Some(four), _) => {
                // As in `matmul_panels`.
                let (next, per_group) = next_task_rows(w, r0, row_bytes, groups.len());
                for (k, &t0) in groups.iter().enumerate() {
                    prefetch_l2(next, k * per_group..(k + 1) * per_group);
                    let a: [ActRow; TILE_TOKENS] = std::array::from_fn(|i| act_rows[t0 + i]);
                    for rr in (0..tiled_rows).step_by(TILE_ROWS) {
                        let mut o = [[0f32; TILE_TOKENS]; TILE_ROWS];
                        four(tile_rows(rr), row_bytes, &a, &mut o);
                        for (r, o) in o.iter().enumerate() {
                            for (t, &v) in o.iter().enumerate() {
                                put(t0 + t, rr + r, v);
                            }
                        }
                    }
                }
            }
            (None, Some(one)) => {
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
            (None, None) => {}
        }
        // The rows past the tiles (or all rows without tiles), token by token.
        for (t, a) in act_rows.iter().enumerate() {
            for r in tiled_rows..task_rows {
                let row = (r0 + r) * row_bytes..(r0 + r + 1) * row_bytes;
                put(t, r, dot(&w[row], a));
            }
        }
    };
    if rayon::current_num_threads() == 1 {
        // No hand-off to the pool's one worker (two futex wake-ups a call).
        (0..rows.div_ceil(TASK_ROWS)).for_each(task);
    } else {
        (0..rows.div_ceil(TASK_ROWS)).into_par_iter().for_each(task);
    }
    Ok(())
}

/// Token groups of 4-token tiles: 0, 4, 8, … and, when n is not a multiple of 4, a last
/// one ending at n that overlaps the one before (a tile's result for a token does not
/// depend on the other tokens in it, so the overlap rewrites the same values). n ≥ 4.
fn token_groups(n: usize) -> Vec<usize> {
    (0..n - TILE_TOKENS)
        .step_by(TILE_TOKENS)
        .chain([n - TILE_TOKENS])
        .collect()
}

/// The matmul of a legacy integer format on repacked panels (`dot::panel512`): the
/// activations once, each task's weight rows once, then 4 × 4 tiles; a matrix's last
/// rows % 4 go through the row kernel `dot`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn matmul_panels(
    ty: GgmlType,
    f: dot::panel512::PanelFormat,
    w: &[u8],
    rows: usize,
    row_bytes: usize,
    act_rows: &[ActRow],
    dot: dot::DotFn,
    y: &mut [f32],
) {
    use dot::panel512::{tile, Panel};
    let n = act_rows.len();
    let nb = row_bytes / ty.type_size();
    // The activation panel's buffers are kept per thread between calls (taken out while in
    // use, so a nested call on this thread, e.g. from a stolen job, gets its own).
    thread_local! {
        static ACTS: std::cell::Cell<Option<Panel>> = const { std::cell::Cell::new(None) };
    }
    let mut acts_owned = ACTS.take().unwrap_or_else(Panel::empty);
    // SAFETY: `isa` is Vnni, which the caller's CPU supports.
    unsafe { acts_owned.fill_acts(act_rows, nb) };
    let acts = &acts_owned;
    let groups = token_groups(n);
    let cells = Cells(y.as_mut_ptr());
    // One weight panel per rayon job, refilled by each of its tasks.
    let task = |panel: &mut Panel, c: usize| {
        let r0 = c * TASK_ROWS;
        let task_rows = TASK_ROWS.min(rows - r0);
        let tiled_rows = task_rows / TILE_ROWS * TILE_ROWS;
        // SAFETY (the writes): as in `matmul_quantized_isa`.
        let put = |t: usize, r: usize, v: f32| unsafe { *cells.at(t * rows + r0 + r) = v };
        // SAFETY: `isa` is Vnni, which the caller's CPU supports.
        unsafe { panel.fill_weights(ty, f, &w[r0 * row_bytes..], tiled_rows, row_bytes, nb) };
        // The next task's rows (usually this thread's next task: rayon splits the range into
        // contiguous runs), a few lines per token group.
        let (next, per_group) = next_task_rows(w, r0, row_bytes, groups.len());
        for (k, &t0) in groups.iter().enumerate() {
            prefetch_l2(next, k * per_group..(k + 1) * per_group);
            for rr in (0..tiled_rows).step_by(TILE_ROWS) {
                let mut out = [[0f32; TILE_TOKENS]; TILE_ROWS];
                // SAFETY: `isa` is Vnni, which the caller's CPU supports.
                unsafe { tile(panel, rr, acts, t0, f.offset, f.min, &mut out) };
                for (r, out) in out.iter().enumerate() {
                    for (t, &v) in out.iter().enumerate() {
                        put(t0 + t, rr + r, v);
                    }
                }
            }
        }
        for (t, a) in act_rows.iter().enumerate() {
            for r in tiled_rows..task_rows {
                let row = (r0 + r) * row_bytes..(r0 + r + 1) * row_bytes;
                put(t, r, dot(&w[row], a));
            }
        }
    };
    if rayon::current_num_threads() == 1 {
        // No hand-off to the pool's one worker (two futex wake-ups a call).
        let mut panel = Panel::empty();
        (0..rows.div_ceil(TASK_ROWS)).for_each(|c| task(&mut panel, c));
    } else {
        (0..rows.div_ceil(TASK_ROWS))
            .into_par_iter()
            .for_each_init(Panel::empty, task);
    }
    ACTS.set(Some(acts_owned));
}

/// The weight rows of the task after the one at row `r0` (usually this thread's next task:
/// rayon splits the range into contiguous runs), and how many of their 64-byte lines to
/// prefetch per step when the task takes `steps` steps.
fn next_task_rows(w: &[u8], r0: usize, row_bytes: usize, steps: usize) -> (&[u8], usize) {
    let next = &w[((r0 + TASK_ROWS) * row_bytes).min(w.len())
        ..((r0 + 2 * TASK_ROWS) * row_bytes).min(w.len())];
    (next, next.len().div_ceil(64).div_ceil(steps.max(1)))
}

/// Asks for lines `lines` (64-byte units) of `bytes` into L2: the next task's weight rows,
/// a few lines per tile step, so they are in cache when it starts (the hardware prefetcher
/// stops following them while a task's tiles run in cache).
fn prefetch_l2(bytes: &[u8], lines: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for l in lines {
        if l * 64 >= bytes.len() {
            break;
        }
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: the address is inside `bytes`, and a prefetch does not access memory
        // architecturally anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(bytes.as_ptr().add(l * 64).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, lines);
}
