//! The legacy formats' packed groups (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: 32-element blocks,
//! Q8_0/Q8_1 activations): one table row a format ([`Legacy`]), the packing, and the
//! kernels (one for Q8_0, one for the four nibble formats, entered by name).
//!
//! Layout of a group (`nb` blocks a row, rows r = 0..16 of the group): the quants of block
//! b of the 16 rows, as 64-byte registers: register j lane r holds bytes 4j..4j + 4 of row
//! r's block b (Q8_0: `q + 128`, unsigned; the nibble formats: the raw `qs` bytes, low
//! nibbles elements 4j.., high 16 + 4j..), 8 registers a block (Q8_0) or 4 (nibbles), and
//! for Q5 a fifth: lane r is row r's `qh`, its bits transposed so that bit K of byte i is
//! the fifth bit of nibble register K's byte i ([`spread_qh`]). A block's heads are the 16
//! rows' f16 d's (32 bytes, lane r = row r) and (Q4_1, Q5_1) their m's likewise. Blocks go
//! in units ([`Units`]): two blocks (Q8_0, Q4_0, Q5_0) or one (Q4_1, Q5_1), the unit's
//! quant registers then its heads, so every full unit is whole 64-byte lines and the group
//! is one stream front to back (the last unit of an odd `nb` holds one block). A full
//! Q4_0 unit pairs its two blocks in 8 registers instead, one in the low nibbles and one
//! in the high ([`Units::paired`]).
//!
//! Per block, the group's weight registers are loaded once and serve every token of the
//! tile; each token keeps its own accumulator and sees the same operations whatever `NT`
//! is. The integer dot of a block is exact (it starts at the token's −o·Σq, the layout's
//! bias), so only the float sums round, once per block.

use super::layout::{GroupLayout, Units};
use crate::dot::ActRow;

/// How a legacy block is split into the packed group's regions.
pub(crate) struct Legacy {
    /// Bytes of a GGUF block.
    block: usize,
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
    /// The offset the stored quants carry (Q8_0 after `flip`: 128; Q4_0: 8, Q5_0: 16; 0
    /// with a min): each (token, block) dot starts at −offset·Σq, which makes it exact.
    offset: i32,
}

impl Legacy {
    /// The units its packed group is laid out in ([`Units`]): what the kernels walk, from
    /// the same table packing follows.
    pub(crate) const fn units(&self) -> Units {
        Units::new(self.quants, self.mins)
    }

    /// Q5_0/Q5_1: a `qh` word before the nibbles.
    fn fifth_bits(&self) -> bool {
        self.quants == 20
    }
}

pub(crate) const Q8_0: Legacy = Legacy {
    block: 34,
    head: 2,
    quants: 32,
    flip: 0x80,
    mins: false,
    offset: 128,
};
pub(crate) const Q4_0: Legacy = Legacy {
    block: 18,
    head: 2,
    quants: 16,
    flip: 0,
    mins: false,
    offset: 8,
};
pub(crate) const Q4_1: Legacy = Legacy {
    block: 20,
    head: 4,
    quants: 16,
    flip: 0,
    mins: true,
    offset: 0,
};
pub(crate) const Q5_0: Legacy = Legacy {
    block: 22,
    head: 2,
    quants: 20,
    flip: 0,
    mins: false,
    offset: 16,
};
pub(crate) const Q5_1: Legacy = Legacy {
    block: 24,
    head: 4,
    quants: 20,
    flip: 0,
    mins: true,
    offset: 0,
};

impl GroupLayout for Legacy {
    /// Packing runs over every CPU matrix at load (gigabytes for an 8B model), so it moves
    /// words, not bytes, and fills the output in order: a block's registers (Q8_0: 512
    /// bytes) at a time, each from the 16 rows' next bytes, so every output line is
    /// finished while it is in L1 and each row is read sequentially.
    fn pack(&self, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
        let rb = cols / 32 * self.block;
        let rows = src[..n * rb].chunks_exact(rb.max(1));
        pack_legacy(self, cols / 32, rows, out)
    }

    fn unpack(&self, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
        let l = self;
        let rb = cols / 32 * l.block;
        let nb = cols / 32;
        let bb = l.block;
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

    /// −offset·Σq of each (token, block); empty for the formats with a min.
    fn bias(&self, rows: &[ActRow], cols: usize) -> Vec<i32> {
        let (offset, nb) = (self.offset, cols / 32);
        if offset == 0 {
            return Vec::new();
        }
        rows.iter()
            .flat_map(|a| {
                a.qs[..nb * 32]
                    .chunks_exact(32)
                    .map(|b| -offset * b.iter().map(|&q| q as i32).sum::<i32>())
            })
            .collect()
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

fn pack_legacy<'a>(l: &Legacy, nb: usize, rows: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) {
    let units = Units::new(l.quants, l.mins);
    let flip = u32::from_ne_bytes([l.flip; 4]);
    let mut blocks: Vec<_> = rows.map(|r| r.chunks_exact(l.block)).collect();
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

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::{q4_0_q8_0, q4_0_q8_0_stream, q4_1_q8_1, q5_0_q8_0, q5_1_q8_1, q8_0_q8_0};

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
    use crate::packed::layout::{Out, Tokens, Units};
    use crate::packed::simd::{
        each_token, halves, load, prefetch, prefetch_far, prefetch_sparse, splat, steps,
    };

    /// Runs `$body` for each block `$b` of a legacy group at `$gp` (`$nb` blocks in the units
    /// `$u`, `layout::Units`), in memory order, with `$q` pointing at its quant registers,
    /// `$h` at its heads and `$s` its [`Share`] of its unit's lines (a group is one stream),
    /// which the body asks for a part at each step of its first token's dot.
    macro_rules! each_block {
        ($gp:expr, $nb:expr, $u:expr, |$q:ident, $h:ident, $b:ident, $s:ident| $body:block) => {{
            let (gp, nb, u): (*const u8, usize, Units) = ($gp, $nb, $u);
            debug_assert!(u.per == 1 || u.per == 2);
            let full = nb / u.per;
            for n in 0..full {
                let base = gp.add(u.bytes(n * u.per));
                let unit = Share {
                    at: base,
                    lines: u.bytes(u.per) / 64,
                    sparse: false,
                };
                for i in 0..u.per {
                    // Block i's share of the unit's lines, each line once.
                    let ($q, $h, $b, $s) = (
                        base.add(i * u.region),
                        base.add(u.per * u.region + i * u.heads),
                        n * u.per + i,
                        unit.part(i, u.per),
                    );
                    $body
                }
            }
            if full * u.per < nb {
                // The last unit, one block short.
                let base = gp.add(u.bytes(full * u.per));
                let lines = u.bytes(1).div_ceil(64);
                let share = Share {
                    at: base,
                    lines,
                    sparse: false,
                };
                let ($q, $h, $b, $s) = (base, base.add(u.region), nb - 1, share);
                $body
            }
        }};
    }

    /// A block's share of its unit's lines: `lines` lines at `at`, asked for every line or,
    /// `sparse`, one in four (`prefetch_sparse`: the Q4_0 stream kernel).
    #[derive(Clone, Copy)]
    struct Share {
        at: *const u8,
        lines: usize,
        sparse: bool,
    }

    impl Share {
        /// Part i of `parts`: lines i·n / parts..(i + 1)·n / parts, each line in one part.
        #[inline(always)]
        fn part(self, i: usize, parts: usize) -> Share {
            let (from, to) = (i * self.lines / parts, (i + 1) * self.lines / parts);
            Share {
                at: self.at.wrapping_add(64 * from),
                lines: to - from,
                sparse: self.sparse,
            }
        }

        /// Asks for part `k` of `steps` (`prefetch`).
        /// With a block's lines asked for at once as it started, Q4_1/Q5_1 packed read 16.0-16.2
        /// GB/s from memory at 1 thread where one part a step of the dot reads 16.4-16.8 (Q8_0
        /// +1-2%, Q4_0/Q5_0 the same).
        #[inline(always)]
        fn step(self, k: usize, steps: usize) {
            let part = self.part(k, steps);
            prefetch(part.at, 64 * part.lines);
        }

        /// [`Share::step`] further ahead, for the nibble formats (`prefetch_far`), or
        /// sparsely.
        #[inline(always)]
        fn step_far(self, k: usize, steps: usize) {
            let part = self.part(k, steps);
            if self.sparse {
                prefetch_sparse(part.at, 64 * part.lines);
            } else {
                prefetch_far(part.at, 64 * part.lines);
            }
        }
    }

    /// The registers (and activation words) step j of a nibble block's dot takes: j and
    /// 4 + j (elements 4j.. and 16 + 4j..), or, in the stream kernel, 2j and 2j + 1 (front
    /// to back; the same exact integer sums in another order).
    #[inline(always)]
    fn step_registers<const STREAM: bool>(j: usize) -> (usize, usize) {
        if STREAM {
            (2 * j, 2 * j + 1)
        } else {
            (j, 4 + j)
        }
    }

    /// Token activation bytes 4i..4i + 4 of the block at `qs`, in every lane.
    #[inline(always)]
    unsafe fn word(qs: *const i8, i: usize) -> __m512i {
        splat(qs.add(4 * i).cast())
    }

    /// A tile's per-token activation pointers, taken once a group (the block loop then reads
    /// them without bounds checks): quants, block d's, block sums (Q8_1 s), integer biases.
    struct TileActs<const NT: usize> {
        qs: [*const i8; NT],
        d: [*const f32; NT],
        dsum: [*const f32; NT],
        bias: [*const i32; NT],
    }

    impl<const NT: usize> TileActs<NT> {
        fn new(tk: &Tokens, t0: usize, nb: usize) -> Self {
            let rows = &tk.rows[t0..t0 + NT];
            TileActs {
                qs: std::array::from_fn(|t| rows[t].qs.as_ptr()),
                d: std::array::from_fn(|t| rows[t].d.as_ptr()),
                dsum: std::array::from_fn(|t| rows[t].dsum.as_ptr()),
                bias: std::array::from_fn(|t| tk.bias.as_ptr().wrapping_add((t0 + t) * nb)),
            }
        }
    }

    /// One token's Q8_0 block dot into `acc`: `w(j)` the block's register j, `dw` the rows'
    /// scales, `qs` the token's block quants, `bias` its −128·Σq, `da` its block d; asks for
    /// the block's `share` (the first token's) a part a step.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q8_0_token(
        acc: __m512,
        w: &impl Fn(usize) -> __m512i,
        dw: __m512,
        qs: *const i8,
        bias: i32,
        da: f32,
        share: Option<Share>,
    ) -> __m512 {
        // Two chains halve the dependent `vpdpbusd` latency; integer, so exact.
        let mut s0 = _mm512_set1_epi32(bias);
        let mut s1 = _mm512_setzero_si512();
        for j in (0..8).step_by(2) {
            if let Some(share) = share {
                share.step(j / 2, 4);
            }
            s0 = _mm512_dpbusd_epi32(s0, w(j), word(qs, j));
            s1 = _mm512_dpbusd_epi32(s1, w(j + 1), word(qs, j + 1));
        }
        let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), d, acc)
    }

    /// Q8_0: w = d·q, stored as q + 128 (unsigned), the −128·Σq in the token's bias.
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(crate) unsafe fn q8_0_q8_0<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / 32;
        let units = const { Q8_0.units() };
        debug_assert!(g.len() >= units.bytes(nb));
        let a = TileActs::<NT>::new(tk, t0, nb);
        let mut acc = [_mm512_setzero_ps(); NT];
        each_block!(g.as_ptr(), nb, units, |q, h, b, share| {
            let w = steps!(NT, 8, |j| load(q.add(64 * j)), _mm512_setzero_si512());
            let dw = halves(h);
            each_token!(NT, t, {
                let (qs, bias, da) = (a.qs[t].add(32 * b), *a.bias[t].add(b), *a.d[t].add(b));
                let share = (t == 0).then_some(share);
                acc[t] = q8_0_token(acc[t], &w, dw, qs, bias, da, share);
            });
        });
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// Step j of a Q4 block's dot (its 4 registers at `q`): the low nibbles of register j
    /// (lane r: elements 4j..4j + 4 of row r) and its high nibbles (elements 16 + 4j..).
    #[inline(always)]
    unsafe fn nibbles(q: *const u8, j: usize) -> (__m512i, __m512i) {
        let m = _mm512_set1_epi8(0x0F);
        let r = load(q.add(64 * j));
        (
            _mm512_and_si512(r, m),
            _mm512_and_si512(_mm512_srli_epi16::<4>(r), m),
        )
    }

    /// Step j of a Q5_0/Q5_1 block's dot: the quants u = nibble + 16·h of its nibble
    /// register j at `q`, laid out as [`nibbles`], each byte's fifth bit h taken from the
    /// fifth register (`q + 256`, [`spread_qh`]: bit K of a byte belongs to nibble
    /// register K, low nibbles' K = 0..4, high nibbles' 4..8), moved to 0x10 by one 16-bit
    /// shift (bit K of each byte to bit 4 of the same byte).
    #[inline(always)]
    unsafe fn nibbles5(q: *const u8, j: usize) -> (__m512i, __m512i) {
        let (m, bit) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
        let (r, h) = (load(q.add(64 * j)), load(q.add(256)));
        let (low, high) = match j {
            0 => (_mm512_slli_epi16::<4>(h), h),
            1 => (_mm512_slli_epi16::<3>(h), _mm512_srli_epi16::<1>(h)),
            2 => (_mm512_slli_epi16::<2>(h), _mm512_srli_epi16::<2>(h)),
            _ => (_mm512_slli_epi16::<1>(h), _mm512_srli_epi16::<3>(h)),
        };
        // (a & 0x0F) | (b & 0x10): 0xEC is a & c | b over (a, b & 0x10, c = 0x0F).
        let join = |a, b| _mm512_ternarylogic_epi32::<0xEC>(a, _mm512_and_si512(b, bit), m);
        (join(r, low), join(_mm512_srli_epi16::<4>(r), high))
    }

    /// Σ nibble·activation of one block for one token (its block quants at `qs`), starting at
    /// `start`: step j takes `quants(j)`, elements 4j..4j + 4 and 16 + 4j..; asks for the
    /// block's `share` (the first token's) a part a step.
    #[inline(always)]
    unsafe fn nibble_dot<const STREAM: bool>(
        start: i32,
        quants: &impl Fn(usize) -> (__m512i, __m512i),
        qs: *const i8,
        share: Option<Share>,
    ) -> __m512i {
        let mut s0 = _mm512_set1_epi32(start);
        let mut s1 = _mm512_setzero_si512();
        for j in 0..4 {
            if let Some(share) = share {
                share.step_far(j, 4);
            }
            let (lo, hi) = quants(j);
            let (wl, wh) = step_registers::<STREAM>(j);
            s0 = _mm512_dpbusd_epi32(s0, lo, word(qs, wl));
            s1 = _mm512_dpbusd_epi32(s1, hi, word(qs, wh));
        }
        _mm512_add_epi32(s0, s1)
    }

    /// Q4_0, Q5_0 (`MINS` false): w = d·(u − o), the −o·Σq in the token's bias; Q4_1, Q5_1
    /// (true): w = d·u + m, so Σ w·x = d·d_a·Σ u·q + m·s (s = d_a·Σq, the Q8_1 block's sum).
    /// Q4_0 a pair at a time (`Units::paired`), an odd last block alone; the others a block at
    /// a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    unsafe fn nibble_blocks<
        const NT: usize,
        const MINS: bool,
        const FIFTH: bool,
        const STREAM: bool,
    >(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / 32;
        let units = const {
            match (MINS, FIFTH) {
                (false, false) => Q4_0.units(),
                (true, false) => Q4_1.units(),
                (false, true) => Q5_0.units(),
                (true, true) => Q5_1.units(),
            }
        };
        debug_assert!(g.len() >= units.bytes(nb));
        let a = TileActs::<NT>::new(tk, t0, nb);
        let mut acc = [_mm512_setzero_ps(); NT];
        let zero = (_mm512_setzero_si512(), _mm512_setzero_si512());
        if !units.paired() {
            each_block!(g.as_ptr(), nb, units, |q, h, b, share| {
                let step = |j| if FIFTH { nibbles5(q, j) } else { nibbles(q, j) };
                let quants = steps!(NT, 4, step, zero);
                block_tokens::<NT, MINS, false>(&mut acc, &a, quants, (h, 1.0), b, Some(share));
            });
        } else {
            let gp = g.as_ptr();
            let (low4, high4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0xF0u8 as i8));
            for n in 0..nb / 2 {
                let (q, b) = (gp.add(units.bytes(2 * n)), 2 * n);
                let h = q.add(2 * units.region);
                // Each block asks for half of the pair's lines.
                let unit = Share {
                    at: q,
                    lines: units.bytes(2) / 64,
                    sparse: STREAM,
                };
                // Block A's quants masked, B's in place (16·u, `Units::paired`): B's sum is 16
                // times its dot, and its d's carry 1/16 (exact: powers of two). Step j takes
                // the registers of `step_registers`.
                let pair = |m| {
                    move |j: usize| {
                        let (a, b) = step_registers::<STREAM>(j);
                        let (r0, r1) = (load(q.add(64 * a)), load(q.add(64 * b)));
                        (_mm512_and_si512(r0, m), _mm512_and_si512(r1, m))
                    }
                };
                let quants = steps!(NT, 4, pair(low4), zero);
                let first = Some(unit.part(0, 2));
                block_tokens::<NT, MINS, STREAM>(&mut acc, &a, quants, (h, 1.0), b, first);
                let quants = steps!(NT, 4, pair(high4), zero);
                let hb = (h.add(units.heads), 16.0);
                let second = Some(unit.part(1, 2));
                block_tokens::<NT, MINS, STREAM>(&mut acc, &a, quants, hb, b + 1, second);
            }
            if nb % 2 == 1 {
                let q = gp.add(units.bytes(nb - 1));
                prefetch_far(q, units.bytes(1));
                let quants = steps!(NT, 4, |j| nibbles(q, j), zero);
                let h = (q.add(units.region), 1.0);
                block_tokens::<NT, MINS, false>(&mut acc, &a, quants, h, nb - 1, None);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// Adds block `b` (step j's quants `quants(j)`, entered as f·u, [`nibble_dot`]; heads at
    /// `h.0`, f = `h.1`) times each token of the tile to its accumulator, asking for `share` a
    /// part a step of the first token's dot. Q4/Q5 `_0` (`MINS` false) start each dot at f
    /// times the token's bias; the float part is the same for every f: cvt(f·s) = f·cvt(s) and
    /// (d/f)·d_a = (d·d_a)/f exactly (f a power of two), and the mins are not scaled.
    #[inline(always)]
    unsafe fn block_tokens<const NT: usize, const MINS: bool, const STREAM: bool>(
        acc: &mut [__m512; NT],
        a: &TileActs<NT>,
        quants: impl Fn(usize) -> (__m512i, __m512i),
        (h, f): (*const u8, f32),
        b: usize,
        share: Option<Share>,
    ) {
        let mut sums = [_mm512_setzero_si512(); NT];
        let (mut dw, mut mw) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        if !STREAM {
            (dw, mw) = block_heads::<MINS>(h, f);
        }
        each_token!(NT, t, {
            let start = if MINS {
                0
            } else {
                *a.bias[t].add(b) * f as i32
            };
            let share = if t == 0 { share } else { None };
            let s = nibble_dot::<STREAM>(start, &quants, a.qs[t].add(32 * b), share);
            if STREAM {
                sums[t] = s;
            } else {
                acc[t] = add_block::<MINS>(
                    acc[t],
                    s,
                    (dw, mw),
                    *a.d[t].add(b),
                    a.dsum[t].wrapping_add(b),
                );
            }
        });
        if STREAM {
            // The d's (the unit's last line) after the dots: the stream stays in order.
            std::arch::asm!("", options(nostack, preserves_flags));
            (dw, mw) = block_heads::<MINS>(h, f);
            each_token!(NT, t, {
                acc[t] = add_block::<MINS>(
                    acc[t],
                    sums[t],
                    (dw, mw),
                    *a.d[t].add(b),
                    a.dsum[t].wrapping_add(b),
                );
            });
        }
    }

    /// A block's d's (over f) and, with `MINS`, its m's, as f32.
    #[inline(always)]
    unsafe fn block_heads<const MINS: bool>(h: *const u8, f: f32) -> (__m512, __m512) {
        let dw = _mm512_mul_ps(halves(h), _mm512_set1_ps(1.0 / f));
        (dw, if MINS { halves(h.add(32)) } else { dw })
    }

    /// A token's block sum `s` added to its accumulator: cvt(s)·(dw·d_a), and with `MINS`
    /// the min term mw·dsum.
    #[inline(always)]
    unsafe fn add_block<const MINS: bool>(
        acc: __m512,
        s: __m512i,
        (dw, mw): (__m512, __m512),
        da: f32,
        dsum: *const f32,
    ) -> __m512 {
        let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
        let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc);
        if MINS {
            _mm512_fmadd_ps(mw, _mm512_set1_ps(*dsum), acc)
        } else {
            acc
        }
    }

    /// Q4_0 ([`nibble_blocks`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    pub(crate) unsafe fn q4_0_q8_0<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        nibble_blocks::<NT, false, false, false>(g, cols, tk, t0, out)
    }

    /// Q4_0 for one token, its pairs read front to back and asked for sparsely
    /// (`PackedFormat::stream`).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    pub(crate) unsafe fn q4_0_q8_0_stream(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        nibble_blocks::<1, false, false, true>(g, cols, tk, t0, out)
    }

    /// Q4_1 ([`nibble_blocks`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    pub(crate) unsafe fn q4_1_q8_1<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        nibble_blocks::<NT, true, false, false>(g, cols, tk, t0, out)
    }

    /// Q5_0 ([`nibble_blocks`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    pub(crate) unsafe fn q5_0_q8_0<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        nibble_blocks::<NT, false, true, false>(g, cols, tk, t0, out)
    }

    /// Q5_1 ([`nibble_blocks`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at VNNI.
    pub(crate) unsafe fn q5_1_q8_1<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        nibble_blocks::<NT, true, true, false>(g, cols, tk, t0, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{group_bytes, row_bytes, test_bytes as bytes, GROUP_ROWS};
    use super::*;
    use crate::formats::GgmlType;

    /// The layout by its definition (module docs), byte by byte.
    fn packed_by_definition(
        ty: GgmlType,
        l: &Legacy,
        cols: usize,
        src: &[u8],
        n: usize,
    ) -> Vec<u8> {
        let rb = row_bytes(ty, cols);
        let mut out = vec![0u8; group_bytes(ty, cols)];
        for r in 0..n {
            let row = &src[r * rb..(r + 1) * rb];
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
        out
    }

    #[test]
    fn packing_follows_the_layout_and_unpacks() {
        let cases = [
            (GgmlType::Q8_0, &Q8_0, 32),
            (GgmlType::Q8_0, &Q8_0, 576),
            (GgmlType::Q8_0, &Q8_0, 96),
            (GgmlType::Q4_0, &Q4_0, 96),
            (GgmlType::Q4_0, &Q4_0, 128),
            (GgmlType::Q4_1, &Q4_1, 576),
            (GgmlType::Q4_1, &Q4_1, 96),
            (GgmlType::Q4_1, &Q4_1, 32),
            (GgmlType::Q5_0, &Q5_0, 64),
            (GgmlType::Q5_0, &Q5_0, 160),
            (GgmlType::Q5_1, &Q5_1, 96),
        ];
        for (ty, l, cols) in cases {
            assert_eq!(l.block, ty.type_size(), "{ty}");
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * row_bytes(ty, cols), (cols * 31 + n) as u64);
                let mut out = vec![0u8; group_bytes(ty, cols)];
                l.pack(cols, &src, n, &mut out);
                assert!(
                    out == packed_by_definition(ty, l, cols, &src, n),
                    "{ty} {n}x{cols}"
                );
                let mut back = vec![0u8; src.len()];
                l.unpack(cols, &out, n, &mut back);
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
