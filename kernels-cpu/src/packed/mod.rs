//! Weights repacked once, at load, into groups of 16 rows that the AVX-512 kernels read
//! with one weight row per 32-bit lane: decode and prefill without horizontal sums.
//!
//! A row kernel (`dot`) multiplies one row by one token and ends each row with horizontal
//! reductions, a gather of the block scales and scalar work for the blocks that do not fill
//! a register: on SmolLM2's 576-wide rows that fixed cost is as large as the multiply-adds,
//! and decode ran at ~80% of the read bandwidth (Q8_0) with the core busy, so memory and
//! compute did not overlap. Here a register holds the same 4 bytes (the legacy formats) or
//! the same element (F16, BF16) of 16 rows; the token's value is broadcast to all lanes, so a few
//! `vpdpbusd` (or FMAs) give 16 rows' block dots at once, the scales of 16 rows are one
//! load, and a group's 16 results are one store. The same kernels run prefill, reusing each
//! group's weight registers for up to 8 tokens.
//!
//! Each format's layout, packing and kernels are in its own file: `legacy` (Q8_0, Q4_0,
//! Q4_1, Q5_0, Q5_1), `float` (F16, BF16), `q2_k` … `q6_k`; the vocabulary they share in
//! `layout`, the SIMD helpers in `simd`. This file is the dispatch: it takes a format's
//! packed kernels from its row in [`crate::registry`] (`PackedFormat`). Kernels are named
//! by what they multiply, as the row kernels are (`q4_k::q4_k_q8_k`).
//!
//! A group takes exactly the bytes its 16 rows take in the GGUF layout, so a matrix packs
//! in place ([`pack_in_place`]: a device's copy of its weights becomes the packed copy, at
//! the size the memory plan counted). The last `rows % 16` rows stay row-major after the
//! groups and run on the row kernel (`dot`).
//!
//! Every (row, token) result comes from the same operations whatever the number of tokens
//! in the call (each token has its own accumulators), so matvec and matmul agree bit for
//! bit; they differ from the row kernels only in the order of the float sums. The reference
//! twin is the row-major reference kernel on the same weights ([`Packed::unpack`]
//! gives them back exactly).

pub(crate) mod float;
pub(crate) mod layout;
pub(crate) mod legacy;
pub(crate) mod q2_k;
pub(crate) mod q3_k;
pub(crate) mod q4_k;
pub(crate) mod q5_k;
pub(crate) mod q6_k;
#[cfg(target_arch = "x86_64")]
mod simd;

use rayon::prelude::*;

use crate::act::QuantizedActs;
use crate::formats::{FormatError, GgmlType};
use crate::isa::{self, Isa};
use crate::matmul::Cells;
use crate::registry;

pub use layout::GROUP_ROWS;
use layout::{PackedFormat, Tokens, TILE_TOKENS};

/// A 64-byte aligned line of packed bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// Whether `ty` has packed kernels at `isa` (the legacy formats and Q2_K to Q6_K at VNNI;
/// F16 and BF16 at AVX-512: the registry row's `packed`).
pub fn supports(ty: GgmlType, isa: Isa) -> bool {
    registry::format(ty).packs(isa)
}

/// Repacks `bytes` (a row-major `rows`×`cols` matrix of `ty`) in place if `ty` has packed
/// kernels at `isa`; whether it did. Groups are packed in parallel.
pub fn pack_in_place(
    isa: Isa,
    ty: GgmlType,
    bytes: &mut [u8],
    rows: usize,
    cols: usize,
) -> Result<bool, FormatError> {
    layout::check(ty, bytes.len(), rows, cols)?;
    if !supports(ty, isa) {
        return Ok(false);
    }
    let layout = packed_format(ty).layout;
    let group_bytes = layout::group_bytes(ty, cols);
    let full = rows / GROUP_ROWS * group_bytes;
    if full > 0 {
        bytes[..full]
            .par_chunks_mut(group_bytes)
            .for_each_init(Vec::new, |raw, group| {
                raw.clear();
                raw.extend_from_slice(group);
                layout.pack(cols, raw, GROUP_ROWS, group);
            });
    }
    Ok(true)
}

/// A packed matrix, borrowed: what [`pack_in_place`] made of a row-major matrix.
#[derive(Debug, Clone, Copy)]
pub struct Packed<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: &'a [u8],
}

impl<'a> Packed<'a> {
    /// The packed matrix in `bytes`. Its kernels need the CPU features [`supports`] names
    /// (checked here against the best level this CPU has).
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &'a [u8],
    ) -> Result<Packed<'a>, FormatError> {
        layout::check(ty, bytes.len(), rows, cols)?;
        if !supports(ty, Isa::best()) {
            return Err(FormatError::Unsupported {
                ty,
                what: "no packed kernels on this CPU",
            });
        }
        Ok(Packed {
            ty,
            rows,
            cols,
            bytes,
        })
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

    /// The packed bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Row `r`'s bytes in the GGUF layout, into `out` (one row's bytes long).
    pub fn row(&self, r: usize, out: &mut [u8]) {
        let rb = layout::row_bytes(self.ty, self.cols);
        let g = r / GROUP_ROWS;
        if g < self.groups() {
            let mut rows = vec![0u8; self.group_bytes()];
            let layout = packed_format(self.ty).layout;
            layout.unpack(self.cols, self.group(g), GROUP_ROWS, &mut rows);
            let at = (r % GROUP_ROWS) * rb;
            out.copy_from_slice(&rows[at..at + rb]);
        } else {
            out.copy_from_slice(&self.bytes[r * rb..(r + 1) * rb]);
        }
    }

    /// The matrix in the GGUF layout it was packed from.
    pub fn unpack(&self) -> Vec<u8> {
        let mut out = self.bytes.to_vec();
        let full = self.groups() * self.group_bytes();
        let layout = packed_format(self.ty).layout;
        for (g, dst) in out[..full].chunks_mut(self.group_bytes()).enumerate() {
            layout.unpack(self.cols, self.group(g), GROUP_ROWS, dst);
        }
        out
    }

    fn group_bytes(&self) -> usize {
        layout::group_bytes(self.ty, self.cols)
    }

    /// Whole groups (the rows past them are row-major).
    fn groups(&self) -> usize {
        self.rows / GROUP_ROWS
    }

    fn group(&self, g: usize) -> &'a [u8] {
        let gb = self.group_bytes();
        &self.bytes[g * gb..(g + 1) * gb]
    }

    /// The row-major tail rows' bytes.
    fn tail(&self) -> &'a [u8] {
        &self.bytes[self.groups() * self.group_bytes()..]
    }
}

/// A packed copy of a matrix in its own 64-byte aligned memory.
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    len: usize,
    lines: Vec<Line>,
}

impl PackedMatrix {
    /// Packs a copy of `w` (`rows`×`cols` of `ty`, row-major, any alignment) if `ty` has
    /// packed kernels at `isa`; `Ok(None)` if it has not.
    pub fn new(
        isa: Isa,
        ty: GgmlType,
        w: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Option<PackedMatrix>, FormatError> {
        layout::check(ty, w.len(), rows, cols)?;
        if !supports(ty, isa) {
            return Ok(None);
        }
        let mut m = PackedMatrix {
            ty,
            rows,
            cols,
            len: w.len(),
            lines: vec![Line([0; 64]); w.len().div_ceil(64)],
        };
        let bytes = &mut lines_bytes_mut(&mut m.lines)[..w.len()];
        bytes.copy_from_slice(w);
        pack_in_place(isa, ty, bytes, rows, cols)?;
        Ok(Some(m))
    }

    pub fn view(&self) -> Packed<'_> {
        Packed {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            bytes: &lines_bytes(&self.lines)[..self.len],
        }
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
pub fn matvec_packed(m: &Packed, acts: &QuantizedActs, y: &mut [f32]) -> Result<(), FormatError> {
    check(m, acts, 1, y)?;
    run(m, acts, y);
    Ok(())
}

/// Y = X·Wᵀ for `acts.n()` tokens (y is n×rows, row-major), x already quantized.
pub fn matmul_packed(m: &Packed, acts: &QuantizedActs, y: &mut [f32]) -> Result<(), FormatError> {
    check(m, acts, acts.n(), y)?;
    run(m, acts, y);
    Ok(())
}

fn check(m: &Packed, acts: &QuantizedActs, n: usize, y: &[f32]) -> Result<(), FormatError> {
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

/// The size from which one thread reads a one-token matrix with its format's stream kernel,
/// where it has one (`PackedFormat::stream`: Q4_0). Decode, three alternations: the
/// Qwen3-30B-A3B-shaped Q4_0 file at one thread +20% (experts of 0.86 MB), the
/// Llama-3-8B-shaped +6%; SmolLM2's matrices of 0.2–0.5 MB and two threads lost with it
/// (docs/cpu-kernels.md).
const STREAM_MIN_BYTES: usize = 768 << 10;

/// Runs every group over every token, groups split into parallel tasks; the row-major tail
/// rows go to the row kernel, in the last task.
fn run(m: &Packed, acts: &QuantizedActs, y: &mut [f32]) {
    let n = acts.n();
    if n == 0 || m.rows == 0 {
        return;
    }
    let f = packed_format(m.ty);
    let tokens = Tokens::new(f.layout, acts);
    let cells = Cells(y.as_mut_ptr());
    let rows = m.rows;
    let groups = m.groups();
    let tail_rows = rows - groups * GROUP_ROWS;
    let dot = registry::format(m.ty)
        .kernel(isa::active())
        .expect("a packed format is a weight format");
    let tail = || {
        let rb = layout::row_bytes(m.ty, m.cols);
        for (i, w) in m.tail().chunks_exact(rb).enumerate() {
            let r = groups * GROUP_ROWS + i;
            for (t, a) in tokens.rows.iter().enumerate() {
                // SAFETY: t < n and r < rows: inside y; only this task writes the tail rows.
                unsafe { *cells.at(t * rows + r) = dot(w, a) };
            }
        }
    };
    // Each group's kernel called straight from here: through a helper per tile, Q4_K's
    // sparse-prefetching kernel read ~8 points of the bandwidth less (one thread,
    // interleaved passes; why, unknown).
    let one_thread = rayon::current_num_threads() == 1;
    let one_token = match f.stream {
        Some(stream) if n == 1 && one_thread && m.bytes.len() >= STREAM_MIN_BYTES => stream,
        _ => f.group[0],
    };
    let task = |range: std::ops::Range<usize>| {
        let mut out = [[0f32; GROUP_ROWS]; TILE_TOKENS];
        for g in range {
            if g == groups {
                tail();
                continue;
            }
            let w = m.group(g);
            let r0 = g * GROUP_ROWS;
            let mut t0 = 0;
            while t0 < n {
                let nt = tile_tokens(n - t0);
                debug_assert!(t0 + nt <= tokens.rows.len());
                let kernel = if nt == 1 { one_token } else { f.group[nt - 1] };
                // SAFETY: a Packed exists only where `supports` held for the CPU's best
                // level: it has the features its kernels need; the group and tokens were
                // validated by `check`.
                unsafe { kernel(w, m.cols, &tokens, t0, &mut out) };
                for (t, o) in out.iter().enumerate().take(nt) {
                    // SAFETY: t0 + t < n and r0 + 16 <= rows (a whole group), inside y
                    // (n×rows, checked); only this task writes rows r0..r0 + 16.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            o.as_ptr(),
                            cells.at((t0 + t) * rows + r0),
                            GROUP_ROWS,
                        )
                    };
                }
                t0 += nt;
            }
        }
    };
    // Units of work: the groups, then the tail (if any) as one more.
    let units = groups + usize::from(tail_rows > 0);
    let per_task = groups_per_task(units, m.group_bytes(), n);
    if per_task >= units {
        task(0..units);
    } else {
        (0..units.div_ceil(per_task))
            .into_par_iter()
            .for_each(|c| task(c * per_task..((c + 1) * per_task).min(units)));
    }
}

/// Tokens of the next tile: 8 while there are that many, then the rest (each token's
/// result is the same in every tile size). A tile reads its group's weights once, so a
/// decode step of up to 8 sequences reads them once.
fn tile_tokens(left: usize) -> usize {
    left.min(TILE_TOKENS)
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

/// The packed kernels of `ty`, which has them (callers checked [`supports`]).
fn packed_format(ty: GgmlType) -> &'static PackedFormat {
    registry::format(ty)
        .packed
        .as_ref()
        .expect("a packed matrix's format has packed kernels")
}
