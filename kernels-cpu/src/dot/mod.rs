//! Dot products of one weight row with one row of activations, per weight format and ISA
//! level: the vocabulary every row kernel shares ([`ActRow`], [`DotFn`], the tile types).
//!
//! Every format has a scalar twin in [`reference`]; fast paths live per ISA in their own
//! modules, each kernel named by what it multiplies, the same name in every file
//! (`q4_k_q8_k` in `reference`, `portable`, `avx2`, `avx512::{bw, vnni}`). Which kernel
//! runs where is chosen in one place, the format's row in [`crate::registry`].

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod panel512;
pub(crate) mod portable;
pub mod reference;
#[cfg(target_arch = "x86_64")]
pub(crate) mod tile512;

use crate::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::formats::GgmlType;

/// One row of activations in every layout a kernel may read (only the fields of the
/// row's activation format are filled; the others are empty).
#[derive(Clone, Copy, Default)]
pub struct ActRow<'a> {
    /// F32 activations (for F32/F16/BF16 weights).
    pub x: &'a [f32],
    /// Q8_0 blocks as the reference quantizer writes them.
    pub q8_0: &'a [BlockQ8_0],
    /// Q8_1 blocks as the reference quantizer writes them.
    pub q8_1: &'a [BlockQ8_1],
    /// Q8_K blocks (their quants are contiguous already).
    pub q8_k: &'a [BlockQ8K],
    /// Q8_0/Q8_1: all quants of the row, contiguous, for wide loads across blocks.
    pub qs: &'a [i8],
    /// Q8_0/Q8_1: the same quants, each whole group of four blocks interleaved by halves
    /// (`act::QuantizedActs::qs4`), for the AVX-512 nibble kernels.
    pub qs4: &'a [i8],
    /// Q8_0/Q8_1: each block's d as f32.
    pub d: &'a [f32],
    /// Q8_0: d·Σq per block (in f32); Q8_1: the block's `s`. A weight's offset or min
    /// enters the dot as a multiple of this.
    pub dsum: &'a [f32],
}

/// A row dot product: `w` is the raw bytes of one weight row (whole blocks, any
/// alignment), `a` has at least as many elements. Kernels check both and panic on
/// violation: callers validate shapes first, so a panic here is a bug, not bad input.
pub type DotFn = fn(w: &[u8], a: &ActRow) -> f32;

/// Weight rows of a matmul tile.
pub const TILE_ROWS: usize = 4;
/// Tokens of a matmul tile.
pub const TILE_TOKENS: usize = 4;

/// A tile: `out[r][t]` = row r · token t for [`TILE_ROWS`] consecutive weight rows of
/// `row_bytes` each at the start of `w`, and `NT` activation rows. Same contract as
/// [`DotFn`] per (row, token).
pub type TileFn<const NT: usize> =
    fn(w: &[u8], row_bytes: usize, a: &[ActRow; NT], out: &mut [[f32; NT]; TILE_ROWS]);

/// A format's tiles: 4 tokens (prefill) and 1 token (decode), where each beats what would
/// run otherwise. A (row, token) result is bit-identical in both (and whatever the tile's
/// other rows and tokens are), but differs in rounding from the row kernel's [`DotFn`].
///
/// The 1-token tile reads 4 rows side by side. Measured in decode (SmolLM2, 1 thread):
/// faster for Q4_0 (4 rows are 1.3 KB, ~20 cache lines: still a near-sequential stream)
/// and 17% slower for Q8_0 and F16 (2.4 and 4.6 KB), whose interleaved row streams the
/// hardware prefetcher follows less well than one sequential row (with software prefetch
/// too, Q8_0's stayed ~8% slower); those keep the row kernel. Q4_0 prefill at VNNI runs on
/// panels (`panel512`), faster than its 4-token tile, so it has none. The registry row of
/// a format names its tiles and the level they need.
#[derive(Clone, Copy)]
pub struct Tiles {
    pub four: Option<TileFn<TILE_TOKENS>>,
    pub one: Option<TileFn<1>>,
}

/// Blocks in a weight row of `ty`, checking that the activations cover them (see
/// [`DotFn`]: a violation is a caller bug).
#[inline]
pub(crate) fn row_blocks(ty: GgmlType, w: &[u8], a: &ActRow) -> usize {
    let nb = w.len() / ty.type_size();
    assert_eq!(
        nb * ty.type_size(),
        w.len(),
        "{ty}: row is not whole blocks"
    );
    let n = nb * ty.block_size();
    let have = match ty.vec_dot_type() {
        GgmlType::F32 => a.x.len(),
        GgmlType::Q8_0 => (a.qs.len())
            .min(a.qs4.len())
            .min(a.q8_0.len() * 32)
            .min(a.d.len() * 32)
            .min(a.dsum.len() * 32),
        GgmlType::Q8_1 => (a.qs.len())
            .min(a.qs4.len())
            .min(a.q8_1.len() * 32)
            .min(a.d.len() * 32)
            .min(a.dsum.len() * 32),
        _ => a.q8_k.len() * 256,
    };
    assert!(have >= n, "{ty}: {n} weights but only {have} activations");
    nb
}
