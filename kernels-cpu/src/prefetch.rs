//! Software prefetch of a weight stream, for every x86 kernel (row, tile and packed).
//!
//! A matvec streams its matrix once; the hardware prefetcher alone left decode 25–35%
//! short, and asking ahead closed most of it.

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};

/// How far ahead of its reads a kernel asks for weights (rows and groups are contiguous,
/// so the stream runs on into the next ones). Measured on SmolLM2 decode, 1 thread: 768 B
/// < 1.5 KB < 3 KB ≈ 6 KB ≈ 12 KB (Q4_1 65 → 89 → ~100 tok/s from none to 1.5 to 3 KB;
/// Q8_0, F16 +15%, flat past 3 KB).
pub(crate) const PREFETCH_AHEAD: usize = 3072;

/// Prefetches `bytes` (whole lines; a step's span, at most a few lines) at
/// [`PREFETCH_AHEAD`] past `p`, into L1. A prefetch never faults, so reaching past the
/// matrix is harmless.
#[inline(always)]
pub(crate) fn ahead(p: *const u8, bytes: usize) {
    lines::<_MM_HINT_T0>(p, bytes)
}

/// As [`ahead`], into L2 only (`prefetcht1`). Packed Q2_K, the kernel with the most work
/// per weight byte, decodes faster so: 9.0–9.6 → 10.2–11.4 GB/s from memory with one thread
/// (512 MiB, 6 interleaved runs); the other packed formats measured no clear gain and lost
/// in-cache speed (Q8_0 73 → 62 GB/s), so they ask for L1.
#[inline(always)]
pub(crate) fn ahead_l2(p: *const u8, bytes: usize) {
    lines::<_MM_HINT_T1>(p, bytes)
}

/// The lines of `bytes` at `PREFETCH_AHEAD` past `p`, with hint `HINT`.
#[inline(always)]
fn lines<const HINT: i32>(p: *const u8, bytes: usize) {
    let at = p.wrapping_add(PREFETCH_AHEAD);
    let mut off = 0;
    while off < bytes {
        // SAFETY: prefetching does not access memory architecturally.
        unsafe { _mm_prefetch::<HINT>(at.wrapping_add(off).cast()) };
        off += 64;
    }
}
