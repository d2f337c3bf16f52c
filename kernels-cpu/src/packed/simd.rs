//! The SIMD helpers every packed kernel uses (AVX-512): loads, broadcasts, the per-token
//! unrolling and the K-quant super-block sum.

use std::arch::x86_64::*;

/// Runs `$body` with `$t` = 0, 1, … NT − 1 (constants), unrolled by hand: LLVM does not
/// unroll a block's 8-token loop (its body is large) and then keeps the 8 accumulators in
/// memory, a load and a store around every token's FMA.
macro_rules! each_token {
    ($nt:expr, $t:ident, $body:block) => {
        each_token!(@ $nt, $t, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $nt:expr, $t:ident, $body:block, $($i:literal)*) => {
        const { assert!($nt <= $crate::packed::layout::TILE_TOKENS) };
        $(if $i < $nt {
            let $t: usize = $i;
            $body
        })*
    };
}

pub(super) use each_token;

/// A block's dot steps (`$step(j)` for j < `$n`) as the tile's tokens take them: decode
/// (`$nt` 1) loads each step's registers at its dot, so the first touch of each line comes
/// with the work on it (Q4_K read 16.9–17.2 GB/s from memory so against 15.8–16.0 with
/// the registers loaded ahead of the dots; the legacy formats the same within noise); a
/// prefill tile loads them once for all its tokens. A macro, so that the closures are the
/// kernel's own (with its target features).
macro_rules! steps {
    ($nt:expr, $n:literal, $step:expr, $zero:expr) => {{
        let step = $step;
        let shared: [_; $n] = if $nt > 1 {
            std::array::from_fn(&step)
        } else {
            [$zero; $n]
        };
        move |j: usize| if $nt > 1 { shared[j] } else { step(j) }
    }};
}
pub(super) use steps;

/// Prefetches the lines of `bytes` at `p`, into L2 3 KB and into L1 1 KB before they are
/// read (`prefetch::ahead`): the groups are contiguous, so near a group's end this fetches
/// the next group's start.
pub(super) use crate::prefetch::ahead as prefetch;

/// [`prefetch`] into L2 8 KB ahead (`prefetch::PREFETCH_AHEAD_FAR`: the nibble formats'
/// packed kernels).
#[inline(always)]
pub(super) fn prefetch_far(p: *const u8, bytes: usize) {
    crate::prefetch::ahead_by::<{ crate::prefetch::PREFETCH_AHEAD_FAR }>(p, bytes)
}

/// One line in four into L2, 8 KB ahead (`prefetch::sparse`: Q4_K's and Q6_K's packed
/// kernels).
pub(super) use crate::prefetch::sparse as prefetch_sparse;

/// The 16 rows' f16 values (scales, mins, d's) at `p`, as f32.
#[inline(always)]
pub(super) unsafe fn halves(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

/// The 64-byte register at `p` (any alignment).
#[inline(always)]
pub(super) unsafe fn load(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p.cast())
}

/// The i32 at `p` (4 activation bytes, or a precomputed sum) in every lane.
#[inline(always)]
pub(super) unsafe fn splat(p: *const u8) -> __m512i {
    _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// One super-block of a K-quant with mins (Q2_K, Q4_K, Q5_K) added to a token's
/// accumulator: acc + isum·(dw·da) − (Σ_j m_j·p_j)·(mw·da), `isum` the super-block's exact
/// scaled integer dot, `mins` the rows' mins as i16 pairs, `p` the token's matching
/// activation-sum pairs (4 bytes a register, the layout's `bias`), `dw`/`mw` the rows' d
/// and dmin in f32, `da` the token's d. Σ m_j·p_j is exact in i32 (each format's bound at
/// its kernel); the float part is the reference's two terms, each added by an FMA.
#[inline(always)]
pub(super) unsafe fn add_super_block<const M: usize>(
    acc: __m512,
    isum: __m512i,
    mins: &[__m512i; M],
    p: *const u8,
    dw: __m512,
    mw: __m512,
    da: f32,
) -> __m512 {
    let da = _mm512_set1_ps(da);
    let mut m = _mm512_setzero_si512();
    for (i, mins) in mins.iter().enumerate() {
        m = _mm512_dpwssd_epi32(m, *mins, splat(p.add(4 * i)));
    }
    let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), acc);
    _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(mw, da), acc)
}
