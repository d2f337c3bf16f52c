//! Dot products of one weight row with one row of activations, per weight format and ISA
//! level.
//!
//! Every format has a scalar twin in [`reference`]; fast paths live per ISA in their own
//! modules. [`kernel`] picks, once per matvec/matmul call, the best kernel written for a
//! format at or below the requested level (a format without a dedicated kernel at a level
//! uses the next lower one, see [`kernel_level`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_k;
#[cfg(target_arch = "x86_64")]
pub(crate) mod panel512;
mod portable;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod tile512;

use crate::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use crate::formats::GgmlType;
use crate::isa::Isa;

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
/// panels (`panel512`), faster than its 4-token tile, so it has none.
#[derive(Clone, Copy)]
pub struct Tiles {
    pub four: Option<TileFn<TILE_TOKENS>>,
    pub one: Option<TileFn<1>>,
}

/// The tiles for `ty` at `isa`, where they were written (and measured faster than the row
/// kernel); `None` elsewhere.
pub fn tile_kernel(ty: GgmlType, isa: Isa) -> Option<Tiles> {
    debug_assert!(isa.is_supported());
    #[cfg(target_arch = "x86_64")]
    {
        use GgmlType::*;
        // SAFETY: the tiles need AVX-512 F/BW (F16) or VNNI (Q4_0), which `isa` being
        // supported guarantees.
        match (ty, isa) {
            (F16, Isa::Avx512 | Isa::Vnni) => {
                return Some(Tiles {
                    four: Some(|w, rb, a, out| unsafe { tile512::f16(w, rb, a, out) }),
                    one: None,
                })
            }
            (Q4_0, Isa::Vnni) => {
                return Some(Tiles {
                    four: None,
                    one: Some(|w, rb, a, out| unsafe { tile512::q4_0(w, rb, a, out) }),
                })
            }
            _ => {}
        }
    }
    let _ = (ty, isa);
    None
}

/// The kernel for weight format `ty` at ISA level `isa` (or the best lower level that has
/// one); `None` for activation-only formats. `isa` must be supported by the CPU: the fast
/// kernels contain instructions of that level.
pub fn kernel(ty: GgmlType, isa: Isa) -> Option<DotFn> {
    debug_assert!(isa.is_supported());
    let level = kernel_level(ty, isa)?;
    Some(match level {
        Isa::Reference => reference_kernel(ty)?,
        Isa::Portable => portable::kernel(ty)?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel(ty).or_else(|| avx2_k::kernel(ty))?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Vnni => {
            avx512::kernel(ty, level).or_else(|| avx512_k::kernel(ty, level))?
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => return None,
    })
}

/// The ISA level whose kernel serves `ty` when `isa` is asked for: `isa` itself if a kernel
/// was written for it, else the next lower level that has one.
pub fn kernel_level(ty: GgmlType, isa: Isa) -> Option<Isa> {
    if !ty.is_weight() {
        return None;
    }
    Isa::ALL
        .into_iter()
        .rev()
        .filter(|&l| l <= isa)
        .find(|&l| has_kernel(ty, l))
}

fn has_kernel(ty: GgmlType, level: Isa) -> bool {
    match level {
        Isa::Reference => reference_kernel(ty).is_some(),
        Isa::Portable => portable::kernel(ty).is_some(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel(ty).is_some() || avx2_k::kernel(ty).is_some(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Vnni => {
            avx512::kernel(ty, level).is_some() || avx512_k::kernel(ty, level).is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    }
}

fn reference_kernel(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => reference::f32,
        F16 => reference::f16,
        BF16 => reference::bf16,
        Q4_0 => reference::q4_0,
        Q4_1 => reference::q4_1,
        Q5_0 => reference::q5_0,
        Q5_1 => reference::q5_1,
        Q8_0 => reference::q8_0,
        Q2_K => reference::q2_k,
        Q3_K => reference::q3_k,
        Q4_K => reference::q4_k,
        Q5_K => reference::q5_k,
        Q6_K => reference::q6_k,
        Q8_1 | Q8_K => return None,
    })
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
