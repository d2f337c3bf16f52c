//! The packed group layout (module docs of `packed`): packing, unpacking, and the
//! per-call activation data the kernels read.

use super::GROUP_ROWS;
use crate::act::QuantizedActs;
use crate::dot::ActRow;
use crate::formats::{FormatError, GgmlType};

/// How a legacy block is split into the packed group's regions.
struct Legacy {
    /// Bytes before the quants in a GGUF block: d (and Q4_1's/Q5_1's m), f16 each.
    head: usize,
    /// Quant bytes of a block (one row) in the group's quant region: 32 (Q8_0), 16
    /// (nibbles), 20 (Q5: `qh` then the nibbles in the GGUF block; packed as the nibbles'
    /// 4 registers, then `qh` as a fifth, bit-transposed by [`spread_qh`]).
    quants: usize,
    /// XORed into every quant byte: Q8_0 stores q + 128 (unsigned for `vpdpbusd`).
    flip: u8,
    /// Q4_1, Q5_1: a min per block.
    mins: bool,
}

impl Legacy {
    /// Q5_0/Q5_1: a `qh` word before the nibbles.
    fn fifth_bits(&self) -> bool {
        self.quants == 20
    }
}

const fn legacy(ty: GgmlType) -> Option<Legacy> {
    let (head, quants, flip, mins) = match ty {
        GgmlType::Q8_0 => (2, 32, 0x80, false),
        GgmlType::Q4_0 => (2, 16, 0, false),
        GgmlType::Q4_1 => (4, 16, 0, true),
        GgmlType::Q5_0 => (2, 20, 0, false),
        GgmlType::Q5_1 => (4, 20, 0, true),
        _ => return None,
    };
    Some(Legacy {
        head,
        quants,
        flip,
        mins,
    })
}

/// The units a legacy format's packed group is laid out in ([`Units`]): what the kernels
/// walk, from the same table packing follows.
pub(super) const fn legacy_units(ty: GgmlType) -> Units {
    match legacy(ty) {
        Some(l) => Units::new(l.quants, l.mins),
        None => panic!("not a legacy format"),
    }
}

/// A Q5 block's `qh` (bit e: the fifth bit of element e) as the packed kernels read it:
/// bit K of byte i is the fifth bit of element 4K + i, the element that byte i of nibble
/// register K (K < 4: the low nibbles' register K, else the high nibbles' register K − 4)
/// holds; so one shift by 4 − K puts every byte's bit at 0x10.
pub(super) fn spread_qh(qh: u32) -> u32 {
    // Bits 0..4 of a nibble to bits 0, 8, 16, 24.
    const SPREAD: [u32; 16] = {
        let mut t = [0u32; 16];
        let mut n = 0;
        while n < 16 {
            let mut i = 0;
            while i < 4 {
                t[n] |= ((n as u32 >> i) & 1) << (8 * i);
                i += 1;
            }
            n += 1;
        }
        t
    };
    (0..8).fold(0, |t, k| t | SPREAD[(qh >> (4 * k)) as usize & 0xF] << k)
}

/// The inverse of [`spread_qh`].
pub(super) fn gather_qh(t: u32) -> u32 {
    let mut qh = 0;
    for k in 0..8 {
        for i in 0..4 {
            qh |= ((t >> (8 * i + k)) & 1) << (4 * k + i);
        }
    }
    qh
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

/// Where a legacy group's blocks (or a K-quant group's super-blocks, `KLayout::units`)
/// lie: the group is a run of units of [`Units::per`] blocks (the last unit takes what is
/// left), each unit the quant registers of its blocks, block after block, then their heads
/// (the 16 rows' f16 d's, 32 bytes, and with a min the 16 m's after them), block after
/// block. Q8_0, Q4_0 and Q5_0 (32 bytes of heads a block) put two blocks in a unit, the
/// others one, so every full unit is whole 64-byte lines and a group is one stream, read
/// front to back.
///
/// Q4_0 pairs a full unit's blocks A and B in its 8 quant registers instead of putting
/// them one after the other ([`Units::paired`]): byte i of register k, lane r, holds
/// element 4k + i of row r's block A in its low nibble and of block B in its high nibble,
/// so the kernel takes A's quants with one mask and B's in place (as 16·q) with another,
/// where the GGUF nibble order needs a shift for the high nibbles: prefill (8-token tiles)
/// ran 10–20% faster, decode the same. Q4_1 paired measured 5–8% slower in prefill (the
/// pair's registers and its mins do not fit the register file beside 8 tokens'
/// accumulators), so it is not.
#[derive(Clone, Copy)]
pub(super) struct Units {
    /// Blocks a full unit holds: 2 or 1.
    pub(super) per: usize,
    /// Bytes of one block's quant registers (16 rows): 512 (Q8_0), 256 (Q4), 320 (Q5); a
    /// K-quant's chunk.
    pub(super) region: usize,
    /// Bytes of one block's heads (16 rows): 32, or 64 with mins; a K-quant's tail (0 or 32).
    pub(super) heads: usize,
}

impl Units {
    /// The units of `quants` bytes a row-block (32, 16 or 20), `mins` whether a block has a
    /// min besides its d.
    const fn new(quants: usize, mins: bool) -> Units {
        let heads = if mins { 64 } else { 32 };
        Units {
            per: 64 / heads,
            region: GROUP_ROWS * quants,
            heads,
        }
    }

    /// Whether a full unit's two blocks share their quant registers (Q4_0).
    pub(super) const fn paired(self) -> bool {
        self.region == GROUP_ROWS * 16 && self.heads == 32
    }

    /// Where block `b`'s pair registers start, when it shares them with the other block of
    /// a full unit ([`Units::paired`]); `None` for a block that has its own (every block of
    /// an unpaired format, and a paired format's odd last block).
    fn pair_start(self, nb: usize, b: usize) -> Option<usize> {
        (self.paired() && b / 2 * 2 + 1 < nb).then(|| self.bytes(b / 2 * 2))
    }

    /// Bytes of a unit of `k` blocks.
    pub(super) const fn bytes(self, k: usize) -> usize {
        k * (self.region + self.heads)
    }

    /// Offsets of block `b`'s quant registers and heads in a group of `nb` blocks.
    pub(super) fn block(self, nb: usize, b: usize) -> (usize, usize) {
        let (u, i) = (b / self.per, b % self.per);
        let start = self.bytes(u * self.per);
        let k = self.per.min(nb - u * self.per);
        (
            start + i * self.region,
            start + k * self.region + i * self.heads,
        )
    }
}

/// Packs `n` ≤ 16 rows (`src`, row-major) into the group `out` (lanes past `n` are left as
/// they are: zero in a zeroed group).
///
/// Packing runs over every CPU matrix at load (gigabytes for an 8B model), so it moves
/// words, not bytes, and fills the output in order: a block's registers (Q8_0: 512 bytes)
/// or 16 columns (F16: 512 bytes) at a time, each from the 16 rows' next bytes, so every
/// output line is finished while it is in L1 and each row is read sequentially.
pub(super) fn pack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
    if super::kquant::is_kquant(ty) {
        return super::kquant::pack_group(ty, cols, src, n, out);
    }
    let rb = row_bytes(ty, cols);
    let rows = src[..n * rb].chunks_exact(rb.max(1));
    match legacy(ty) {
        Some(l) => pack_legacy(&l, ty.type_size(), cols / 32, rows, out),
        None => pack_halves(cols, rows, out),
    }
}

fn pack_legacy<'a>(
    l: &Legacy,
    block_bytes: usize,
    nb: usize,
    rows: impl Iterator<Item = &'a [u8]>,
    out: &mut [u8],
) {
    let units = Units::new(l.quants, l.mins);
    let flip = u32::from_ne_bytes([l.flip; 4]);
    let mut blocks: Vec<_> = rows.map(|r| r.chunks_exact(block_bytes)).collect();
    let word = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    for b in 0..nb {
        let (qa, ha) = units.block(nb, b);
        let pair = units.pair_start(nb, b);
        for (r, row) in blocks.iter_mut().enumerate() {
            let blk = row.next().expect("a row has nb blocks");
            let (head, q) = blk.split_at(l.head);
            let (qh, q) = q.split_at(if l.fifth_bits() { 4 } else { 0 });
            if let Some(start) = pair {
                // Block A (b even) fills the low nibbles, B the high ones, after it.
                let high = b % 2 == 1;
                for (j, w) in q.chunks_exact(4).enumerate() {
                    let w = word(w);
                    let halves = [w & 0x0F0F_0F0F, w >> 4 & 0x0F0F_0F0F];
                    for (k, v) in [(j, halves[0]), (j + 4, halves[1])] {
                        let at = start + 64 * k + 4 * r;
                        let old = if high { word(&out[at..at + 4]) } else { 0 };
                        let v = old | v << (4 * usize::from(high));
                        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            } else {
                for (j, w) in q.chunks_exact(4).enumerate() {
                    let v = word(w) ^ flip;
                    let at = qa + 64 * j + 4 * r;
                    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            if l.fifth_bits() {
                let at = qa + 64 * 4 + 4 * r;
                out[at..at + 4].copy_from_slice(&spread_qh(word(qh)).to_le_bytes());
            }
            // d, then (Q4_1, Q5_1) m, each a 32-byte register of the 16 rows.
            for (h, half) in head.chunks_exact(2).enumerate() {
                let at = ha + 32 * h + 2 * r;
                out[at..at + 2].copy_from_slice(half);
            }
        }
    }
}

/// F16, BF16: 16 columns of the 16 rows at a time, a 16×16 transpose of halves.
fn pack_halves<'a>(cols: usize, rows: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) {
    const K: usize = 16;
    let rows: Vec<&[u8]> = rows.collect();
    let whole = cols / K * K;
    for (c, dst) in out[..whole * 32].chunks_exact_mut(K * 32).enumerate() {
        let mut t = [[0u8; 2 * K]; GROUP_ROWS];
        for (tr, row) in t.iter_mut().zip(&rows) {
            tr.copy_from_slice(&row[c * 2 * K..(c + 1) * 2 * K]);
        }
        for (k, line) in dst.chunks_exact_mut(32).enumerate() {
            for (r, tr) in t.iter().enumerate().take(rows.len()) {
                line[2 * r..2 * r + 2].copy_from_slice(&tr[2 * k..2 * k + 2]);
            }
        }
    }
    for k in whole..cols {
        for (r, row) in rows.iter().enumerate() {
            let at = (k * GROUP_ROWS + r) * 2;
            out[at..at + 2].copy_from_slice(&row[2 * k..2 * k + 2]);
        }
    }
}

/// The inverse of [`pack_group`]: the group's first `n` rows into `dst` (row-major).
pub(super) fn unpack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    if super::kquant::is_kquant(ty) {
        return super::kquant::unpack_group(ty, cols, src, n, dst);
    }
    let rb = row_bytes(ty, cols);
    match legacy(ty) {
        Some(l) => {
            let nb = cols / 32;
            let bb = ty.type_size();
            let units = Units::new(l.quants, l.mins);
            for r in 0..n {
                for b in 0..nb {
                    let blk = &mut dst[r * rb + b * bb..r * rb + (b + 1) * bb];
                    let (qa, ha) = units.block(nb, b);
                    for (h, half) in blk[..l.head].chunks_exact_mut(2).enumerate() {
                        let at = ha + 32 * h + 2 * r;
                        half.copy_from_slice(&src[at..at + 2]);
                    }
                    let lane = |j: usize| {
                        let at = qa + j * 64 + r * 4;
                        u32::from_le_bytes(src[at..at + 4].try_into().expect("4 bytes"))
                    };
                    let (qh, qs) = blk[l.head..].split_at_mut(if l.fifth_bits() { 4 } else { 0 });
                    if let Some(start) = units.pair_start(nb, b) {
                        // The inverse of `pack_legacy`'s pairs.
                        let pair = |k: usize| {
                            let at = start + k * 64 + r * 4;
                            let w = u32::from_le_bytes(src[at..at + 4].try_into().expect("4"));
                            (w >> (4 * (b % 2))) & 0x0F0F_0F0F
                        };
                        for (j, word) in qs.chunks_exact_mut(4).enumerate() {
                            word.copy_from_slice(&(pair(j) | pair(j + 4) << 4).to_le_bytes());
                        }
                    } else {
                        for (j, word) in qs.chunks_exact_mut(4).enumerate() {
                            let v = lane(j) ^ u32::from_ne_bytes([l.flip; 4]);
                            word.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    if l.fifth_bits() {
                        qh.copy_from_slice(&gather_qh(lane(4)).to_le_bytes());
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
    /// Q8_0, Q4_0, Q5_0 weights: −o·Σq of each (token, block) (o the offset the stored
    /// quants carry: 128, 8, 16), the start of the block's integer dot, which makes it
    /// exact.
    pub(super) bias: Vec<i32>,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(ty: GgmlType, acts: &'a QuantizedActs) -> Tokens<'a> {
        let rows: Vec<ActRow> = (0..acts.n()).map(|t| acts.row(t)).collect();
        let nb = acts.cols() / 32;
        let offset = match ty {
            GgmlType::Q8_0 => 128,
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 => 16,
            _ => 0,
        };
        let bias = if let Some(bias) = super::kquant::token_bias(ty, &rows) {
            bias
        } else if offset == 0 {
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

#[cfg(test)]
mod tests {
    use super::super::test_bytes as bytes;
    use super::*;

    /// The layout by its definition (module docs of `packed`), byte by byte.
    fn packed_by_definition(ty: GgmlType, cols: usize, src: &[u8], n: usize) -> Vec<u8> {
        let rb = row_bytes(ty, cols);
        let mut out = vec![0u8; group_bytes(ty, cols)];
        for r in 0..n {
            let row = &src[r * rb..(r + 1) * rb];
            match legacy(ty) {
                Some(l) => {
                    let nb = cols / 32;
                    // Units of two blocks when a block's heads are 32 bytes (d only), else
                    // of one; the last unit takes what is left. A unit: its blocks' quant
                    // registers, then their heads (d's, then m's: 32 bytes each).
                    // Q4_0 pairs a full unit's blocks in its registers.
                    let q4 = ty == GgmlType::Q4_0;
                    let per = if l.mins { 1 } else { 2 };
                    let region = 16 * l.quants;
                    let heads = 32 * l.head / 2;
                    let qh = if l.fifth_bits() { 4 } else { 0 };
                    for (b, blk) in row.chunks_exact(ty.type_size()).enumerate() {
                        let unit = b / per * per * (region + heads);
                        let in_unit = per.min(nb - b / per * per);
                        let quants = unit + b % per * region;
                        let head = unit + in_unit * region + b % per * heads;
                        let reg = |j: usize| quants + j * 64 + 4 * r;
                        if q4 && in_unit == 2 {
                            // Element e (GGUF: byte e % 16's low nibble for e < 16, high
                            // nibble for e ≥ 16) at byte e % 4 of pair register e / 4, in
                            // the low nibble for block A (b even), the high one for B.
                            for e in 0..32 {
                                let v = blk[l.head + e % 16] >> (4 * (e / 16)) & 0xF;
                                let at = unit + (e / 4) * 64 + 4 * r + e % 4;
                                out[at] |= v << (4 * (b % 2));
                            }
                        } else {
                            for (i, &q) in blk[l.head + qh..].iter().enumerate() {
                                out[reg(i / 4) + i % 4] = q ^ l.flip;
                            }
                        }
                        // Q5: the fifth bit of element e at bit e / 4 of byte e % 4 of the
                        // fifth register's lane.
                        for e in 0..8 * qh {
                            let bit = (blk[l.head + e / 8] >> (e % 8)) & 1;
                            out[reg(4) + e % 4] |= bit << (e / 4);
                        }
                        for h in 0..l.head {
                            out[head + 32 * (h / 2) + 2 * r + h % 2] = blk[h];
                        }
                    }
                }
                None => {
                    for (k, half) in row.chunks_exact(2).enumerate() {
                        out[(k * GROUP_ROWS + r) * 2..][..2].copy_from_slice(half);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn pack_group_follows_the_layout_and_unpacks() {
        let cases = [
            (GgmlType::Q8_0, 32),
            (GgmlType::Q8_0, 576),
            (GgmlType::Q8_0, 96),
            (GgmlType::Q4_0, 96),
            (GgmlType::Q4_0, 128),
            (GgmlType::Q4_1, 576),
            (GgmlType::Q4_1, 96),
            (GgmlType::Q4_1, 32),
            (GgmlType::Q5_0, 64),
            (GgmlType::Q5_0, 160),
            (GgmlType::Q5_1, 96),
            (GgmlType::BF16, 33),
            (GgmlType::F16, 1),
            (GgmlType::F16, 33),
            (GgmlType::F16, 577),
        ];
        for (ty, cols) in cases {
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * row_bytes(ty, cols), (cols * 31 + n) as u64);
                let mut out = vec![0u8; group_bytes(ty, cols)];
                pack_group(ty, cols, &src, n, &mut out);
                assert!(
                    out == packed_by_definition(ty, cols, &src, n),
                    "{ty} {n}x{cols}"
                );
                let mut back = vec![0u8; src.len()];
                unpack_group(ty, cols, &out, n, &mut back);
                assert_eq!(back, src, "{ty} {n}x{cols}");
            }
        }
    }

    #[test]
    fn spread_qh_puts_element_4k_plus_i_at_bit_k_of_byte_i() {
        for e in 0..32 {
            assert_eq!(spread_qh(1 << e), 1 << (8 * (e % 4) + e / 4), "element {e}");
        }
        let mut x = 0x9E37_79B9u32;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            assert_eq!(gather_qh(spread_qh(x)), x);
        }
    }
}
