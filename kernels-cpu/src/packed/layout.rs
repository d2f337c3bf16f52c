//! The packed layout's vocabulary, shared by every packed format: the group and tile
//! sizes, how a group's blocks lie ([`Units`]), the shape checks, the K-quants' field
//! placement ([`KLayout`]: each K-quant file is one table of it), and the per-call
//! activation data the kernels read ([`Tokens`]). A format's own layout, packing and
//! kernels are in its file (`legacy`, `float`, `q2_k` … `q6_k`); its registry row names
//! them as a [`PackedFormat`].
//!
//! A K-quant group holds, for each super-block b (256 columns) of its 16 rows, one chunk
//! of whole 64-byte registers; within a chunk, a field of the GGUF block (its bytes
//! 4j..4j + 4 of row r in lane r of register j) or an f16 (row r's at bytes 2r..2r + 2, 16
//! rows in 32 bytes), in the order the kernel reads them. A layout with a tail (Q6_K,
//! Q3_K: the d's, as 16 × 210 = 3360 is not whole registers) puts its super-blocks in
//! units of two ([`Units`]): the two chunks, then their two tails (64 bytes, a line), so
//! the group is one stream of whole lines, read front to back; the last unit of an odd
//! `nb` holds one super-block (chunk, then tail). So a group takes exactly its rows' GGUF
//! bytes, and every byte has one place: packing is a permutation of the group's bytes
//! (then, for Q6_K and Q3_K, a recoding of bits within each chunk).

use crate::act::QuantizedActs;
use crate::dot::ActRow;
use crate::formats::blocks::QK_K;
use crate::formats::{FormatError, GgmlType};
use crate::isa::Isa;

/// Rows in a packed group: one per 32-bit lane of a 512-bit register.
pub const GROUP_ROWS: usize = 16;

/// Tokens a prefill tile multiplies per pass over a group's weights.
pub(crate) const TILE_TOKENS: usize = 8;

/// A tile's results: `out[t][r]`, token t, row r of the group.
pub(crate) type Out = [[f32; GROUP_ROWS]; TILE_TOKENS];

/// A packed kernel: group `g` (a whole group of a matrix of `cols` columns) times tokens
/// `t0..t0 + NT` of `tk` into `out`.
///
/// # Safety
/// The CPU must have the level its [`PackedFormat`] names; `tk` has rows `t0..t0 + NT` of
/// `cols` activations in the format's vec_dot format, with its layout's biases.
pub(crate) type GroupFn = unsafe fn(g: &[u8], cols: usize, tk: &Tokens, t0: usize, out: &mut Out);

/// How a format's rows go into a packed group and back, and the integer sums its kernels
/// start from.
pub(crate) trait GroupLayout: Sync {
    /// Packs `n` ≤ 16 rows (`src`, row-major, `cols` columns) into the group `out` (lanes
    /// past `n` are left as they are: zero in a zeroed group).
    fn pack(&self, cols: usize, src: &[u8], n: usize, out: &mut [u8]);
    /// The inverse of [`GroupLayout::pack`]: the group's first `n` rows into `dst`.
    fn unpack(&self, cols: usize, src: &[u8], n: usize, dst: &mut [u8]);
    /// The integer each (token, block) dot starts from ([`Tokens::bias`]), for tokens
    /// `rows` of `cols` activations; empty where the kernels start from zero.
    fn bias(&self, rows: &[ActRow], cols: usize) -> Vec<i32>;
}

/// A format's packed kernels, as its registry row names them.
pub(crate) struct PackedFormat {
    /// The lowest ISA level the kernels run at.
    pub(crate) isa: Isa,
    pub(crate) layout: &'static dyn GroupLayout,
    /// The kernel for tiles of 1 to 8 tokens (`group[nt - 1]`).
    pub(crate) group: [GroupFn; TILE_TOKENS],
    /// A one-token kernel for a long matrix read by one thread, where it beats `group[0]`
    /// there and loses elsewhere (`packed::run` picks it).
    pub(crate) stream: Option<GroupFn>,
}

/// Bytes of one row of `cols` elements in the GGUF layout.
pub(crate) fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    cols / ty.block_size() * ty.type_size()
}

/// Validates the shape of a row-major `rows`×`cols` matrix of `len` bytes; its size.
pub(crate) fn check(
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
pub(crate) fn group_bytes(ty: GgmlType, cols: usize) -> usize {
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
pub(crate) struct Units {
    /// Blocks a full unit holds: 2 or 1.
    pub(crate) per: usize,
    /// Bytes of one block's quant registers (16 rows): 512 (Q8_0), 256 (Q4), 320 (Q5); a
    /// K-quant's chunk.
    pub(crate) region: usize,
    /// Bytes of one block's heads (16 rows): 32, or 64 with mins; a K-quant's tail (0 or 32).
    pub(crate) heads: usize,
}

impl Units {
    /// The units of `quants` bytes a row-block (32, 16 or 20), `mins` whether a block has a
    /// min besides its d.
    pub(crate) const fn new(quants: usize, mins: bool) -> Units {
        let heads = if mins { 64 } else { 32 };
        Units {
            per: 64 / heads,
            region: GROUP_ROWS * quants,
            heads,
        }
    }

    /// Whether a full unit's two blocks share their quant registers (Q4_0).
    pub(crate) const fn paired(self) -> bool {
        self.region == GROUP_ROWS * 16 && self.heads == 32
    }

    /// Where block `b`'s pair registers start, when it shares them with the other block of
    /// a full unit ([`Units::paired`]); `None` for a block that has its own (every block of
    /// an unpaired format, and a paired format's odd last block).
    pub(crate) fn pair_start(self, nb: usize, b: usize) -> Option<usize> {
        (self.paired() && b / 2 * 2 + 1 < nb).then(|| self.bytes(b / 2 * 2))
    }

    /// Bytes of a unit of `k` blocks.
    pub(crate) const fn bytes(self, k: usize) -> usize {
        k * (self.region + self.heads)
    }

    /// Offsets of block `b`'s quant registers and heads in a group of `nb` blocks.
    pub(crate) fn block(self, nb: usize, b: usize) -> (usize, usize) {
        let (u, i) = (b / self.per, b % self.per);
        let start = self.bytes(u * self.per);
        let k = self.per.min(nb - u * self.per);
        (
            start + i * self.region,
            start + k * self.region + i * self.heads,
        )
    }
}

/// Where a field of a GGUF block lives in the packed group.
#[derive(Clone, Copy)]
pub(crate) enum Place {
    /// At this offset in the super-block's chunk.
    Chunk(usize),
    /// In the unit's tail, after its chunks (`KLayout::units`).
    Tail,
}

/// One field of a GGUF block: `len` bytes at `src`; f16 fields (`len` 2) are 2 bytes a
/// lane, the others 4.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub(crate) src: usize,
    pub(crate) len: usize,
    pub(crate) at: Place,
}

/// Recodes (`back` false) or decodes super-block `b`'s chunk in the group `g` of `nb`.
pub(crate) type RecodeFn = fn(g: &mut [u8], nb: usize, b: usize, back: bool);

/// A K-quant's packed layout: where each field of its GGUF block goes, how its chunks are
/// recoded, and the integer sums its kernel starts from.
pub(crate) struct KLayout {
    /// GGUF block bytes.
    pub(crate) block: usize,
    /// Bytes of a super-block chunk (16 rows' fields placed `Chunk`).
    pub(crate) chunk: usize,
    pub(crate) fields: &'static [Field],
    /// Recodes (`back` false) or decodes super-block `b`'s chunk in a group of `nb`, for
    /// the formats whose kernels read their quants recoded (bits moved within the chunk);
    /// `None`: the chunk stays as its fields placed it.
    pub(crate) recode: Option<RecodeFn>,
    /// The integer sums each (token, super-block) of a call starts from.
    pub(crate) bias: fn(rows: &[ActRow]) -> Vec<i32>,
}

impl Field {
    /// Bytes of one row in a lane: 2 for an f16, else 4.
    pub(crate) fn width(&self) -> usize {
        self.len.min(4)
    }

    /// Offset of the 16 rows' copies of this field of super-block `b` in a group of `nb`.
    pub(crate) fn base(&self, l: &KLayout, nb: usize, b: usize) -> usize {
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
    pub(crate) const fn units(&self) -> Units {
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
pub(crate) const MAX_BLOCK: usize = 210;

/// Masks of the low 1, 2, 3, 4 and 6 bits of each byte of a lane word.
pub(crate) const LOW1: u32 = 0x0101_0101;
pub(crate) const LOW2: u32 = 0x0303_0303;
pub(crate) const LOW3: u32 = 0x0707_0707;
pub(crate) const LOW4: u32 = 0x0F0F_0F0F;
pub(crate) const LOW6: u32 = 0x3F3F_3F3F;

/// The lane word (4 bytes, little-endian: one row's bytes in a register) at `at`.
pub(crate) fn lane_word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Writes `v` as the lane word at `at`.
pub(crate) fn set_lane_word(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl GroupLayout for KLayout {
    fn pack(&self, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
        pack_k(self, cols, src, n, out)
    }

    fn unpack(&self, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
        unpack_k(self, cols, src, n, dst)
    }

    fn bias(&self, rows: &[ActRow], _cols: usize) -> Vec<i32> {
        (self.bias)(rows)
    }
}

/// Packs `n` ≤ 16 rows of the K-quant laid out as `l` (`src`, row-major, `cols` columns)
/// into the group `out` (lanes past `n` are left as they are).
///
/// Packing runs over every CPU matrix at load, so it works a super-block at a time: the 16
/// rows' blocks are staged (one sequential copy each), then each field's registers are
/// written in order, a lane unit at a time, with the unit's size known at compile time.
fn pack_k(l: &KLayout, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
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
        if let Some(recode) = l.recode {
            recode(out, nb, b, false);
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

/// The inverse of [`pack_k`]: the group's first `n` rows into `dst` (row-major).
fn unpack_k(l: &KLayout, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
    let nb = cols / QK_K;
    let decoded;
    let src = if let Some(recode) = l.recode {
        let mut g = src[..l.units().bytes(nb)].to_vec();
        for b in 0..nb {
            recode(&mut g, nb, b, true);
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

/// The activations of one call as the packed kernels read them.
pub(crate) struct Tokens<'a> {
    pub(crate) rows: Vec<ActRow<'a>>,
    /// The integer each (token, block) dot starts from, by the format's
    /// [`GroupLayout::bias`]: the offset or min terms that make the block's integer dot
    /// exact.
    pub(crate) bias: Vec<i32>,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(layout: &dyn GroupLayout, acts: &'a QuantizedActs) -> Tokens<'a> {
        let rows: Vec<ActRow> = (0..acts.n()).map(|t| acts.row(t)).collect();
        let bias = layout.bias(&rows, acts.cols());
        Tokens { rows, bias }
    }
}

/// Pseudo-random bytes (xorshift), reproducible: the layout tests' rows.
#[cfg(test)]
pub(crate) fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::test_bytes as bytes;
    use super::*;

    /// Calls `f(row_offset, group_offset, width)` for every lane unit of the first `n` rows
    /// of a group of `nb` super-blocks: the layout by its definition (module docs).
    pub(in crate::packed) fn for_each_unit(
        l: &KLayout,
        nb: usize,
        n: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) {
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

    /// Every byte of a group of `ty` (laid out as `l`) has one place (the fields tile the
    /// group exactly), and packing/unpacking follow the definition (placed, then recoded).
    pub(in crate::packed) fn assert_k_packing(ty: GgmlType, l: &KLayout) {
        {
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
                    if let Some(recode) = l.recode {
                        for b in 0..nb {
                            recode(&mut want, nb, b, false);
                        }
                    }
                    let mut got = vec![0u8; size];
                    l.pack(nb * QK_K, &src, n, &mut got);
                    assert!(got == want, "{ty} {n} rows, nb {nb}");
                    let mut back = vec![0u8; src.len()];
                    l.unpack(nb * QK_K, &got, n, &mut back);
                    assert!(back == src, "{ty} {n} rows, nb {nb}: unpack");
                }
            }
        }
    }
}
