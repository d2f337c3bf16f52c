//! The packed group layout of the K-quants Q4_K and Q6_K (Q2_K, Q3_K and Q5_K define
//! theirs beside their kernels, in the same terms), the packing of all five, and the
//! per-token integer sums their kernels start from.
//!
//! A group holds, for each super-block b (256 columns) of its 16 rows, one chunk of whole
//! 64-byte registers; within a chunk, a field of the GGUF block (its bytes 4j..4j + 4 of
//! row r in lane r of register j) or an f16 (row r's at bytes 2r..2r + 2, 16 rows in 32
//! bytes), in the order the kernel reads them:
//! - Q4_K (2304 bytes = 16 × 144): the 16 d's, the 16 dmin's, the 12 scale bytes as 3
//!   registers, the 128 `qs` bytes as 32 registers (register 8i + k: elements 4k..4k + 4
//!   of sub-block 2i in the low nibbles, of 2i + 1 in the high ones).
//! - Q6_K (3328 bytes): the 16 i8 scales as 4 registers, then per half h (elements
//!   128h..128h + 128) its 32 `qh` bytes as 8 registers and its 64 `ql` bytes as 16, then
//!   recoded in place ([`recode_q6_k_half`]: bits move, not bytes); the d's (32 bytes a
//!   super-block) are a chunk's tail, kept apart so that every chunk stays whole
//!   registers (16 × 210 = 3360 is not).
//!
//! A layout with a tail (Q6_K, Q3_K) puts its super-blocks in units of two
//! (`layout::Units`): the two chunks, then their two tails (64 bytes, a line), so the
//! group is one stream of whole lines, read front to back; the last unit of an odd `nb`
//! holds one super-block (chunk, then tail).
//!
//! So a group takes exactly its rows' GGUF bytes, and every byte has one place: packing is
//! a permutation of the group's bytes (for Q6_K, followed by the recoding of its halves, a
//! bijection of each half's bits).

use super::layout::Units;
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
/// Q6_K chunk offsets: scales, then each half (`Q6_K_HALF` bytes from `Q6_K_HALVES`): its
/// qh, then its ql.
pub(super) const Q6_K_SCALES: usize = 0;
pub(super) const Q6_K_HALVES: usize = 256;
pub(super) const Q6_K_HALF: usize = 1536;
pub(super) const Q6_K_QH: usize = 0;
pub(super) const Q6_K_QL: usize = 512;
/// Bytes of one recoded Q6_K triple (registers A_k, B_k, C_k; [`recode_q6_k_half`]).
pub(super) const Q6_K_TRIPLE: usize = 192;

/// Where a field of a GGUF block lives in the packed group.
#[derive(Clone, Copy)]
pub(super) enum Place {
    /// At this offset in the super-block's chunk.
    Chunk(usize),
    /// In the unit's tail, after its chunks (`KLayout::units`).
    Tail,
}

/// One field of a GGUF block: `len` bytes at `src`; f16 fields (`len` 2) are 2 bytes a
/// lane, the others 4.
#[derive(Clone, Copy)]
pub(super) struct Field {
    pub(super) src: usize,
    pub(super) len: usize,
    pub(super) at: Place,
}

pub(super) struct KLayout {
    /// GGUF block bytes.
    pub(super) block: usize,
    /// Bytes of a super-block chunk (16 rows' fields placed `Chunk`).
    pub(super) chunk: usize,
    pub(super) fields: &'static [Field],
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

pub(super) const Q6_K: KLayout = KLayout {
    block: 210,
    chunk: Q6_K_CHUNK,
    fields: &[
        Field {
            src: 0,
            len: 64,
            at: Place::Chunk(Q6_K_HALVES + Q6_K_QL),
        },
        Field {
            src: 64,
            len: 64,
            at: Place::Chunk(Q6_K_HALVES + Q6_K_HALF + Q6_K_QL),
        },
        Field {
            src: 128,
            len: 32,
            at: Place::Chunk(Q6_K_HALVES + Q6_K_QH),
        },
        Field {
            src: 160,
            len: 32,
            at: Place::Chunk(Q6_K_HALVES + Q6_K_HALF + Q6_K_QH),
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

/// The packed layout of a K-quant (Q2_K to Q6_K; the others' layouts are defined beside
/// their kernels), `None` for the other formats.
pub(super) fn layout(ty: GgmlType) -> Option<&'static KLayout> {
    match ty {
        GgmlType::Q2_K => Some(&super::kquant_q2::Q2_K),
        GgmlType::Q3_K => Some(&super::kquant_q3::Q3_K),
        GgmlType::Q4_K => Some(&Q4_K),
        GgmlType::Q5_K => Some(&super::kquant_q5::Q5_K),
        GgmlType::Q6_K => Some(&Q6_K),
        _ => None,
    }
}

/// Whether `ty` is a K-quant with a packed layout here.
pub(super) fn is_kquant(ty: GgmlType) -> bool {
    layout(ty).is_some()
}

impl Field {
    /// Bytes of one row in a lane: 2 for an f16, else 4.
    pub(super) fn width(&self) -> usize {
        self.len.min(4)
    }

    /// Offset of the 16 rows' copies of this field of super-block `b` in a group of `nb`.
    pub(super) fn base(&self, l: &KLayout, nb: usize, b: usize) -> usize {
        let (chunk, tail) = l.units().block(nb, b);
        match self.at {
            Place::Chunk(at) => chunk + at,
            Place::Tail => tail,
        }
    }
}

impl KLayout {
    /// The units its super-blocks go in: one a unit without a tail field; with one (at most
    /// one, an f16: 32 bytes for the 16 rows), two, so that the unit's tails fill a line.
    pub(super) const fn units(&self) -> Units {
        let mut tail = 0;
        let mut i = 0;
        while i < self.fields.len() {
            if let Place::Tail = self.fields[i].at {
                assert!(tail == 0 && self.fields[i].len == 2, "one f16 tail field");
                tail = GROUP_ROWS * 2;
            }
            i += 1;
        }
        Units {
            per: if tail == 0 { 1 } else { 2 },
            region: self.chunk,
            heads: tail,
        }
    }
}

/// The largest K-quant block (Q6_K), for the per-super-block staging rows.
pub(super) const MAX_BLOCK: usize = 210;

/// Packs `n` ≤ 16 rows of `ty` (`src`, row-major, `cols` columns) into the group `out`
/// (lanes past `n` are left as they are), by its [`layout`]. `ty` must be a K-quant
/// [`is_kquant`] accepts.
///
/// Packing runs over every CPU matrix at load, so it works a super-block at a time: the 16
/// rows' blocks are staged (one sequential copy each), then each field's registers are
/// written in order, a lane unit at a time, with the unit's size known at compile time.
pub(super) fn pack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
    let l = layout(ty).expect("pack_group is called for packed K-quants only");
    let nb = cols / QK_K;
    let rows: Vec<&[u8]> = src[..n * nb * l.block].chunks_exact(nb * l.block).collect();
    let mut stage = [[0u8; MAX_BLOCK]; GROUP_ROWS];
    for b in 0..nb {
        for (st, row) in stage.iter_mut().zip(&rows) {
            st[..l.block].copy_from_slice(&row[b * l.block..(b + 1) * l.block]);
        }
        for f in l.fields {
            let dst = &mut out[f.base(l, nb, b)..][..GROUP_ROWS * f.len];
            match f.width() {
                4 => scatter::<4>(f.src, &stage[..n], dst),
                _ => scatter::<2>(f.src, &stage[..n], dst),
            }
        }
        recode(ty, out, nb, b, false);
    }
}

/// Recodes (`back` false) or decodes the bits of super-block `b`'s chunk in the group `g`
/// of `nb` super-blocks, for the formats whose kernels read their quants recoded: Q6_K's
/// halves ([`recode_q6_k_half`]) and Q3_K's quants (`kquant_q3::recode`). The other
/// formats' chunks stay as their fields placed them.
pub(super) fn recode(ty: GgmlType, g: &mut [u8], nb: usize, b: usize, back: bool) {
    match ty {
        GgmlType::Q6_K => {
            for half in q6_k_halves(g, nb, b) {
                if back {
                    decode_q6_k_half(half)
                } else {
                    recode_q6_k_half(half)
                }
            }
        }
        GgmlType::Q3_K => {
            use super::kquant_q3::{self, Q3_K_HMASK, Q3_K_QUANTS};
            let at = kquant_q3::Q3_K.units().block(nb, b).0 + Q3_K_HMASK;
            let quants = &mut g[at..at + Q3_K_QUANTS];
            if back {
                kquant_q3::decode(quants)
            } else {
                kquant_q3::recode(quants)
            }
        }
        _ => {}
    }
}

/// Whether [`recode`] changes `ty`'s chunks.
fn recoded(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q6_K | GgmlType::Q3_K)
}

/// The two halves of Q6_K super-block `b` in the group `g` of `nb` super-blocks.
fn q6_k_halves(g: &mut [u8], nb: usize, b: usize) -> std::slice::ChunksExactMut<'_, u8> {
    let at = Q6_K.units().block(nb, b).0 + Q6_K_HALVES;
    g[at..at + 2 * Q6_K_HALF].chunks_exact_mut(Q6_K_HALF)
}

/// Masks of the low 1, 2, 3, 4 and 6 bits of each byte of a lane word.
pub(super) const LOW1: u32 = 0x0101_0101;
pub(super) const LOW2: u32 = 0x0303_0303;
pub(super) const LOW3: u32 = 0x0707_0707;
pub(super) const LOW4: u32 = 0x0F0F_0F0F;
pub(super) const LOW6: u32 = 0x3F3F_3F3F;

/// The lane word (4 bytes, little-endian: one row's bytes in a register) at `at`.
pub(super) fn lane_word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Writes `v` as the lane word at `at`.
pub(super) fn set_lane_word(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recodes a Q6_K half as placed by its fields (8 `qh` registers, 16 `ql`) into 8 triples
/// of registers A_k, B_k, C_k (k = 0..8, `Q6_K_TRIPLE` bytes each, in order), lane r
/// byte i of each holding row r's elements l = 4k + i of the four quarters (e_s, element
/// 32s + l of the half, 6 bits, unsigned):
///
/// A = e_0 | (e_3 & 3) << 6,  B = e_1 | (e_3 >> 2 & 3) << 6,  C = e_2 | (e_3 >> 4) << 6.
///
/// So quarters 0–2 are one mask each (`& 0x3F`) and quarter 3 comes out in place, as
/// 4·e_3, from the three tops (`kquant512::q6_k_pass`): five operations where the ql/qh
/// split took twelve (a shift for every nibble and 2-bit field but the first).
pub(super) fn recode_q6_k_half(half: &mut [u8]) {
    let mut placed = [0u8; Q6_K_HALF];
    placed.copy_from_slice(&half[..Q6_K_HALF]);
    for r in 0..GROUP_ROWS {
        // Lane r of register k: bytes l = 4k..4k + 4 of a field.
        for k in 0..8 {
            let h = lane_word(&placed, Q6_K_QH + 64 * k + 4 * r);
            let lo = lane_word(&placed, Q6_K_QL + 64 * k + 4 * r);
            let hi = lane_word(&placed, Q6_K_QL + 64 * (k + 8) + 4 * r);
            let e = [
                lo & LOW4 | (h & LOW2) << 4,
                hi & LOW4 | (h >> 2 & LOW2) << 4,
                lo >> 4 & LOW4 | (h >> 4 & LOW2) << 4,
                hi >> 4 & LOW4 | (h >> 6 & LOW2) << 4,
            ];
            let coded = [
                e[0] | (e[3] & LOW2) << 6,
                e[1] | (e[3] >> 2 & LOW2) << 6,
                e[2] | (e[3] >> 4 & LOW2) << 6,
            ];
            for (j, v) in coded.into_iter().enumerate() {
                set_lane_word(half, Q6_K_TRIPLE * k + 64 * j + 4 * r, v);
            }
        }
    }
}

/// The inverse of [`recode_q6_k_half`].
fn decode_q6_k_half(half: &mut [u8]) {
    let mut coded = [0u8; Q6_K_HALF];
    coded.copy_from_slice(&half[..Q6_K_HALF]);
    for r in 0..GROUP_ROWS {
        for k in 0..8 {
            let at = |j: usize| Q6_K_TRIPLE * k + 64 * j + 4 * r;
            let [a, b, c] = [0, 1, 2].map(|j| lane_word(&coded, at(j)));
            let e = [
                a & LOW6,
                b & LOW6,
                c & LOW6,
                a >> 6 & LOW2 | (b >> 6 & LOW2) << 2 | (c >> 6 & LOW2) << 4,
            ];
            let top = |e: u32| e >> 4 & LOW2;
            let qh = top(e[0]) | top(e[1]) << 2 | top(e[2]) << 4 | top(e[3]) << 6;
            set_lane_word(
                half,
                Q6_K_QL + 64 * k + 4 * r,
                e[0] & LOW4 | (e[2] & LOW4) << 4,
            );
            set_lane_word(
                half,
                Q6_K_QL + 64 * (k + 8) + 4 * r,
                e[1] & LOW4 | (e[3] & LOW4) << 4,
            );
            set_lane_word(half, Q6_K_QH + 64 * k + 4 * r, qh);
        }
    }
}

/// `dst` (one field's registers): unit u of lane r = bytes `at + W·u..` of `stage[r]`.
fn scatter<const W: usize>(at: usize, stage: &[[u8; MAX_BLOCK]], dst: &mut [u8]) {
    for (u, reg) in dst.chunks_exact_mut(GROUP_ROWS * W).enumerate() {
        for (lane, st) in reg.chunks_exact_mut(W).zip(stage) {
            let from: &[u8; W] = st[at + W * u..][..W].try_into().expect("W bytes");
            lane.copy_from_slice(from);
        }
    }
}

/// The inverse of [`pack_group`]: the group's first `n` rows into `dst` (row-major).
pub(super) fn unpack_group(ty: GgmlType, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    let l = layout(ty).expect("unpack_group is called for packed K-quants only");
    let nb = cols / QK_K;
    let decoded;
    let src = if recoded(ty) {
        let mut g = src[..l.units().bytes(nb)].to_vec();
        for b in 0..nb {
            recode(ty, &mut g, nb, b, true);
        }
        decoded = g;
        &decoded[..]
    } else {
        src
    };
    let mut stage = [[0u8; MAX_BLOCK]; GROUP_ROWS];
    for b in 0..nb {
        for f in l.fields {
            let from = &src[f.base(l, nb, b)..][..GROUP_ROWS * f.len];
            match f.width() {
                4 => gather::<4>(f.src, from, &mut stage[..n]),
                _ => gather::<2>(f.src, from, &mut stage[..n]),
            }
        }
        let rows = dst[..n * nb * l.block].chunks_exact_mut(nb * l.block);
        for (row, st) in rows.zip(&stage) {
            row[b * l.block..(b + 1) * l.block].copy_from_slice(&st[..l.block]);
        }
    }
}

/// The inverse of [`scatter`].
fn gather<const W: usize>(at: usize, src: &[u8], stage: &mut [[u8; MAX_BLOCK]]) {
    for (u, reg) in src.chunks_exact(GROUP_ROWS * W).enumerate() {
        for (lane, st) in reg.chunks_exact(W).zip(stage.iter_mut()) {
            st[at + W * u..][..W].copy_from_slice(lane);
        }
    }
}

/// The integer sums each (token, super-block) of the call starts from, for K-quant
/// weights (`None` for the other formats):
/// - Q4_K, 4 a super-block: the mins' activation sums as i16 pairs for `vpdpwssd`, p_j =
///   bsum_2j + bsum_2j+1 (the 32 activations of sub-block j; |p_j| ≤ 32·128, an i16):
///   (p0, p2), (p1, p3), (p4, p6), (p5, p7), the first of each pair in the low half.
/// - Q6_K, 16 a super-block: −32·f_j·bsum_j, the start of sub-block j's integer dot, which
///   makes f_j·Σ (q − 32)·a exact from the unsigned quants q, entered as f_j·q: f_j = 4 for
///   the last quarter of each half (j mod 8 ≥ 6, `recode_q6_k_half`), else 1.
/// - Q5_K: Q4_K's (its mins and their activation sums are Q4_K's).
/// - Q3_K, 16 a super-block: −4·f_j·bsum_j, which makes f_j·Σ (u − 4)·a exact from the
///   unsigned quants u = low + 4·hbit, entered as f_j·u (`kquant_q3::FACTORS`).
/// - Q2_K: `kquant_q2::token_bias`.
pub(super) fn token_bias(ty: GgmlType, rows: &[ActRow]) -> Option<Vec<i32>> {
    let blocks = rows.iter().flat_map(|a| a.q8_k);
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => Some(
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
                .flat_map(|y| {
                    let f = |j: usize| if j % 8 >= 6 { 4 } else { 1 };
                    std::array::from_fn::<i32, 16, _>(|j| -32 * f(j) * i32::from(y.bsums[j]))
                })
                .collect(),
        ),
        GgmlType::Q3_K => Some(
            blocks
                .flat_map(|y| {
                    let f = |j: usize| super::kquant_q3::FACTORS[j % 8];
                    std::array::from_fn::<i32, 16, _>(|j| -4 * f(j) * i32::from(y.bsums[j]))
                })
                .collect(),
        ),
        GgmlType::Q2_K => Some(super::kquant_q2::token_bias(rows)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_bytes as bytes;
    use super::*;

    /// Calls `f(row_offset, group_offset, width)` for every lane unit of the first `n` rows
    /// of a group of `nb` super-blocks: the layout by its definition (module docs).
    fn for_each_unit(l: &KLayout, nb: usize, n: usize, mut f: impl FnMut(usize, usize, usize)) {
        for r in 0..n {
            for b in 0..nb {
                for field in l.fields {
                    let w = field.width();
                    for u in 0..field.len / w {
                        let src = r * nb * l.block + b * l.block + field.src + u * w;
                        let dst = field.base(l, nb, b) + u * GROUP_ROWS * w + r * w;
                        f(src, dst, w);
                    }
                }
            }
        }
    }

    /// Every byte of a group has one place (the fields tile the group exactly), and
    /// `pack_group`/`unpack_group` follow the definition (Q6_K's: placed, then recoded).
    #[test]
    fn packing_follows_the_layout_and_is_a_permutation() {
        for (ty, l) in [(GgmlType::Q4_K, &Q4_K), (GgmlType::Q6_K, &Q6_K)] {
            assert_eq!(l.block, ty.type_size());
            assert!(l.block <= MAX_BLOCK);
            for nb in [1, 2, 3] {
                let size = GROUP_ROWS * nb * l.block;
                let (mut hits, mut read) = (vec![0u8; size], vec![0u8; size]);
                for_each_unit(l, nb, GROUP_ROWS, |s, d, w| {
                    hits[d..d + w].iter_mut().for_each(|h| *h += 1);
                    read[s..s + w].iter_mut().for_each(|h| *h += 1);
                });
                assert!(hits.iter().all(|&h| h == 1), "{ty} nb {nb}: group bytes");
                assert!(read.iter().all(|&h| h == 1), "{ty} nb {nb}: row bytes");
                for n in [1, 5, GROUP_ROWS] {
                    let src = bytes(n * nb * l.block, (nb * 31 + n) as u64);
                    let mut want = vec![0u8; size];
                    for_each_unit(l, nb, n, |s, d, w| {
                        want[d..d + w].copy_from_slice(&src[s..s + w])
                    });
                    for b in 0..nb {
                        recode(ty, &mut want, nb, b, false);
                    }
                    let mut got = vec![0u8; size];
                    pack_group(ty, nb * QK_K, &src, n, &mut got);
                    assert!(got == want, "{ty} {n} rows, nb {nb}");
                    let mut back = vec![0u8; src.len()];
                    unpack_group(ty, nb * QK_K, &got, n, &mut back);
                    assert!(back == src, "{ty} {n} rows, nb {nb}: unpack");
                }
            }
        }
    }

    /// A recoded Q6_K half gives every element its GGUF value (ggml's `dequantize_row_q6_K`
    /// indexing: element l + 32s of the half from ql[l] / ql[l + 32] and qh[l] bits 2s),
    /// by the kernel's rule: quarters 0–2 masked, quarter 3 as 4·e from the three tops.
    #[test]
    fn q6_k_recoding_keeps_every_element() {
        let placed = bytes(Q6_K_HALF, 7);
        let mut coded = placed.clone();
        recode_q6_k_half(&mut coded);
        let at = |field: usize, l: usize, r: usize| field + 64 * (l / 4) + 4 * r + l % 4;
        for r in 0..GROUP_ROWS {
            for l in 0..32 {
                let (ql, qh) = (
                    |i: usize| placed[at(Q6_K_QL, i, r)],
                    placed[at(Q6_K_QH, l, r)],
                );
                let want = [
                    ql(l) & 0xF | (qh & 3) << 4,
                    ql(l + 32) & 0xF | (qh >> 2 & 3) << 4,
                    ql(l) >> 4 | (qh >> 4 & 3) << 4,
                    ql(l + 32) >> 4 | (qh >> 6 & 3) << 4,
                ];
                let t = Q6_K_TRIPLE * (l / 4) + 4 * r + l % 4;
                let (a, b, c) = (coded[t], coded[t + 64], coded[t + 128]);
                let got = [
                    a & 0x3F,
                    b & 0x3F,
                    c & 0x3F,
                    ((a >> 4) & 0x0C | (b >> 2) & 0x30 | c & 0xC0) / 4,
                ];
                assert_eq!(got, want, "row {r}, l {l}");
            }
        }
        let mut back = coded;
        decode_q6_k_half(&mut back);
        assert!(back == placed);
    }
}
