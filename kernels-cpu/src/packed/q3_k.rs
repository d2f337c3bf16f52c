//! Q3_K's packed group: its layout (a [`KLayout`] table), the recoding of its quants, the
//! sums its kernel starts from, and its kernel (AVX-512 VNNI).
//!
//! As for the other K-quants (`layout`), a group holds, for each super-block b of its 16
//! rows, one chunk of whole 64-byte registers, each field's bytes 4j..4j + 4 of row r in
//! lane r of register j:
//! - the 12 scale bytes as 3 registers (offset 0);
//! - `hmask` (32 bytes) as 8 registers (offset 192): lane r of register k holds
//!   `hmask[4k..4k + 4]`, the third bits of elements 128h + 32s + 4k + i (bit 4h + s);
//! - `qs` (64 bytes) as 16 registers (offset 704): register 8h + k holds `qs[32h + 4k..]`,
//!   elements 128h + 32s + 4k + i at bit shift 2s;
//!
//! then the 24 registers of `hmask` and `qs` are recoded in place ([`recode`]: bits move,
//! not bytes) into 8 sets of 3 registers, in the order the kernel reads them.
//!
//! 16 × 108 = 1728 bytes a chunk; the 16 rows' d's (f16, 32 bytes a super-block) follow all
//! the chunks, at the group's end, since 16 × 110 = 1760 is not whole registers. So a
//! group takes exactly its rows' GGUF bytes, each byte in one place.

use super::layout::{
    lane_word, set_lane_word, Field, KLayout, Place, GROUP_ROWS, LOW1, LOW2, LOW3,
};
use crate::dot::ActRow;

/// Bytes of a Q3_K super-block chunk (16 rows, without the d's).
pub(super) const Q3_K_CHUNK: usize = GROUP_ROWS * 108;
/// Q3_K chunk offsets: scales, hmask, qs.
pub(super) const Q3_K_SCALES: usize = 0;
pub(super) const Q3_K_HMASK: usize = 192;
pub(super) const Q3_K_QS: usize = 704;
/// Bytes of a chunk's quants (`hmask` and `qs`, from `Q3_K_HMASK`), placed or recoded.
pub(super) const Q3_K_QUANTS: usize = 1536;
/// Bytes of one recoded set (registers A, B, C; [`recode`]).
pub(super) const Q3_K_SET: usize = 192;

/// The factor each sub-block's quants enter the dot with, by sub-block j mod 8 ([`recode`]:
/// g0..g7 of a set).
pub(super) const FACTORS: [i32; 8] = [1, 8, 32, 1, 8, 16, 1, 8];

/// Lane r's word of placed register `reg` (the 8 `hmask` registers, then the 16 `qs`).
fn lane(reg: usize, r: usize) -> usize {
    64 * reg + 4 * r
}

/// Recodes a chunk's quants as placed by the fields (8 `hmask` registers, then 16 `qs`)
/// into 8 sets of registers A, B, C (set k at `Q3_K_SET`·k), lane r byte i of set k
/// holding row r's quants g_n = u (low + 4·hbit, 0..=7) of element 4(k mod 4) + i of
/// sub-block 8(k / 4) + n:
///
/// A = g0 | g1 << 3 | (g2 & 3) << 6,  B = g3 | g4 << 3 | (g5 & 3) << 6,
/// C = g6 | g7 << 3 | (g5 >> 2) << 6 | (g2 >> 2) << 7.
///
/// So six of the eight are one mask each, in place (g or 8·g), and g2, g5 a shift, a mask
/// and a select (32·g2, 16·g5; [`FACTORS`]): twelve operations for 8 quant registers where
/// the `hmask`/`qs` split took about 29 (shifts for the low bits and the high bit of most).
///
/// Element 128h + 32s + l (ggml's `dequantize_row_q3_K`) has its low bits at 2s of
/// `qs[32h + l]` and its high bit at 4h + s of `hmask[l]`; sub-block 8h + n is s = n / 2,
/// l = 16·(n mod 2) + …, so a lane's four bytes i are one word of each register.
fn recode(quants: &mut [u8]) {
    let mut placed = [0u8; Q3_K_QUANTS];
    placed.copy_from_slice(&quants[..Q3_K_QUANTS]);
    for r in 0..GROUP_ROWS {
        for k in 0..8 {
            let (h, kk) = (k / 4, k % 4);
            let g: [u32; 8] = std::array::from_fn(|n| {
                let s = n / 2;
                let low = lane_word(&placed, lane(8 + 8 * h + 4 * (n % 2) + kk, r)) >> (2 * s);
                let high = lane_word(&placed, lane(4 * (n % 2) + kk, r)) >> (4 * h + s);
                low & LOW2 | (high & LOW1) << 2
            });
            let coded = [
                g[0] | g[1] << 3 | (g[2] & LOW2) << 6,
                g[3] | g[4] << 3 | (g[5] & LOW2) << 6,
                g[6] | g[7] << 3 | (g[5] >> 2 & LOW1) << 6 | (g[2] >> 2 & LOW1) << 7,
            ];
            for (j, v) in coded.into_iter().enumerate() {
                set_lane_word(quants, Q3_K_SET * k + 64 * j + 4 * r, v);
            }
        }
    }
}

/// The inverse of [`recode`].
fn decode(quants: &mut [u8]) {
    let mut coded = [0u8; Q3_K_QUANTS];
    coded.copy_from_slice(&quants[..Q3_K_QUANTS]);
    quants[..Q3_K_QUANTS].fill(0);
    for r in 0..GROUP_ROWS {
        for k in 0..8 {
            let (h, kk) = (k / 4, k % 4);
            let [a, b, c] = [0, 1, 2].map(|j| lane_word(&coded, Q3_K_SET * k + 64 * j + 4 * r));
            let g = [
                a & LOW3,
                a >> 3 & LOW3,
                a >> 6 & LOW2 | (c >> 7 & LOW1) << 2,
                b & LOW3,
                b >> 3 & LOW3,
                b >> 6 & LOW2 | (c >> 6 & LOW1) << 2,
                c & LOW3,
                c >> 3 & LOW3,
            ];
            for (n, g) in g.into_iter().enumerate() {
                let s = n / 2;
                let qs = lane(8 + 8 * h + 4 * (n % 2) + kk, r);
                let hm = lane(4 * (n % 2) + kk, r);
                set_lane_word(quants, qs, lane_word(quants, qs) | (g & LOW2) << (2 * s));
                set_lane_word(
                    quants,
                    hm,
                    lane_word(quants, hm) | (g >> 2 & LOW1) << (4 * h + s),
                );
            }
        }
    }
}

pub(crate) const Q3_K: KLayout = KLayout {
    block: 110,
    chunk: Q3_K_CHUNK,
    recode: Some(recode_block),
    bias: token_bias,
    fields: &[
        Field {
            src: 0,
            len: 32,
            at: Place::Chunk(Q3_K_HMASK),
        },
        Field {
            src: 32,
            len: 64,
            at: Place::Chunk(Q3_K_QS),
        },
        Field {
            src: 96,
            len: 12,
            at: Place::Chunk(Q3_K_SCALES),
        },
        Field {
            src: 108,
            len: 2,
            at: Place::Tail,
        },
    ],
};

/// Recodes (`back` false) or decodes super-block `b`'s quants in the group `g` of `nb`
/// super-blocks ([`recode`]).
fn recode_block(g: &mut [u8], nb: usize, b: usize, back: bool) {
    let at = Q3_K.units().block(nb, b).0 + Q3_K_HMASK;
    let quants = &mut g[at..at + Q3_K_QUANTS];
    if back {
        decode(quants)
    } else {
        recode(quants)
    }
}

/// The integer sums each (token, super-block) starts from, 16 a super-block:
/// −4·f_j·bsum_j, which makes f_j·Σ (u − 4)·a exact from the unsigned quants
/// u = low + 4·hbit, entered as f_j·u ([`FACTORS`]).
fn token_bias(rows: &[ActRow]) -> Vec<i32> {
    rows.iter()
        .flat_map(|a| a.q8_k)
        .flat_map(|y| {
            let f = |j: usize| FACTORS[j % 8];
            std::array::from_fn::<i32, 16, _>(|j| -4 * f(j) * i32::from(y.bsums[j]))
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::q3_k_q8_k;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{FACTORS, Q3_K, Q3_K_HMASK, Q3_K_SCALES, Q3_K_SET};
    use crate::formats::blocks::QK_K;
    use crate::packed::layout::{Out, Tokens};
    use crate::packed::simd::{halves, load, prefetch, splat};

    /// Q3_K's 16 sub-block scales (sc − 32, in −32..=31) of the 16 rows as i32, times
    /// 32 / f_j (sub-block j's quants enter the dot as f_j·u, [`FACTORS`]; where f_j is 1,
    /// as an i16 in the low half of its lane, the high half zero), from the 3
    /// scale registers at `p` (lane r: row r's 12 scale bytes), lane-parallel: scale j's low
    /// nibble is nibble j / 8 of byte j % 8, its top two bits bits 2·(j / 4) of byte
    /// 8 + j % 4; so byte i of `s[m]` below is scale 4m + i.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn q3_k_scales(p: *const u8) -> [__m512i; 16] {
        let low4 = _mm512_set1_epi32(0x0f0f_0f0f);
        let low2 = _mm512_set1_epi32(0x0303_0303);
        let (w0, w1, w2) = (load(p), load(p.add(64)), load(p.add(128)));
        let top = |k| match k {
            0 => _mm512_slli_epi32::<4>(_mm512_and_si512(w2, low2)),
            1 => _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<2>(w2), low2)),
            2 => _mm512_and_si512(w2, _mm512_set1_epi32(0x3030_3030)),
            _ => _mm512_and_si512(_mm512_srli_epi32::<2>(w2), _mm512_set1_epi32(0x3030_3030)),
        };
        let s = [
            _mm512_or_si512(_mm512_and_si512(w0, low4), top(0)),
            _mm512_or_si512(_mm512_and_si512(w1, low4), top(1)),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(w0), low4), top(2)),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(w1), low4), top(3)),
        ];
        let (byte, off) = (_mm512_set1_epi32(0xFF), _mm512_set1_epi32(32));
        let mut sc = [_mm512_setzero_si512(); 16];
        for (m, s) in s.into_iter().enumerate() {
            sc[4 * m] = _mm512_sub_epi32(_mm512_and_si512(s, byte), off);
            sc[4 * m + 1] =
                _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32::<8>(s), byte), off);
            sc[4 * m + 2] =
                _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32::<16>(s), byte), off);
            sc[4 * m + 3] = _mm512_sub_epi32(_mm512_srli_epi32::<24>(s), off);
        }
        let low16 = _mm512_set1_epi32(0xFFFF);
        for (j, sc) in sc.iter_mut().enumerate() {
            *sc = match 32 / FACTORS[j % 8] {
                // An i16 over a zero high half, for `vpmaddwd` (`scale_dots`).
                32 => _mm512_and_si512(_mm512_slli_epi32::<5>(*sc), low16),
                4 => _mm512_slli_epi32::<2>(*sc),
                2 => _mm512_slli_epi32::<1>(*sc),
                _ => *sc,
            };
        }
        sc
    }

    /// The 8 quant registers g_n of the recoded set at `p` (`recode`), as f_n·u.
    #[inline(always)]
    unsafe fn set_quants(p: *const u8) -> [__m512i; 8] {
        let (a, b, c) = (load(p), load(p.add(64)), load(p.add(128)));
        let (low3, mid3) = (_mm512_set1_epi8(7), _mm512_set1_epi8(0x38));
        let (b56, b7) = (_mm512_set1_epi8(0x60), _mm512_set1_epi8(0x80u8 as i8));
        let (b45, b6) = (_mm512_set1_epi8(0x30), _mm512_set1_epi8(0x40));
        // 32·g2 = (a >> 1 & 0x60) | (c & 0x80), 16·g5 = (b >> 2 & 0x30) | (c & 0x40); 0xE4
        // is "m ? x : y" for (x, y, m).
        let g2 = _mm512_and_si512(_mm512_srli_epi16::<1>(a), b56);
        let g2 = _mm512_ternarylogic_epi32::<0xE4>(c, g2, b7);
        let g5 = _mm512_and_si512(_mm512_srli_epi16::<2>(b), b45);
        let g5 = _mm512_ternarylogic_epi32::<0xE4>(c, g5, b6);
        [
            _mm512_and_si512(a, low3),
            _mm512_and_si512(a, mid3),
            g2,
            _mm512_and_si512(b, low3),
            _mm512_and_si512(b, mid3),
            g5,
            _mm512_and_si512(c, low3),
            _mm512_and_si512(c, mid3),
        ]
    }

    /// The running dots of `P` tokens from `t0` for half h of super-block b (sub-blocks
    /// 8h..8h + 8), at their starts: the tokens' biases (`token_bias`).
    #[inline(always)]
    unsafe fn start_dots<const P: usize>(
        tk: &Tokens,
        t0: usize,
        b: usize,
        nb: usize,
        h: usize,
    ) -> [[__m512i; 8]; P] {
        let mut dots = [[_mm512_setzero_si512(); 8]; P];
        for (t, dots) in dots.iter_mut().enumerate() {
            let p = tk.bias.as_ptr().add(((t0 + t) * nb + b) * 16 + 8 * h);
            for (n, dot) in dots.iter_mut().enumerate() {
                *dot = splat(p.add(n).cast());
            }
        }
        dots
    }

    /// Adds set k of half h (quants `q`) to the running dots of `P` tokens from `t0`; with
    /// `lines`, asks for the set's 3 lines at the first token's first 3 steps.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn add_set<const P: usize>(
        tk: &Tokens,
        t0: usize,
        b: usize,
        h: usize,
        k: usize,
        q: &[__m512i; 8],
        lines: Option<*const u8>,
        dots: &mut [[__m512i; 8]; P],
    ) {
        let x: [*const u8; P] = std::array::from_fn(|t| {
            let x = tk.rows[t0 + t].q8_k.get_unchecked(b).qs.as_ptr();
            x.add(128 * h + 4 * k).cast::<u8>()
        });
        for (n, q) in q.iter().enumerate() {
            if let (Some(set), true) = (lines, n < 3) {
                prefetch(set.add(64 * n), 64);
            }
            for (dots, x) in dots.iter_mut().zip(x) {
                dots[n] = _mm512_dpbusd_epi32(dots[n], *q, splat(x.add(16 * n)));
            }
        }
    }

    /// Adds each token's finished dots of half h, times their scales, to its `isum`: by
    /// `vpmaddwd` (one uop where `vpmulld` takes two) where the quants entered unscaled (f
    /// 1: |D| ≤ 2¹³ is an i16, its lane's high half the sign, against the scale's zero high
    /// half), else `vpmulld`.
    #[inline(always)]
    unsafe fn scale_dots<const P: usize>(
        isum: &mut [__m512i],
        dots: [[__m512i; 8]; P],
        sc: &[__m512i; 16],
        h: usize,
    ) {
        for (isum, dots) in isum.iter_mut().zip(dots) {
            for (n, dot) in dots.into_iter().enumerate() {
                let s = if FACTORS[n] == 1 {
                    _mm512_madd_epi16(dot, sc[8 * h + n])
                } else {
                    _mm512_mullo_epi32(dot, sc[8 * h + n])
                };
                *isum = _mm512_add_epi32(*isum, s);
            }
        }
    }

    /// Group `g` (a packed Q3_K group) times `NT` tokens from `t0` into `out[t]`.
    ///
    /// Per half h, each token keeps the dots of sub-blocks 8h..8h + 8 (one accumulator
    /// each) over the half's 4 sets; sub-block j's starts at −4·f_j·bsum_j
    /// (`token_bias`): D = f_j·Σ (u − 4)·a, exact, |D| ≤ 32·16·4·128 = 2¹⁸. Times
    /// its scale (·32 / f_j, `q3_k_scales`), summed: 32·isum, exact (|sc·Σ (u − 4)·a| ≤
    /// 32·2¹³ a sub-block, 16 of them, times 32: 2²⁷). cvt(32·isum) = 32·cvt(isum) and
    /// (d/32)·d_a = (d·d_a)/32 exactly (powers of two), so the result is that of isum and d.
    ///
    /// # Safety
    /// As [`GroupFn`](crate::packed::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(crate) unsafe fn q3_k_q8_k<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / QK_K;
        let units = Q3_K.units();
        debug_assert!(g.len() >= units.bytes(nb));
        debug_assert!(tk.bias.len() >= (t0 + NT) * nb * 16);
        let gp = g.as_ptr();
        let thirty_second = _mm512_set1_ps(1.0 / 32.0);
        let mut acc = [_mm512_setzero_ps(); NT];
        for b in 0..nb {
            let (c, ds) = units.block(nb, b);
            let (c, ds) = (gp.add(c), gp.add(ds));
            if b % units.per == 0 {
                // The unit's d's, a line past its chunks.
                crate::prefetch::line(ds);
            }
            prefetch(c, Q3_K_HMASK);
            let sc = q3_k_scales(c.add(Q3_K_SCALES));
            let mut isum = [_mm512_setzero_si512(); NT];
            for h in 0..2 {
                let sets = c.add(Q3_K_HMASK + 4 * Q3_K_SET * h);
                if NT == 1 {
                    // Decode: each set's quants straight into the token's 8 running dots,
                    // its 3 lines asked for one a step.
                    let mut dots = start_dots::<1>(tk, t0, b, nb, h);
                    for k in 0..4 {
                        let set = sets.add(Q3_K_SET * k);
                        add_set(tk, t0, b, h, k, &set_quants(set), Some(set), &mut dots);
                    }
                    scale_dots(&mut isum, dots, &sc, h);
                } else {
                    // Prefill: the half's 32 quant registers once, then each token's dots
                    // (8 tokens' 64 running dots do not fit the register file: streaming
                    // the sets through all 8 ran 40% slower, two tokens at a time 17%).
                    prefetch(sets, 4 * Q3_K_SET);
                    let q: [[__m512i; 8]; 4] =
                        std::array::from_fn(|k| set_quants(sets.add(Q3_K_SET * k)));
                    for (t, isum) in isum.iter_mut().enumerate() {
                        let mut dots = start_dots::<1>(tk, t0 + t, b, nb, h);
                        for (k, q) in q.iter().enumerate() {
                            add_set(tk, t0 + t, b, h, k, q, None, &mut dots);
                        }
                        scale_dots(std::slice::from_mut(isum), dots, &sc, h);
                    }
                }
            }
            let dw = _mm512_mul_ps(halves(ds), thirty_second);
            for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                let da = _mm512_set1_ps(tk.rows[t0 + t].q8_k.get_unchecked(b).d);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), *acc);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::test_bytes as bytes;
    use super::super::layout::{GroupLayout, MAX_BLOCK};
    use super::*;
    use crate::formats::blocks::QK_K;
    use crate::formats::GgmlType;

    /// Where byte `i` of row r's super-block b goes in a group of `nb` super-blocks: the
    /// layout by its definition (module docs), written out without `KLayout`: super-blocks
    /// in pairs, the pair's two chunks then its two d slots (the last pair of an odd `nb`
    /// one super-block: chunk, then d's).
    fn q3_k_place(nb: usize, b: usize, r: usize, i: usize) -> usize {
        let pair = b / 2 * (2 * Q3_K_CHUNK + 64);
        let in_pair = if b / 2 * 2 + 1 < nb { 2 } else { 1 };
        let chunk = pair + b % 2 * Q3_K_CHUNK;
        let lane = |at: usize, j: usize| at + (j / 4) * 64 + 4 * r + j % 4;
        match i {
            0..32 => chunk + lane(Q3_K_HMASK, i),
            32..96 => chunk + lane(Q3_K_QS, i - 32),
            96..108 => chunk + lane(Q3_K_SCALES, i - 96),
            _ => pair + in_pair * Q3_K_CHUNK + 32 * (b % 2) + 2 * r + (i - 108),
        }
    }

    /// Every byte of a group has one place (before the quants are recoded), and
    /// packing/unpacking follow the definition.
    #[test]
    fn q3_k_packing_follows_the_layout_and_unpacks() {
        let l = &Q3_K;
        assert_eq!(l.block, GgmlType::Q3_K.type_size());
        assert!(l.block <= MAX_BLOCK);
        for nb in [1, 2, 3] {
            let size = GROUP_ROWS * nb * l.block;
            let mut hits = vec![0u8; size];
            for r in 0..GROUP_ROWS {
                for b in 0..nb {
                    for i in 0..l.block {
                        hits[q3_k_place(nb, b, r, i)] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "nb {nb}: group bytes");
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * nb * l.block, (nb * 37 + n) as u64);
                let mut want = vec![0u8; size];
                for r in 0..n {
                    for b in 0..nb {
                        for i in 0..l.block {
                            want[q3_k_place(nb, b, r, i)] = src[(r * nb + b) * l.block + i];
                        }
                    }
                }
                for b in 0..nb {
                    recode_block(&mut want, nb, b, false);
                }
                let mut got = vec![0u8; size];
                Q3_K.pack(nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                Q3_K.unpack(nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }

    /// Row r's quant u = low + 4·hbit (0..=7) of element e of a super-block from its placed
    /// quants, byte by byte: ggml's `dequantize_row_q3_K` indexing, element 128h + 32s + l
    /// from bits 2s of `qs[32h + l]` and bit 4h + s of `hmask[l]`.
    fn placed_quant(quants: &[u8], r: usize, e: usize) -> u8 {
        let at = |field: usize, l: usize| field + 64 * (l / 4) + 4 * r + l % 4;
        let (h, s, l) = (e / 128, e % 128 / 32, e % 32);
        let low = quants[at(Q3_K_QS - Q3_K_HMASK, 32 * h + l)] >> (2 * s) & 3;
        let hbit = quants[at(0, l)] >> (4 * h + s) & 1;
        low | hbit << 2
    }

    /// The elements of g0..g7 at set k, byte i: register k mod 4 of sub-blocks 8(k / 4) + n.
    fn set_elements(k: usize, i: usize) -> [usize; 8] {
        std::array::from_fn(|n| 16 * (8 * (k / 4) + n) + 4 * (k % 4) + i)
    }

    /// A recoded chunk gives every element its GGUF quant (`placed_quant`, ggml's indexing)
    /// by the kernel's rule (`set_quants`): g0, g1, g3, g4, g6, g7 masked in place, g2 and
    /// g5 from their low bits and the top bits of C; and decodes back.
    #[test]
    fn q3_k_recoding_keeps_every_element() {
        let placed = bytes(Q3_K_QUANTS, 11);
        let mut coded = placed.clone();
        super::recode(&mut coded);
        for r in 0..GROUP_ROWS {
            for k in 0..8 {
                for i in 0..4 {
                    let t = Q3_K_SET * k + 4 * r + i;
                    let (a, b, c) = (coded[t], coded[t + 64], coded[t + 128]);
                    let got = [
                        a & 7,
                        a & 0x38,
                        (a >> 1) & 0x60 | c & 0x80,
                        b & 7,
                        b & 0x38,
                        (b >> 2) & 0x30 | c & 0x40,
                        c & 7,
                        c & 0x38,
                    ];
                    for (n, e) in set_elements(k, i).into_iter().enumerate() {
                        let want = placed_quant(&placed, r, e) as i32 * FACTORS[n];
                        assert_eq!(got[n] as i32, want, "row {r}, set {k}, byte {i}, g{n}");
                    }
                }
            }
        }
        super::decode(&mut coded);
        assert!(coded == placed);
    }
}
