//! Q6_K's packed group: its layout (a [`KLayout`] table), the recoding of its quants, the
//! sums its kernel starts from, and its kernel (AVX-512 VNNI).
//!
//! A chunk (3328 bytes a super-block): the 16 i8 scales as 4 registers, then per half h
//! (elements 128h..128h + 128) its 32 `qh` bytes as 8 registers and its 64 `ql` bytes as
//! 16, then recoded in place ([`recode_q6_k_half`]: bits move, not bytes); the d's (32
//! bytes a super-block) are a chunk's tail, kept apart so that every chunk stays whole
//! registers (16 × 210 = 3360 is not).
//!
//! Per super-block, the group's scales are unpacked lane-parallel once and serve every
//! token of the tile. Each sub-block's dot is exact in i32 (`vpdpbusd` of unsigned quants
//! and the token's broadcast activation words), is multiplied by its sub-block scale in
//! i32 (`vpmulld`) and summed over the super-block, exactly: the reference's `isum` times a
//! power of two (quants that enter in place, as 4·q, and scales that carry the
//! rest), which the float scale undoes exactly. Only then does the float part run, as in
//! the reference: one term a super-block, cvt(isum)·(d·d_a).
//! Each token has its own accumulators and the same operations whatever `NT` is, so decode
//! and prefill agree bit for bit.

use super::layout::{
    lane_word, set_lane_word, Field, KLayout, Place, GROUP_ROWS, LOW2, LOW4, LOW6,
};
use crate::dot::ActRow;

/// Bytes of a Q6_K super-block chunk (16 rows, without the d's).
pub(super) const Q6_K_CHUNK: usize = GROUP_ROWS * 208;

/// Q6_K chunk offsets: scales, then each half (`Q6_K_HALF` bytes from `Q6_K_HALVES`): its
/// qh, then its ql.
pub(super) const Q6_K_SCALES: usize = 0;
pub(super) const Q6_K_HALVES: usize = 256;
pub(super) const Q6_K_HALF: usize = 1536;
pub(super) const Q6_K_QH: usize = 0;
pub(super) const Q6_K_QL: usize = 512;
/// Bytes of one recoded Q6_K triple (registers A_k, B_k, C_k; [`recode_q6_k_half`]).
pub(super) const Q6_K_TRIPLE: usize = 192;

pub(crate) const Q6_K: KLayout = KLayout {
    block: 210,
    chunk: Q6_K_CHUNK,
    recode: Some(recode),
    bias: token_bias,
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

/// Recodes (`back` false) or decodes both halves of super-block `b` in the group `g` of
/// `nb` super-blocks ([`recode_q6_k_half`]).
fn recode(g: &mut [u8], nb: usize, b: usize, back: bool) {
    for half in q6_k_halves(g, nb, b) {
        if back {
            decode_q6_k_half(half)
        } else {
            recode_q6_k_half(half)
        }
    }
}

/// The two halves of Q6_K super-block `b` in the group `g` of `nb` super-blocks.
fn q6_k_halves(g: &mut [u8], nb: usize, b: usize) -> std::slice::ChunksExactMut<'_, u8> {
    let at = Q6_K.units().block(nb, b).0 + Q6_K_HALVES;
    g[at..at + 2 * Q6_K_HALF].chunks_exact_mut(Q6_K_HALF)
}

/// Recodes a Q6_K half as placed by its fields (8 `qh` registers, 16 `ql`) into 8 triples
/// of registers A_k, B_k, C_k (k = 0..8, `Q6_K_TRIPLE` bytes each, in order), lane r
/// byte i of each holding row r's elements l = 4k + i of the four quarters (e_s, element
/// 32s + l of the half, 6 bits, unsigned):
///
/// A = e_0 | (e_3 & 3) << 6,  B = e_1 | (e_3 >> 2 & 3) << 6,  C = e_2 | (e_3 >> 4) << 6.
///
/// So quarters 0–2 are one mask each (`& 0x3F`) and quarter 3 comes out in place, as
/// 4·e_3, from the three tops (`q6_k_pass`): five operations where the ql/qh
/// split took twelve (a shift for every nibble and 2-bit field but the first).
fn recode_q6_k_half(half: &mut [u8]) {
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

/// The integer sums each (token, super-block) starts from, 16 a super-block:
/// −32·f_j·bsum_j, the start of sub-block j's integer dot, which makes f_j·Σ (q − 32)·a
/// exact from the unsigned quants q, entered as f_j·q: f_j = 4 for the last quarter of each
/// half (j mod 8 ≥ 6, [`recode_q6_k_half`]), else 1.
fn token_bias(rows: &[ActRow]) -> Vec<i32> {
    rows.iter()
        .flat_map(|a| a.q8_k)
        .flat_map(|y| {
            let f = |j: usize| if j % 8 >= 6 { 4 } else { 1 };
            std::array::from_fn::<i32, 16, _>(|j| -32 * f(j) * i32::from(y.bsums[j]))
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::q6_k_q8_k;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use crate::formats::blocks::QK_K;
    use crate::packed::layout::{Out, Tokens};
    use crate::packed::simd::{halves, load, prefetch_sparse as prefetch, splat};

    use super::{Q6_K, Q6_K_HALF, Q6_K_HALVES, Q6_K_SCALES, Q6_K_TRIPLE};

    /// Q6_K's 16 sub-block scales (i8) of the 16 rows, sign-extended, from the 4 scale
    /// registers at `p` (lane r: row r's scale bytes 4k..4k + 4 in register k); times 4 but
    /// for the last quarter of each half (j mod 8 ≥ 6), whose quants enter the dot as 4·q
    /// (`q6_k_pass`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn q6_k_scales(p: *const u8) -> [__m512i; 16] {
        let w: [__m512i; 4] = std::array::from_fn(|k| load(p.add(64 * k)));
        let mut sc = [_mm512_setzero_si512(); 16];
        for (k, w) in w.into_iter().enumerate() {
            sc[4 * k] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(w));
            sc[4 * k + 1] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(w));
            sc[4 * k + 2] = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(w));
            sc[4 * k + 3] = _mm512_srai_epi32::<24>(w);
        }
        for (j, sc) in sc.iter_mut().enumerate() {
            if j % 8 < 6 {
                *sc = _mm512_slli_epi32::<2>(*sc);
            }
        }
        sc
    }

    /// Q6_K: for half h, registers k = 4p..4p + 4 of its four quarters (`q6_k_pass`; quarter
    /// s of pass p is sub-block j = 8h + 2s + p) go through `vpdpbusd` as unsigned quants,
    /// quarter 3's as 4·q; each sub-block's dot starts at −32·f_j·bsum_j (`token_bias`,
    /// f_j the quants' factor): f_j·Σ (q − 32)·a, exact. The scales carry 4/f_j
    /// (`q6_k_scales`), so the super-block sum is 4·isum, exact: |sc·Σ (q − 32)·a| ≤
    /// 128·16·32·128 = 2²³ a sub-block, 16 of them, times 4: < 2³¹. cvt(4·isum) = 4·cvt(isum)
    /// and (d/4)·d_a = (d·d_a)/4 exactly (powers of two), so the result is that of isum and d.
    ///
    /// # Safety
    /// As [`GroupFn`](crate::packed::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(crate) unsafe fn q6_k_q8_k<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / QK_K;
        let units = Q6_K.units();
        debug_assert!(g.len() >= units.bytes(nb));
        debug_assert!(tk.bias.len() >= (t0 + NT) * nb * 16);
        let gp = g.as_ptr();
        let quarter = _mm512_set1_ps(0.25);
        let mut acc = [_mm512_setzero_ps(); NT];
        for b in 0..nb {
            let (c, ds) = units.block(nb, b);
            let (c, ds) = (gp.add(c), gp.add(ds));
            if b % units.per == 0 {
                // The unit's d's, a line past its chunks.
                crate::prefetch::line(ds);
            }
            prefetch(c, Q6_K_HALVES);
            let sc = q6_k_scales(c.add(Q6_K_SCALES));
            let mut isum = [_mm512_setzero_si512(); NT];
            for h in 0..2 {
                let half = c.add(Q6_K_HALVES + Q6_K_HALF * h);
                for p in 0..2 {
                    let pass = half.add(4 * Q6_K_TRIPLE * p);
                    let u = q6_k_pass(pass);
                    for (t, isum) in isum.iter_mut().enumerate() {
                        let t = t0 + t;
                        let x = tk.rows[t].q8_k.get_unchecked(b).qs.as_ptr();
                        let x = x.add(128 * h + 16 * p).cast::<u8>();
                        let bias = tk.bias.as_ptr().add((t * nb + b) * 16 + 8 * h + p);
                        for s in 0..4 {
                            let mut d = splat(bias.add(2 * s).cast());
                            for (k, q) in u.iter().enumerate() {
                                // The pass's 12 lines over its 16 steps (three of every four)
                                // of the first token's dots: three at a time as each triple was
                                // loaded read 15.8 GB/s from memory, one a step over the first
                                // 12 steps 15.5-16.4, over all 16 16.2-17.1.
                                let step = 4 * s + k;
                                if t == t0 && step % 4 != 3 {
                                    prefetch(pass.add(64 * (step - step / 4)), 64);
                                }
                                d = _mm512_dpbusd_epi32(d, q[s], splat(x.add(32 * s + 4 * k)));
                            }
                            let j = 8 * h + 2 * s + p;
                            *isum = _mm512_add_epi32(*isum, _mm512_mullo_epi32(d, sc[j]));
                        }
                    }
                }
            }
            let dw = _mm512_mul_ps(halves(ds), quarter);
            for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                let da = _mm512_set1_ps(tk.rows[t0 + t].q8_k.get_unchecked(b).d);
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), *acc);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// The quants of pass `t` of a recoded Q6_K half (its triples k = 4p..4p + 4 at `t`,
    /// [`recode_q6_k_half`](super::recode_q6_k_half)): `u[k][s]` = quarter s's register 4p + k, quarters 0–2
    /// masked (q), quarter 3 assembled in place from the three tops (4·q).
    #[inline(always)]
    unsafe fn q6_k_pass(t: *const u8) -> [[__m512i; 4]; 4] {
        let low6 = _mm512_set1_epi8(0x3F);
        let (b23, b45, b67) = (
            _mm512_set1_epi8(0x0C),
            _mm512_set1_epi8(0x30),
            _mm512_set1_epi8(0xC0u8 as i8),
        );
        let mut u = [[_mm512_setzero_si512(); 4]; 4];
        for (k, u) in u.iter_mut().enumerate() {
            let at = t.add(Q6_K_TRIPLE * k);
            let (a, b, c) = (load(at), load(at.add(64)), load(at.add(128)));
            // 4·q₃ = (a >> 4 & 0x0C) | (b >> 2 & 0x30) | (c & 0xC0); 0xE4 is "m ? x : y" for
            // (x, y, m).
            let top = _mm512_and_si512(_mm512_srli_epi16::<4>(a), b23);
            let top = _mm512_ternarylogic_epi32::<0xE4>(_mm512_srli_epi16::<2>(b), top, b45);
            *u = [
                _mm512_and_si512(a, low6),
                _mm512_and_si512(b, low6),
                _mm512_and_si512(c, low6),
                _mm512_ternarylogic_epi32::<0xE4>(c, top, b67),
            ];
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::test_bytes as bytes;
    use super::*;
    use crate::formats::GgmlType;

    #[test]
    fn q6_k_packing_follows_the_layout_and_is_a_permutation() {
        crate::packed::layout::tests::assert_k_packing(GgmlType::Q6_K, &Q6_K);
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
