//! Q2_K's packed group: its layout (a [`KLayout`] table), the sums its kernel starts
//! from, and its kernel (AVX-512 VNNI).
//!
//! As for the other K-quants (`layout`), a group holds, for each super-block b of its 16
//! rows, one chunk of whole 64-byte registers (16 × 84 = 1344 bytes = 21 registers), each
//! field's bytes 4j..4j + 4 of row r in lane r of register j, f16s 2 bytes a lane:
//! - the 16 d's (offset 0), the 16 dmin's (offset 32);
//! - the 16 scale bytes as 4 registers (offset 64): lane r of register k holds row r's
//!   bytes 4k..4k + 4, scale (low nibble) and min (high nibble) of sub-blocks 4k..4k + 4;
//! - `qs` (64 bytes) as 16 registers (offset 320): register 8h + k holds `qs[32h + 4k..]`,
//!   elements 128h + 32s + 4k + i at bit shift 2s.
//!
//! So a group takes exactly its rows' GGUF bytes, each byte in one place.

use super::layout::{Field, KLayout, Place, GROUP_ROWS};
use crate::dot::ActRow;

/// Bytes of a Q2_K super-block chunk (16 rows).
pub(super) const Q2_K_CHUNK: usize = GROUP_ROWS * 84;
/// Q2_K chunk offsets: d's, dmin's, scales, qs.
pub(super) const Q2_K_D: usize = 0;
pub(super) const Q2_K_DMIN: usize = 32;
pub(super) const Q2_K_SCALES: usize = 64;
pub(super) const Q2_K_QS: usize = 320;

pub(crate) const Q2_K: KLayout = KLayout {
    block: 84,
    chunk: Q2_K_CHUNK,
    recode: None,
    bias: token_bias,
    fields: &[
        Field {
            src: 0,
            len: 16,
            at: Place::Chunk(Q2_K_SCALES),
        },
        Field {
            src: 16,
            len: 64,
            at: Place::Chunk(Q2_K_QS),
        },
        Field {
            src: 80,
            len: 2,
            at: Place::Chunk(Q2_K_D),
        },
        Field {
            src: 82,
            len: 2,
            at: Place::Chunk(Q2_K_DMIN),
        },
    ],
};

/// Q2_K's integer sums of each (token, super-block), 8 a super-block: the activation sums
/// of the mins as i16 pairs for `vpdpwssd`, (bsum_4k, bsum_4k+2) and (bsum_4k+1,
/// bsum_4k+3) for k = 0..4, the first of each pair in the low half (|bsum| ≤ 16·128, an
/// i16), matching the min pairs of the kernel's `scales`.
fn token_bias(rows: &[ActRow]) -> Vec<i32> {
    let pair = |a: i16, b: i16| (a as u16 as u32 | (b as u16 as u32) << 16) as i32;
    rows.iter()
        .flat_map(|a| a.q8_k)
        .flat_map(|y| {
            let s = &y.bsums;
            std::array::from_fn::<i32, 8, _>(|i| {
                let (k, odd) = (i / 2, i % 2);
                pair(s[4 * k + odd], s[4 * k + 2 + odd])
            })
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::q2_k_q8_k;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{Q2_K_CHUNK, Q2_K_D, Q2_K_DMIN, Q2_K_QS, Q2_K_SCALES};
    use crate::formats::blocks::QK_K;
    use crate::packed::layout::{Out, Tokens};
    use crate::packed::simd::{add_super_block, halves, load, splat};
    use crate::prefetch;

    /// Q2_K's sub-block scales and mins of the 16 rows, from the 4 scale registers at `p`
    /// (lane r of register k: row r's scale bytes 4k..4k + 4):
    /// - `sc[j]`: scale j times 4^(3 − s), s = (j mod 8) / 2 its quarter, whose quants enter
    ///   the dot in place, as 4^s·q (see `q2_k_tile`);
    /// - `mins`: the mins as i16 pairs (m_4k, m_4k+2), (m_4k+1, m_4k+3), k = 0..4,
    ///   matching the activation pairs of `token_bias`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn scales(p: *const u8) -> ([__m512i; 16], [__m512i; 8]) {
        let nibble = _mm512_set1_epi32(0x0F);
        let pairs = _mm512_set1_epi32(0x000F_000F);
        let mut sc = [_mm512_setzero_si512(); 16];
        let mut mins = [_mm512_setzero_si512(); 8];
        for k in 0..4 {
            let w = load(p.add(64 * k));
            let raw = [
                _mm512_and_si512(w, nibble),
                _mm512_and_si512(_mm512_srli_epi32::<8>(w), nibble),
                _mm512_and_si512(_mm512_srli_epi32::<16>(w), nibble),
                _mm512_and_si512(_mm512_srli_epi32::<24>(w), nibble),
            ];
            for (i, raw) in raw.into_iter().enumerate() {
                let j = 4 * k + i;
                sc[j] = match (j % 8) / 2 {
                    0 => _mm512_slli_epi32::<6>(raw),
                    1 => _mm512_slli_epi32::<4>(raw),
                    2 => _mm512_slli_epi32::<2>(raw),
                    _ => raw,
                };
            }
            mins[2 * k] = _mm512_and_si512(_mm512_srli_epi32::<4>(w), pairs);
            mins[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi32::<12>(w), pairs);
        }
        (sc, mins)
    }

    /// The quants of quarter s enter `vpdpbusd` masked in place, as 4^s·q (≤ 192, a u8),
    /// which saves a shift a register; the scales carry 4^(3 − s) instead (`scales`), so
    /// the super-block sum is exactly 64·isum: |isum| ≤ 16 sub-blocks · 15 · 16·3·128 <
    /// 2²¹, so |64·isum| < 2²⁷ and cvt(64·isum) = 64·cvt(isum) (isum is exact in f32), and
    /// (d/64)·d_a = (d·d_a)/64 exactly: the result is that of isum and d. The mins' sum
    /// Σ m_j·bsum_j (|m_j·bsum_j| ≤ 15·16·128, 16 of them) is exact too. The float part is
    /// the reference's two terms a super-block, each added by an FMA (the tolerance of
    /// `dot_twins`' packed test: at most 2 terms a block).
    ///
    /// # Safety
    /// As [`GroupFn`](crate::packed::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(crate) unsafe fn q2_k_q8_k<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / QK_K;
        debug_assert!(g.len() >= nb * Q2_K_CHUNK);
        debug_assert!(tk.bias.len() >= (t0 + NT) * nb * 8);
        let gp = g.as_ptr();
        let sixty_fourth = _mm512_set1_ps(1.0 / 64.0);
        let mut acc = [_mm512_setzero_ps(); NT];
        for b in 0..nb {
            let c = gp.add(b * Q2_K_CHUNK);
            // The chunk's 21 lines are asked for one a step (`line` below), between the
            // dots: in three bursts (head, each half's quants before the half) the kernel
            // read 13.1-13.8 GB/s from memory at 1 thread, spread 14.2-14.8.
            let (sc, mins) = scales(c.add(Q2_K_SCALES));
            let mut isum = [_mm512_setzero_si512(); NT];
            for h in 0..2 {
                let raw: [__m512i; 8] =
                    std::array::from_fn(|k| load(c.add(Q2_K_QS + 64 * (8 * h + k))));
                for s in 0..4 {
                    let mask = _mm512_set1_epi8((3u8 << (2 * s)) as i8);
                    let u = raw.map(|r| _mm512_and_si512(r, mask));
                    let j = 8 * h + 2 * s;
                    for (t, isum) in isum.iter_mut().enumerate() {
                        let x = tk.rows[t0 + t].q8_k.get_unchecked(b).qs.as_ptr();
                        let x = x.add(128 * h + 32 * s).cast::<u8>();
                        let mut s0 = _mm512_setzero_si512();
                        let mut s1 = _mm512_setzero_si512();
                        for k in 0..4 {
                            let line = 4 * (4 * h + s) + k;
                            if t == 0 && line < Q2_K_CHUNK / 64 {
                                prefetch::ahead(c.add(64 * line), 64);
                            }
                            s0 = _mm512_dpbusd_epi32(s0, u[k], splat(x.add(4 * k)));
                            s1 = _mm512_dpbusd_epi32(s1, u[4 + k], splat(x.add(16 + 4 * k)));
                        }
                        let s = _mm512_add_epi32(
                            _mm512_mullo_epi32(s0, sc[j]),
                            _mm512_mullo_epi32(s1, sc[j + 1]),
                        );
                        *isum = _mm512_add_epi32(*isum, s);
                    }
                }
            }
            let dw = _mm512_mul_ps(halves(c.add(Q2_K_D)), sixty_fourth);
            let mw = halves(c.add(Q2_K_DMIN));
            for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                let da = tk.rows[t0 + t].q8_k.get_unchecked(b).d;
                let p = tk.bias.as_ptr().add(((t0 + t) * nb + b) * 8).cast::<u8>();
                *acc = add_super_block(*acc, isum, &mins, p, dw, mw, da);
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
    use super::super::layout::GroupLayout;
    use super::*;
    use crate::formats::blocks::QK_K;
    use crate::formats::GgmlType;

    /// Where byte `i` of row r's super-block b goes: the layout by its definition (module
    /// docs), written out without `KLayout`.
    fn q2_k_place(b: usize, r: usize, i: usize) -> usize {
        let chunk = b * Q2_K_CHUNK;
        let lane = |at: usize, j: usize| at + (j / 4) * 64 + 4 * r + j % 4;
        match i {
            0..16 => chunk + lane(Q2_K_SCALES, i),
            16..80 => chunk + lane(Q2_K_QS, i - 16),
            80..82 => chunk + Q2_K_D + 2 * r + (i - 80),
            _ => chunk + Q2_K_DMIN + 2 * r + (i - 82),
        }
    }

    /// Every byte of a group has one place, and packing/unpacking follow the definition.
    #[test]
    fn q2_k_packing_follows_the_layout_and_unpacks() {
        let l = &Q2_K;
        assert_eq!(l.block, GgmlType::Q2_K.type_size());
        for nb in [1, 2, 3] {
            let size = GROUP_ROWS * nb * l.block;
            let mut hits = vec![0u8; size];
            for r in 0..GROUP_ROWS {
                for b in 0..nb {
                    for i in 0..l.block {
                        hits[q2_k_place(b, r, i)] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "nb {nb}: group bytes");
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * nb * l.block, (nb * 41 + n) as u64);
                let mut want = vec![0u8; size];
                for r in 0..n {
                    for b in 0..nb {
                        for i in 0..l.block {
                            want[q2_k_place(b, r, i)] = src[(r * nb + b) * l.block + i];
                        }
                    }
                }
                let mut got = vec![0u8; size];
                Q2_K.pack(nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                Q2_K.unpack(nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }
}
