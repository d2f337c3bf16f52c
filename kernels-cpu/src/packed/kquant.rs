//! The packed group layout of the K-quants Q4_K and Q6_K, and the per-token integer sums
//! their kernels (`kquant512`) start from.
//!
//! A group holds, for each super-block b (256 columns) of its 16 rows, one chunk of whole
//! 64-byte registers; within a chunk, a field of the GGUF block (its bytes 4j..4j + 4 of
//! row r in lane r of register j) or an f16 (row r's at bytes 2r..2r + 2, 16 rows in 32
//! bytes), in the order the kernel reads them:
//! - Q4_K (2304 bytes = 16 × 144): the 16 d's, the 16 dmin's, the 12 scale bytes as 3
//!   registers, the 128 `qs` bytes as 32 registers (register 8i + k: elements 4k..4k + 4
//!   of sub-block 2i in the low nibbles, of 2i + 1 in the high ones).
//! - Q6_K (3328 bytes): the 16 i8 scales as 4 registers, `ql` as 32 registers, `qh` as
//!   16; the d's (32 bytes a super-block) follow all the chunks, at the group's end, so
//!   that every chunk stays whole registers (16 × 210 = 3360 is not).
//!
//! So a group takes exactly its rows' GGUF bytes, and every byte has one place: packing is
//! a permutation of the group's bytes.

use super::GROUP_ROWS;
use crate::dot::ActRow;
use crate::formats::blocks::QK_K;
use crate::formats::GgmlType;

/// Bytes of a Q4_K super-block chunk (16 rows).
pub(super) const Q4_K_CHUNK: usize = GROUP_ROWS * 144;
/// Bytes of a Q6_K super-block chunk (16 rows, without the d's).
pub(super) const Q6_K_CHUNK: usize = GROUP_ROWS * 208;

/// Q4_K chunk offsets: d's, dmin's, scales, quants.
pub(super) const Q4_K_D: usize = 0;
pub(super) const Q4_K_DMIN: usize = 32;
pub(super) const Q4_K_SCALES: usize = 64;
pub(super) const Q4_K_QS: usize = 256;
/// Q6_K chunk offsets: scales, ql, qh.
pub(super) const Q6_K_SCALES: usize = 0;
pub(super) const Q6_K_QL: usize = 256;
pub(super) const Q6_K_QH: usize = 2304;

/// Where a field of a GGUF block lives in the packed group.
#[derive(Clone, Copy)]
enum Place {
    /// At this offset in the super-block's chunk.
    Chunk(usize),
    /// After all chunks, one 16-row slot per super-block.
    Tail,
}

/// One field of a GGUF block: `len` bytes at `src`; f16 fields (`len` 2) are 2 bytes a
/// lane, the others 4.
#[derive(Clone, Copy)]
struct Field {
    src: usize,
    len: usize,
    at: Place,
}

struct KLayout {
    /// GGUF block bytes.
    block: usize,
    /// Bytes of a super-block chunk (16 rows' fields placed `Chunk`).
    chunk: usize,
    fields: &'static [Field],
}

const Q4_K: KLayout = KLayout {
    block: 144,
    chunk: Q4_K_CHUNK,
    fields: &[
        Field {
            src: 0,
            len: 2,
            at: Place::Chunk(Q4_K_D),
        },
        Field {
            src: 2,
            len: 2,
            at: Place::Chunk(Q4_K_DMIN),
        },
        Field {
            src: 4,
            len: 12,
            at: Place::Chunk(Q4_K_SCALES),
        },
        Field {
            src: 16,
            len: 128,
            at: Place::Chunk(Q4_K_QS),
        },
    ],
};

const Q6_K: KLayout = KLayout {
    block: 210,
    chunk: Q6_K_CHUNK,
    fields: &[
        Field {
            src: 0,
            len: 128,
            at: Place::Chunk(Q6_K_QL),
        },
        Field {
            src: 128,
            len: 64,
            at: Place::Chunk(Q6_K_QH),
        },
        Field {
            src: 192,
            len: 16,
            at: Place::Chunk(Q6_K_SCALES),
        },
        Field {
            src: 208,
            len: 2,
            at: Place::Tail,
        },
    ],
};

fn layout(ty: GgmlType) -> Option<&'static KLayout> {
    match ty {
        GgmlType::Q4_K => Some(&Q4_K),
        GgmlType::Q6_K => Some(&Q6_K),
        _ => None,
    }
}

/// Whether `ty` is a K-quant with a packed layout here.
pub(super) fn is_kquant(ty: GgmlType) -> bool {
    layout(ty).is_some()
}

/// Calls `f(row_offset, group_offset, width)` for every lane unit (`width` bytes) of the
/// first `n` rows of a group of `nb` super-blocks: where each piece of the row-major rows
/// goes in the packed group.
fn for_each_unit(l: &KLayout, nb: usize, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    let row_bytes = nb * l.block;
    // Rows innermost: the group is written (or read) in order, each row sequentially.
    for b in 0..nb {
        for field in l.fields {
            let width = field.len.min(4);
            let base = match field.at {
                Place::Chunk(at) => b * l.chunk + at,
                Place::Tail => nb * l.chunk + b * GROUP_ROWS * field.len,
            };
            for u in 0..field.len / width {
                for r in 0..n {
                    let src = r * row_bytes + b * l.block + field.src + u * width;
                    let dst = base + u * GROUP_ROWS * width + r * width;
                    f(src, dst, width);
                }
            }
        }
    }
}

/// Packs `n` ≤ 16 rows of `ty` (`src`, row-major, `cols` columns) into the group `out`.
/// `ty` must be a K-quant [`is_kquant`] accepts.
pub(super) fn pack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
    let l = layout(ty).expect("pack_group is called for packed K-quants only");
    for_each_unit(l, cols / QK_K, n, |s, d, w| {
        out[d..d + w].copy_from_slice(&src[s..s + w])
    });
}

/// The inverse of [`pack_group`]: the group's first `n` rows into `dst` (row-major).
pub(super) fn unpack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    let l = layout(ty).expect("unpack_group is called for packed K-quants only");
    for_each_unit(l, cols / QK_K, n, |s, d, w| {
        dst[s..s + w].copy_from_slice(&src[d..d + w])
    });
}

/// The integer sums each (token, super-block) of the call starts from, for K-quant
/// weights (`None` for the other formats):
/// - Q4_K, 4 a super-block: the mins' activation sums as i16 pairs for `vpdpwssd`, p_j =
///   bsum_2j + bsum_2j+1 (the 32 activations of sub-block j; |p_j| ≤ 32·128, an i16):
///   (p0, p2), (p1, p3), (p4, p6), (p5, p7), the first of each pair in the low half.
/// - Q6_K, 16 a super-block: −32·bsum_j, the start of sub-block j's integer dot, which
///   makes Σ (q − 32)·a exact from the unsigned quants q.
pub(super) fn token_bias(ty: GgmlType, rows: &[ActRow]) -> Option<Vec<i32>> {
    let blocks = rows.iter().flat_map(|a| a.q8_k);
    match ty {
        GgmlType::Q4_K => Some(
            blocks
                .flat_map(|y| {
                    let p = |j: usize| y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32;
                    let pair = |a: i32, b: i32| (a as u16 as u32 | (b as u16 as u32) << 16) as i32;
                    [
                        pair(p(0), p(2)),
                        pair(p(1), p(3)),
                        pair(p(4), p(6)),
                        pair(p(5), p(7)),
                    ]
                })
                .collect(),
        ),
        GgmlType::Q6_K => Some(
            blocks
                .flat_map(|y| y.bsums.map(|s| -32 * i32::from(s)))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of a group is written once: the fields tile the group exactly.
    #[test]
    fn fields_tile_the_group() {
        for (ty, l) in [(GgmlType::Q4_K, &Q4_K), (GgmlType::Q6_K, &Q6_K)] {
            assert_eq!(l.block, ty.type_size());
            for nb in [1, 2, 3] {
                let mut hits = vec![0u8; GROUP_ROWS * nb * l.block];
                let mut read = vec![0u8; hits.len()];
                for_each_unit(l, nb, GROUP_ROWS, |s, d, w| {
                    hits[d..d + w].iter_mut().for_each(|h| *h += 1);
                    read[s..s + w].iter_mut().for_each(|h| *h += 1);
                });
                assert!(hits.iter().all(|&h| h == 1), "{ty} nb {nb}: group bytes");
                assert!(read.iter().all(|&h| h == 1), "{ty} nb {nb}: row bytes");
            }
        }
    }
}
