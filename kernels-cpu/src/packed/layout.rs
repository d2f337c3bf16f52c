//! The packed group layout (module docs of `packed`): packing, unpacking, and the
//! per-call activation data the kernels read.

use super::GROUP_ROWS;
use crate::act::QuantizedActs;
use crate::dot::ActRow;
use crate::formats::{FormatError, GgmlType};

/// How a legacy block is split into the packed group's regions.
struct Legacy {
    /// Bytes before the quants in a GGUF block: d (and Q4_1's m), f16 each.
    head: usize,
    /// Quant bytes of a block (one row): 32 (Q8_0) or 16 (nibbles).
    quants: usize,
    /// XORed into every quant byte: Q8_0 stores q + 128 (unsigned for `vpdpbusd`).
    flip: u8,
    /// Q4_1: a min per block.
    mins: bool,
}

fn legacy(ty: GgmlType) -> Option<Legacy> {
    let (head, quants, flip, mins) = match ty {
        GgmlType::Q8_0 => (2, 32, 0x80, false),
        GgmlType::Q4_0 => (2, 16, 0, false),
        GgmlType::Q4_1 => (4, 16, 0, true),
        _ => return None,
    };
    Some(Legacy {
        head,
        quants,
        flip,
        mins,
    })
}

/// Bytes of one row of `cols` elements in the GGUF layout.
pub(super) fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    cols / ty.block_size() * ty.type_size()
}

/// Validates the shape of a row-major `rows`×`cols` matrix of `len` bytes; its size.
pub(super) fn check(
    ty: GgmlType,
    len: usize,
    rows: usize,
    cols: usize,
) -> Result<usize, FormatError> {
    if !cols.is_multiple_of(ty.block_size()) {
        return Err(FormatError::NotWholeBlocks {
            ty,
            n: cols,
            block: ty.block_size(),
        });
    }
    let n = rows.checked_mul(cols).ok_or(FormatError::Unsupported {
        ty,
        what: "rows·cols overflows",
    })?;
    let expected = rows * row_bytes(ty, cols);
    if len != expected {
        return Err(FormatError::ByteLength {
            ty,
            n,
            expected,
            got: len,
        });
    }
    Ok(expected)
}

/// Bytes of one packed group: exactly those of its 16 rows in the GGUF layout (so a
/// matrix packs in place, group by group).
pub(super) fn group_bytes(ty: GgmlType, cols: usize) -> usize {
    GROUP_ROWS * row_bytes(ty, cols)
}

/// Offset of the scales (then the mins) in a legacy group of `nb` blocks.
pub(super) fn scales_at(quants: usize, nb: usize) -> usize {
    nb * GROUP_ROWS * quants
}

/// Packs `n` ≤ 16 rows (`src`, row-major) into the zeroed group `out`.
pub(super) fn pack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
    let rb = row_bytes(ty, cols);
    match legacy(ty) {
        Some(l) => {
            let nb = cols / 32;
            let bb = ty.type_size();
            let scales = scales_at(l.quants, nb);
            let mins = scales + nb * GROUP_ROWS * 2;
            for r in 0..n {
                for b in 0..nb {
                    let blk = &src[r * rb + b * bb..r * rb + (b + 1) * bb];
                    let q = &blk[l.head..];
                    for (j, word) in q.chunks_exact(4).enumerate() {
                        let at = (b * l.quants / 4 + j) * 64 + r * 4;
                        for (o, &v) in out[at..at + 4].iter_mut().zip(word) {
                            *o = v ^ l.flip;
                        }
                    }
                    let s = scales + (b * GROUP_ROWS + r) * 2;
                    out[s..s + 2].copy_from_slice(&blk[..2]);
                    if l.mins {
                        let m = mins + (b * GROUP_ROWS + r) * 2;
                        out[m..m + 2].copy_from_slice(&blk[2..4]);
                    }
                }
            }
        }
        None => {
            for r in 0..n {
                for k in 0..cols {
                    let at = (k * GROUP_ROWS + r) * 2;
                    out[at..at + 2].copy_from_slice(&src[r * rb + 2 * k..r * rb + 2 * k + 2]);
                }
            }
        }
    }
}

/// The inverse of [`pack_group`]: the group's first `n` rows into `dst` (row-major).
pub(super) fn unpack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    let rb = row_bytes(ty, cols);
    match legacy(ty) {
        Some(l) => {
            let nb = cols / 32;
            let bb = ty.type_size();
            let scales = scales_at(l.quants, nb);
            let mins = scales + nb * GROUP_ROWS * 2;
            for r in 0..n {
                for b in 0..nb {
                    let blk = &mut dst[r * rb + b * bb..r * rb + (b + 1) * bb];
                    let s = scales + (b * GROUP_ROWS + r) * 2;
                    blk[..2].copy_from_slice(&src[s..s + 2]);
                    if l.mins {
                        let m = mins + (b * GROUP_ROWS + r) * 2;
                        blk[2..4].copy_from_slice(&src[m..m + 2]);
                    }
                    for (j, word) in blk[l.head..].chunks_exact_mut(4).enumerate() {
                        let at = (b * l.quants / 4 + j) * 64 + r * 4;
                        for (o, &v) in word.iter_mut().zip(&src[at..at + 4]) {
                            *o = v ^ l.flip;
                        }
                    }
                }
            }
        }
        None => {
            for r in 0..n {
                for k in 0..cols {
                    let at = (k * GROUP_ROWS + r) * 2;
                    dst[r * rb + 2 * k..r * rb + 2 * k + 2].copy_from_slice(&src[at..at + 2]);
                }
            }
        }
    }
}

/// The activations of one call as the packed kernels read them.
pub(super) struct Tokens<'a> {
    pub(super) rows: Vec<ActRow<'a>>,
    /// Q8_0, Q4_0 weights: −o·Σq of each (token, block) (o the offset the stored quants
    /// carry: 128, 8), the start of the block's integer dot, which makes it exact.
    pub(super) bias: Vec<i32>,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(ty: GgmlType, acts: &'a QuantizedActs) -> Tokens<'a> {
        let rows: Vec<ActRow> = (0..acts.n()).map(|t| acts.row(t)).collect();
        let nb = acts.cols() / 32;
        let offset = match ty {
            GgmlType::Q8_0 => 128,
            GgmlType::Q4_0 => 8,
            _ => 0,
        };
        let bias = if offset == 0 {
            Vec::new()
        } else {
            rows.iter()
                .flat_map(|a| {
                    a.qs[..nb * 32]
                        .chunks_exact(32)
                        .map(|b| -offset * b.iter().map(|&q| q as i32).sum::<i32>())
                })
                .collect()
        };
        Tokens { rows, bias }
    }
}
