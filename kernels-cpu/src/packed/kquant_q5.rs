//! The packed group layout of Q5_K (packed by `kquant::pack_group`).
//!
//! As for Q4_K (`kquant`), a group holds one chunk of whole 64-byte registers per
//! super-block b (256 columns) of its 16 rows, 2816 bytes = 16 × 176; in it, each field of
//! the GGUF block with its bytes 4j..4j + 4 of row r in lane r of register j, or (an f16)
//! row r's at bytes 2r..2r + 2:
//! - at 0 the 16 d's, at 32 the 16 dmin's;
//! - at 64 the 12 scale bytes, 3 registers (Q4_K's 6-bit scale/min packing);
//! - at 256 `qh`, 8 registers: byte m of register k, lane r, is row r's `qh[4k + m]`, whose
//!   bit j is the fifth bit of element 32j + 4k + m;
//! - at 768 `qs`, 32 registers: register 8i + k holds elements 4k..4k + 4 of sub-block 2i in
//!   the low nibbles, of 2i + 1 in the high ones, so that its byte m lines up with byte m
//!   of `qh` register k (bits 2i and 2i + 1 are its elements' fifth bits).
//!
//! Packing is a permutation of the group's bytes, as for the other K-quants.

use super::kquant::{Field, KLayout, Place, MAX_BLOCK};
use super::GROUP_ROWS;

/// Bytes of a Q5_K block (one row's super-block).
const BLOCK: usize = 176;
// The staging rows of `kquant` hold a block.
const _: () = assert!(BLOCK <= MAX_BLOCK);
/// Bytes of a super-block chunk (16 rows).
pub(super) const CHUNK: usize = GROUP_ROWS * BLOCK;

/// Chunk offsets: d's, dmin's, scales, fifth bits, nibbles.
pub(super) const D: usize = 0;
pub(super) const DMIN: usize = 32;
pub(super) const SCALES: usize = 64;
pub(super) const QH: usize = 256;
pub(super) const QS: usize = 768;

/// The fields of a GGUF block, each at its chunk offset.
pub(super) const Q5_K: KLayout = KLayout {
    block: BLOCK,
    chunk: CHUNK,
    fields: &[
        Field {
            src: 0,
            len: 2,
            at: Place::Chunk(D),
        },
        Field {
            src: 2,
            len: 2,
            at: Place::Chunk(DMIN),
        },
        Field {
            src: 4,
            len: 12,
            at: Place::Chunk(SCALES),
        },
        Field {
            src: 16,
            len: 32,
            at: Place::Chunk(QH),
        },
        Field {
            src: 48,
            len: 128,
            at: Place::Chunk(QS),
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::super::kquant::{pack_group, unpack_group};
    use super::super::test_bytes as bytes;
    use super::*;
    use crate::formats::blocks::QK_K;
    use crate::formats::GgmlType;

    /// Where byte `i` of a row's super-block goes in its chunk, for row `r`: the layout by
    /// the module docs' words, field by field (not through `Q5_K`).
    fn place(i: usize, r: usize) -> usize {
        match i {
            0..2 => 2 * r + i,
            2..4 => 32 + 2 * r + (i - 2),
            4..16 => 64 + ((i - 4) / 4) * 64 + 4 * r + (i - 4) % 4,
            16..48 => 256 + ((i - 16) / 4) * 64 + 4 * r + (i - 16) % 4,
            _ => 768 + ((i - 48) / 4) * 64 + 4 * r + (i - 48) % 4,
        }
    }

    #[test]
    fn packing_follows_the_layout_and_is_a_permutation() {
        assert_eq!(BLOCK, GgmlType::Q5_K.type_size());
        // The places tile a chunk exactly.
        let mut hits = vec![0u8; CHUNK];
        for r in 0..GROUP_ROWS {
            (0..BLOCK).for_each(|i| hits[place(i, r)] += 1);
        }
        assert!(hits.iter().all(|&h| h == 1), "chunk bytes");
        for nb in [1, 2, 3] {
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * nb * BLOCK, (nb * 31 + n) as u64);
                let mut want = vec![0u8; GROUP_ROWS * nb * BLOCK];
                for r in 0..n {
                    for b in 0..nb {
                        for i in 0..BLOCK {
                            want[b * CHUNK + place(i, r)] = src[(r * nb + b) * BLOCK + i];
                        }
                    }
                }
                let mut got = vec![0u8; want.len()];
                pack_group(GgmlType::Q5_K, nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                unpack_group(GgmlType::Q5_K, nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }
}
