//! Weights repacked once, at load, into groups of 16 rows that the AVX-512 kernels read
//! with one weight row per 32-bit lane: decode and prefill without horizontal sums.
//!
//! A row kernel (`dot`) multiplies one row by one token and ends each row with horizontal
//! reductions, a gather of the block scales and scalar work for the blocks that do not fill
//! a register: on SmolLM2's 576-wide rows that fixed cost is as large as the multiply-adds,
//! and decode ran at ~80% of the read bandwidth (Q8_0) with the core busy, so memory and
//! compute did not overlap. Here a register holds the same 4 bytes (Q8_0, Q4_0, Q4_1) or the
//! same element (F16) of 16 rows; the token's value is broadcast to all lanes, so a few
//! `vpdpbusd` (or FMAs) give 16 rows' block dots at once, the scales of 16 rows are one
//! load, and a group's 16 results are one store. The same kernels run prefill, reusing each
//! group's weight registers for up to 8 tokens.
//!
//! Layout of a group (`nb` blocks a row, rows r = 0..16 of the group):
//! - Q8_0, Q4_0, Q4_1: the quants of block b of the 16 rows, as 64-byte registers: register
//!   j lane r holds bytes 4j..4j+4 of row r's block b (Q8_0: `q + 128`, unsigned; the
//!   nibble formats: the raw `qs` bytes, low nibbles elements 4j.., high 16 + 4j..), 8
//!   registers a block (Q8_0) or 4 (nibbles); then, after all blocks, the f16 scales, 16 a
//!   block (lane r = row r); then (Q4_1) the f16 mins likewise.
//! - F16: element k of the 16 rows, 16 halves (32 bytes), for k = 0..cols.
//!
//! Groups are 64-byte aligned. Rows past `rows` in the last group are zero (scale 0).
//!
//! Every (row, token) result comes from the same operations whatever the number of tokens
//! in the call (each token has its own accumulators), so matvec and matmul agree bit for
//! bit; they differ from the row kernels only in the order of the float sums. The reference
//! twin is the row-major reference kernel on the same weights ([`PackedMatrix::unpack`]
//! gives them back exactly).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod layout;

use rayon::prelude::*;

use crate::act::QuantizedActs;
use crate::formats::{FormatError, GgmlType};
use crate::isa::Isa;

/// Rows in a packed group: one per 32-bit lane of a 512-bit register.
pub const GROUP_ROWS: usize = 16;

/// Tokens a prefill tile multiplies per pass over a group's weights.
const TILE_TOKENS: usize = 8;

/// A 64-byte aligned line of packed bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A weight matrix in the 16-row group layout (see the module docs).
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Bytes of one group (a multiple of 64).
    group_bytes: usize,
    lines: Vec<Line>,
}

impl PackedMatrix {
    /// Whether `ty` has packed kernels at `isa` (Q4_0, Q4_1, Q8_0 at VNNI; F16 at AVX-512).
    pub fn supports(ty: GgmlType, isa: Isa) -> bool {
        cfg!(target_arch = "x86_64")
            && isa.is_supported()
            && match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => isa >= Isa::Vnni,
                GgmlType::F16 => isa >= Isa::Avx512,
                _ => false,
            }
    }

    /// Packs `w` (`rows`×`cols` of `ty`, the raw row-major bytes of a GGUF tensor, any
    /// alignment) if `ty` has packed kernels at `isa`; `Ok(None)` if it has not.
    pub fn new(
        isa: Isa,
        ty: GgmlType,
        w: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Option<PackedMatrix>, FormatError> {
        if !Self::supports(ty, isa) {
            return Ok(None);
        }
        let expected = layout::check(ty, w.len(), rows, cols)?;
        debug_assert_eq!(expected, w.len());
        let group_bytes = layout::group_bytes(ty, cols);
        let groups = rows.div_ceil(GROUP_ROWS);
        let mut lines = vec![Line([0; 64]); groups * group_bytes / 64];
        let row_bytes = w.len() / rows.max(1);
        let bytes = lines_bytes_mut(&mut lines);
        bytes
            .par_chunks_mut(group_bytes.max(1))
            .enumerate()
            .for_each(|(g, out)| {
                let first = g * GROUP_ROWS;
                let n = GROUP_ROWS.min(rows - first);
                let src = &w[first * row_bytes..(first + n) * row_bytes];
                layout::pack_group(ty, cols, src, n, out);
            });
        Ok(Some(PackedMatrix {
            ty,
            rows,
            cols,
            group_bytes,
            lines,
        }))
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the packed matrix occupies (what a memory ledger should count).
    pub fn bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// The matrix as the row-major bytes it was packed from.
    pub fn unpack(&self) -> Vec<u8> {
        let row_bytes = layout::row_bytes(self.ty, self.cols);
        let mut out = vec![0u8; self.rows * row_bytes];
        let bytes = lines_bytes(&self.lines);
        for (g, dst) in out.chunks_mut(GROUP_ROWS * row_bytes).enumerate() {
            let n = dst.len() / row_bytes.max(1);
            let src = &bytes[g * self.group_bytes..(g + 1) * self.group_bytes];
            layout::unpack_group(self.ty, self.cols, src, n, dst);
        }
        out
    }

    fn group(&self, g: usize) -> &[u8] {
        &lines_bytes(&self.lines)[g * self.group_bytes..(g + 1) * self.group_bytes]
    }

    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP_ROWS)
    }
}

fn lines_bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: `Line` is 64 plain bytes with no padding.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 64) }
}

fn lines_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: as above; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 64) }
}

/// y = W·x for one token, x already quantized to `m.ty().vec_dot_type()`.
pub fn matvec_packed(
    m: &PackedMatrix,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    check(m, acts, 1, y)?;
    run(m, acts, y);
    Ok(())
}

/// Y = X·Wᵀ for `acts.n()` tokens (y is n×rows, row-major), x already quantized.
pub fn matmul_packed(
    m: &PackedMatrix,
    acts: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), FormatError> {
    check(m, acts, acts.n(), y)?;
    run(m, acts, y);
    Ok(())
}

fn check(m: &PackedMatrix, acts: &QuantizedActs, n: usize, y: &[f32]) -> Result<(), FormatError> {
    let act_ty = m.ty.vec_dot_type();
    if acts.ty() != Some(act_ty) {
        return Err(FormatError::Unsupported {
            ty: m.ty,
            what: "activations are not quantized to this format's vec_dot type",
        });
    }
    if acts.cols() != m.cols || acts.n() != n {
        return Err(FormatError::ByteLength {
            ty: act_ty,
            n: n * m.cols,
            expected: n * m.cols,
            got: acts.n() * acts.cols(),
        });
    }
    if y.len() != n * m.rows {
        return Err(FormatError::ByteLength {
            ty: GgmlType::F32,
            n: n * m.rows,
            expected: n * m.rows * 4,
            got: y.len() * 4,
        });
    }
    Ok(())
}

/// `y`'s cells, written by the parallel tasks (each its own rows, so never the same cell).
#[derive(Clone, Copy)]
struct Cells(*mut f32);
// SAFETY: tasks write disjoint cells of one live `&mut [f32]` (see `run`).
unsafe impl Send for Cells {}
unsafe impl Sync for Cells {}

/// Runs every group over every token, groups split into parallel tasks.
fn run(m: &PackedMatrix, acts: &QuantizedActs, y: &mut [f32]) {
    let n = acts.n();
    if n == 0 || m.rows == 0 {
        return;
    }
    let tokens = layout::Tokens::new(m.ty, acts);
    let cells = Cells(y.as_mut_ptr());
    let rows = m.rows;
    let task = |groups: std::ops::Range<usize>| {
        let cells = cells;
        for g in groups {
            let r0 = g * GROUP_ROWS;
            let valid = GROUP_ROWS.min(rows - r0);
            let mut t0 = 0;
            while t0 < n {
                let nt = tile_tokens(n - t0);
                let mut out = [[0f32; GROUP_ROWS]; TILE_TOKENS];
                kernel(m, g, &tokens, t0, nt, &mut out);
                for (t, o) in out.iter().enumerate().take(nt) {
                    for (r, v) in o.iter().enumerate().take(valid) {
                        // SAFETY: t0 + t < n and r0 + r < rows, inside y (n×rows, checked);
                        // only this task writes rows r0..r0 + 16.
                        unsafe { *cells.0.add((t0 + t) * rows + r0 + r) = *v };
                    }
                }
                t0 += nt;
            }
        }
    };
    let groups = m.groups();
    let per_task = groups_per_task(groups, m.group_bytes, n);
    if per_task >= groups {
        task(0..groups);
    } else {
        (0..groups.div_ceil(per_task))
            .into_par_iter()
            .for_each(|c| task(c * per_task..((c + 1) * per_task).min(groups)));
    }
}

/// Tokens of the next tile: 8 while there are that many, then 4, then 1 (each token's
/// result is the same in every tile size).
fn tile_tokens(left: usize) -> usize {
    match left {
        8.. => 8,
        4.. => 4,
        _ => 1,
    }
}

/// Groups per parallel task: about four tasks per thread, each at least ~16 KiB of weight
/// reads (rayon's per-task cost is a few µs), and never one task for two threads' work.
fn groups_per_task(groups: usize, group_bytes: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || groups * group_bytes * n < 32 * 1024 {
        return groups.max(1);
    }
    let by_count = groups.div_ceil(4 * threads);
    let by_size = (16 * 1024usize).div_ceil(group_bytes * n);
    let at_most = groups.div_ceil(threads);
    by_count.max(by_size.min(at_most)).max(1)
}

/// Group `g` times tokens `t0..t0 + nt` into `out[t][r]`.
fn kernel(
    m: &PackedMatrix,
    g: usize,
    tokens: &layout::Tokens,
    t0: usize,
    nt: usize,
    out: &mut [[f32; GROUP_ROWS]; TILE_TOKENS],
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a PackedMatrix exists only where `supports` held: the CPU has the
        // features its kernels need; the group and tokens were validated by `check`.
        unsafe { avx512::group(m.ty, m.cols, m.group(g), tokens, t0, nt, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, g, tokens, t0, nt, out);
        unreachable!("PackedMatrix::supports is false off x86_64");
    }
}
