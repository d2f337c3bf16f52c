//! The packed group layout of Q5_K, and its per-token integer sums.
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

use super::kquant::{gather, scatter, MAX_BLOCK};
use super::GROUP_ROWS;
use crate::dot::ActRow;
use crate::formats::blocks::QK_K;
use crate::formats::GgmlType;

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

/// The fields of a GGUF block: (offset in the block, bytes, offset in the chunk). Each
/// field's 16 copies take `GROUP_ROWS` × bytes at its chunk offset, in block order.
const FIELDS: [(usize, usize, usize); 5] = [
    (0, 2, D),
    (2, 2, DMIN),
    (4, 12, SCALES),
    (16, 32, QH),
    (48, 128, QS),
];

/// Packs `n` ≤ 16 rows of Q5_K (`src`, row-major, `cols` columns) into the group `out`
/// (lanes past `n` are left as they are), a super-block at a time as `kquant` does.
pub(super) fn pack_group(cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
    let nb = cols / QK_K;
    let rows: Vec<&[u8]> = src[..n * nb * BLOCK].chunks_exact(nb * BLOCK).collect();
    let mut stage = [[0u8; MAX_BLOCK]; GROUP_ROWS];
    for b in 0..nb {
        for (st, row) in stage.iter_mut().zip(&rows) {
            st[..BLOCK].copy_from_slice(&row[b * BLOCK..(b + 1) * BLOCK]);
        }
        for (at, len, to) in FIELDS {
            let dst = &mut out[b * CHUNK + to..][..GROUP_ROWS * len];
            match len {
                2 => scatter::<2>(at, &stage[..n], dst),
                _ => scatter::<4>(at, &stage[..n], dst),
            }
        }
    }
}

/// The inverse of [`pack_group`]: the group's first `n` rows into `dst` (row-major).
pub(super) fn unpack_group(cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    let nb = cols / QK_K;
    let mut stage = [[0u8; MAX_BLOCK]; GROUP_ROWS];
    for b in 0..nb {
        for (at, len, from) in FIELDS {
            let from = &src[b * CHUNK + from..][..GROUP_ROWS * len];
            match len {
                2 => gather::<2>(at, from, &mut stage[..n]),
                _ => gather::<4>(at, from, &mut stage[..n]),
            }
        }
        let rows = dst[..n * nb * BLOCK].chunks_exact_mut(nb * BLOCK);
        for (row, st) in rows.zip(&stage) {
            row[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(&st[..BLOCK]);
        }
    }
}

/// Q5_K's per-(token, super-block) sums: its mins and their activation sums are Q4_K's,
/// so the same i16 pairs (`kquant::token_bias`). `None` for the other formats.
pub(super) fn token_bias(ty: GgmlType, rows: &[ActRow]) -> Option<Vec<i32>> {
    match ty {
        GgmlType::Q5_K => super::kquant::token_bias(GgmlType::Q4_K, rows),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes (xorshift), reproducible.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 32) as u8
            })
            .collect()
    }

    /// Where byte `i` of a row's super-block goes in its chunk, for row `r`: the layout by
    /// the module docs' words, field by field (not through `FIELDS`).
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
                pack_group(nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                unpack_group(nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }
}
