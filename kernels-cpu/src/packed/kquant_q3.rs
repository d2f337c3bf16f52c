//! The packed group layout of Q3_K (packed by `kquant::pack_group`) and its kernel.
//!
//! As for the other K-quants (`kquant`), a group holds, for each super-block b of its 16
//! rows, one chunk of whole 64-byte registers, each field's bytes 4j..4j + 4 of row r in
//! lane r of register j:
//! - the 12 scale bytes as 3 registers (offset 0);
//! - `hmask` (32 bytes) as 8 registers (offset 192): lane r of register k holds
//!   `hmask[4k..4k + 4]`, the third bits of elements 128h + 32s + 4k + i (bit 4h + s);
//! - `qs` (64 bytes) as 16 registers (offset 704): register 8h + k holds `qs[32h + 4k..]`,
//!   elements 128h + 32s + 4k + i at bit shift 2s.
//!
//! 16 × 108 = 1728 bytes a chunk; the 16 rows' d's (f16, 32 bytes a super-block) follow all
//! the chunks, at the group's end, since 16 × 110 = 1760 is not whole registers. So a
//! group takes exactly its rows' GGUF bytes, each byte in one place.

use super::kquant::{Field, KLayout, Place};
use super::GROUP_ROWS;

/// Bytes of a Q3_K super-block chunk (16 rows, without the d's).
pub(super) const Q3_K_CHUNK: usize = GROUP_ROWS * 108;
/// Q3_K chunk offsets: scales, hmask, qs.
pub(super) const Q3_K_SCALES: usize = 0;
pub(super) const Q3_K_HMASK: usize = 192;
pub(super) const Q3_K_QS: usize = 704;

pub(super) const Q3_K: KLayout = KLayout {
    block: 110,
    chunk: Q3_K_CHUNK,
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

#[cfg(target_arch = "x86_64")]
pub(super) use kernel::q3_k;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{Q3_K, Q3_K_HMASK, Q3_K_QS, Q3_K_SCALES};
    use crate::formats::blocks::QK_K;
    use crate::packed::avx512::{halves, load, prefetch, splat, Out};
    use crate::packed::layout::Tokens;

    /// Q3_K's 16 sub-block scales (sc − 32, in −32..=31) of the 16 rows, each an i16 in
    /// the low half of its lane, the high half zero (for `vpmaddwd`, `quarter_dot`), from
    /// the 3 scale registers at `p` (lane r: row r's 12 scale bytes), lane-parallel: scale
    /// j's low nibble is nibble j / 8 of byte j % 8, its top two bits bits 2·(j / 4) of
    /// byte 8 + j % 4; so byte i of `s[m]` below is scale 4m + i.
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
        let low16 = _mm512_set1_epi32(0xFFFF);
        let mut sc = [_mm512_setzero_si512(); 16];
        for (m, s) in s.into_iter().enumerate() {
            sc[4 * m] = _mm512_sub_epi32(_mm512_and_si512(s, byte), off);
            sc[4 * m + 1] =
                _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32::<8>(s), byte), off);
            sc[4 * m + 2] =
                _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32::<16>(s), byte), off);
            sc[4 * m + 3] = _mm512_sub_epi32(_mm512_srli_epi32::<24>(s), off);
        }
        sc.map(|v| _mm512_and_si512(v, low16))
    }

    /// The unsigned three-bit quants u = low + 4·hbit (0..=7) of quarter s of half h
    /// (elements 128h + 32s..+32): low = bits 2s..2s + 2 of `q[k]` (the half's qs
    /// registers), hbit = bit 4h + s of `hm[k]`, for k = 0..8 (4 elements each).
    #[inline(always)]
    unsafe fn quarter<const H: usize, const S: usize>(
        q: &[__m512i; 8],
        hm: &[__m512i; 8],
    ) -> [__m512i; 8] {
        let (three, four) = (_mm512_set1_epi8(3), _mm512_set1_epi8(4));
        let mut u = [_mm512_setzero_si512(); 8];
        for (k, u) in u.iter_mut().enumerate() {
            let low = match S {
                0 => q[k],
                1 => _mm512_srli_epi32::<2>(q[k]),
                2 => _mm512_srli_epi32::<4>(q[k]),
                _ => _mm512_srli_epi32::<6>(q[k]),
            };
            let low = _mm512_and_si512(low, three);
            // Bit 4h + s of each byte to bit 2 (the bits a 32-bit shift moves across bytes
            // are masked off by `four`).
            let high = match 4 * H + S {
                0 => _mm512_slli_epi32::<2>(hm[k]),
                1 => _mm512_slli_epi32::<1>(hm[k]),
                2 => hm[k],
                3 => _mm512_srli_epi32::<1>(hm[k]),
                4 => _mm512_srli_epi32::<2>(hm[k]),
                5 => _mm512_srli_epi32::<3>(hm[k]),
                6 => _mm512_srli_epi32::<4>(hm[k]),
                _ => _mm512_srli_epi32::<5>(hm[k]),
            };
            // low | (high & 4) in one `vpternlogd` (a | (b & c)).
            *u = _mm512_ternarylogic_epi32::<0xF8>(low, high, four);
        }
        u
    }

    /// Adds quarter s of half h (quants `u`, sub-blocks j = 8h + 2s and j + 1) times each
    /// token of the tile, scaled, to its `isum`. Each sub-block's dot starts at −4·bsum_j
    /// (`token_bias`): D = Σ (u − 4)·a, exact, and |D| ≤ 16·4·128 = 2¹³, an i16 (its lane's
    /// high half the sign); `vpmaddwd` against the scale (an i16 over a zero high half,
    /// `q3_k_scales`) gives D·sc exactly, one uop where `vpmulld` takes two.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn quarter_dot<const NT: usize>(
        tk: &Tokens,
        t0: usize,
        b: usize,
        nb: usize,
        (h, s): (usize, usize),
        u: &[__m512i; 8],
        sc: &[__m512i; 16],
        isum: &mut [__m512i; NT],
    ) {
        let j = 8 * h + 2 * s;
        for (t, isum) in isum.iter_mut().enumerate() {
            let t = t0 + t;
            let x = tk.rows[t].q8_k.get_unchecked(b).qs.as_ptr();
            let x = x.add(128 * h + 32 * s).cast::<u8>();
            let p = tk.bias.as_ptr().add((t * nb + b) * 16 + j).cast::<u8>();
            let mut s0 = splat(p);
            let mut s1 = splat(p.add(4));
            for k in 0..4 {
                s0 = _mm512_dpbusd_epi32(s0, u[k], splat(x.add(4 * k)));
                s1 = _mm512_dpbusd_epi32(s1, u[4 + k], splat(x.add(16 + 4 * k)));
            }
            let s = _mm512_add_epi32(
                _mm512_madd_epi16(s0, sc[j]),
                _mm512_madd_epi16(s1, sc[j + 1]),
            );
            *isum = _mm512_add_epi32(*isum, s);
        }
    }

    /// Group `g` (a packed Q3_K group) times `NT` tokens from `t0` into `out[t]`.
    ///
    /// # Safety
    /// As `avx512::group`, for `NT` tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(in crate::packed) unsafe fn q3_k<const NT: usize>(
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
        let mut acc = [_mm512_setzero_ps(); NT];
        for b in 0..nb {
            let (c, ds) = units.block(nb, b);
            let (c, ds) = (gp.add(c), gp.add(ds));
            if b % units.per == 0 {
                // The unit's d's, a line past its chunks.
                crate::prefetch::line(ds);
            }
            // Up to the first half's quants now, the second half's as it starts: the whole
            // chunk at once was slower from memory (two-level prefetch, `prefetch::ahead`).
            prefetch(c, Q3_K_QS + 512);
            let sc = q3_k_scales(c.add(Q3_K_SCALES));
            let hm: [__m512i; 8] = std::array::from_fn(|k| load(c.add(Q3_K_HMASK + 64 * k)));
            let mut isum = [_mm512_setzero_si512(); NT];
            let q: [__m512i; 8] = std::array::from_fn(|k| load(c.add(Q3_K_QS + 64 * k)));
            macro_rules! dot {
                ($q:ident, $h:literal, $s:literal) => {
                    let u = quarter::<$h, $s>(&$q, &hm);
                    quarter_dot(tk, t0, b, nb, ($h, $s), &u, &sc, &mut isum);
                };
            }
            dot!(q, 0, 0);
            dot!(q, 0, 1);
            dot!(q, 0, 2);
            dot!(q, 0, 3);
            prefetch(c.add(Q3_K_QS + 512), 512);
            let q: [__m512i; 8] = std::array::from_fn(|k| load(c.add(Q3_K_QS + 64 * (8 + k))));
            dot!(q, 1, 0);
            dot!(q, 1, 1);
            dot!(q, 1, 2);
            dot!(q, 1, 3);
            let dw = halves(ds);
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
    use super::super::kquant::{pack_group, unpack_group, MAX_BLOCK};
    use super::super::test_bytes as bytes;
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

    /// Every byte of a group has one place, and packing/unpacking follow the definition.
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
                let mut got = vec![0u8; size];
                pack_group(GgmlType::Q3_K, nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                unpack_group(GgmlType::Q3_K, nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }
}
