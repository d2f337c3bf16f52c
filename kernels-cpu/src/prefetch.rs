//! Software prefetch of a weight stream, for every x86 kernel (row, tile and packed).
//!
//! A matvec streams its matrix once; the hardware prefetcher alone left decode 25–35%
//! short, and asking ahead closed most of it.

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T2};

/// How far ahead of its reads a kernel asks for weights into L2 (rows and groups are
/// contiguous, so the stream runs on into the next ones). Measured on SmolLM2 decode, 1
/// thread, when this was the only prefetch (into L1): 768 B < 1.5 KB < 3 KB ≈ 6 KB ≈ 12 KB
/// (Q4_1 65 → 89 → ~100 tok/s from none to 1.5 to 3 KB; Q8_0, F16 +15%, flat past 3 KB);
/// with the L1 request below, 3 KB stayed best of 2, 3, 4 and 6 KB (`bench kernels`).
pub(crate) const PREFETCH_AHEAD: usize = 3072;

/// [`PREFETCH_AHEAD`] for the packed kernels of the nibble formats (Q4_0, Q4_1, Q5_0,
/// Q5_1; Q4_K and Q6_K, measured with it below, now ask [`sparse`]ly). On this machine as it
/// is now (one core reads 32 GB/s, not the 18-20 of the first measurement) 3 KB left them
/// well short of memory at one thread;
/// `bench kernels`, three alternations of 3, 8 and 12 KB builds, medians at 1/2 threads
/// (GB/s from DRAM, 512 MiB matrices): Q4_0 17.8/28.1 → 20.8/31.9 (8 KB) → 21.0/29.6 (12 KB),
/// Q4_1 19.6/28.9 → 22.4/35.3 → 21.2/31.0, Q4_K 16.6/31.7 → 21.4/32.4 → 21.0/28.7, Q6_K
/// 19.4/28.5 → 22.5/32.9 → 21.0/25.7. Q8_0 (25.1 → 20.4 at one thread) and Q5_K (17.4 →
/// 15.4) were slower further ahead and keep 3 KB. The figures are in docs/cpu-kernels.md.
pub(crate) const PREFETCH_AHEAD_FAR: usize = 8192;

/// How far ahead a kernel asks for the lines it reads soon into L1, from L2 where the
/// [`PREFETCH_AHEAD`] request has put them (or is bringing them).
pub(crate) const PREFETCH_NEAR: usize = 1024;

/// Prefetches `bytes` (whole lines; a step's span, at most a few lines) at
/// [`PREFETCH_AHEAD`] past `p` into L2 and at [`PREFETCH_NEAR`] into L1. A prefetch never
/// faults, so reaching past the matrix is harmless.
///
/// Two distances, not one: with a single L1 prefetch 3 KB ahead, a load–compute loop on
/// this machine (one core reads 18–20 GB/s from huge pages) read 13–17 GB/s depending on
/// the shape of its compute, in ways no count of its instructions explained; an L2 request
/// 3 KB ahead plus an L1 request 1 KB ahead read 18.6–19.4 GB/s for every shape tried
/// (synthetic loops of 1 to 16 dependent or independent integer ops a line).
#[inline(always)]
pub(crate) fn ahead(p: *const u8, bytes: usize) {
    ahead_by::<PREFETCH_AHEAD>(p, bytes)
}

/// [`ahead`] with the L2 request `FAR` bytes ahead.
#[inline(always)]
pub(crate) fn ahead_by<const FAR: usize>(p: *const u8, bytes: usize) {
    lines::<_MM_HINT_T2>(p.wrapping_add(FAR), bytes);
    lines::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_NEAR), bytes);
}

/// How far ahead [`sparse`] asks for weights.
pub(crate) const PREFETCH_SPARSE_AHEAD: usize = 8192;

/// Asks for the lines of `bytes` at `p` into L2, [`PREFETCH_SPARSE_AHEAD`] ahead, one line
/// in four (those on 256-byte boundaries), and nothing into L1: the packed Q4_K and Q6_K
/// kernels, whose weights stream front to back.
///
/// On the AMD EPYC host each software prefetch seems to take a miss buffer the hardware
/// prefetchers would use: a Q4_K-shaped stream asked for a line at a time (into L2 and L1, as
/// [`ahead`], or into L2 alone) read 62–66% of one core's bandwidth, one line in four or
/// eight 87%, none 82% with deeper dips (40 interleaved passes in one process). The sparse
/// requests still bridge the 4 KiB pages the hardware prefetchers stop at, and each matrix's
/// start. `bench kernels`, one thread: Q4_K 68–74% → 84–85%, Q6_K 72% → 79–81%; Llama-3-8B
/// Q4_K_M decode 29.3 → 33.3 tokens/s (docs/cpu-kernels.md). Q8_0 was faster at one thread
/// and slower at two; the nibble formats read their blocks out of order and keep [`ahead`].
#[inline(always)]
pub(crate) fn sparse(p: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        let at = p.wrapping_add(off);
        if at as usize & 0xC0 == 0 {
            // SAFETY: prefetching does not access memory architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T2>(at.wrapping_add(PREFETCH_SPARSE_AHEAD).cast()) };
        }
        off += 64;
    }
}

/// Prefetches the line at `p` into L1: a field a kernel reads further ahead than
/// [`ahead`] reaches (a packed unit's tail, past its chunks).
#[inline(always)]
pub(crate) fn line(p: *const u8) {
    lines::<_MM_HINT_T0>(p, 1)
}

/// Prefetches the lines of `bytes` at `p` into L1 now (a stretch a kernel reads soon, out
/// of the order the hardware prefetcher follows).
#[inline(always)]
pub(crate) fn span(p: *const u8, bytes: usize) {
    lines::<_MM_HINT_T0>(p, bytes)
}

/// The lines of `bytes` at `at`, with hint `HINT`.
#[inline(always)]
fn lines<const HINT: i32>(at: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        // SAFETY: prefetching does not access memory architecturally.
        unsafe { _mm_prefetch::<HINT>(at.wrapping_add(off).cast()) };
        off += 64;
    }
}
