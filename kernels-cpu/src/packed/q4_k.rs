//! Q4_K's packed group: its layout (a [`KLayout`] table), the sums its kernel starts from,
//! and its kernel (AVX-512 VNNI).
//!
//! A chunk (2304 bytes = 16 × 144 a super-block): the 16 d's, the 16 dmin's, the 12
//! scale bytes as 3 registers, the 128 `qs` bytes as 32 registers (register 8i + k:
//! elements 4k..4k + 4 of sub-block 2i in the low nibbles, of 2i + 1 in the high ones).
//!
//! Per super-block, the group's scales are unpacked lane-parallel once and serve every
//! token of the tile. Each sub-block's dot is exact in i32 (`vpdpbusd` of unsigned quants
//! and the token's broadcast activation words), is multiplied by its sub-block scale in
//! i32 (`vpmulld`) and summed over the super-block, exactly: the reference's `isum` times a
//! power of two (quants that enter in place, as 16·q, and scales that carry the
//! rest), which the float scale undoes exactly. Only then does the float part run, as in
//! the reference: two terms a super-block, cvt(isum)·(d·d_a) and
//! −cvt(Σ m_j·p_j)·(dmin·d_a).
//! Each token has its own accumulators and the same operations whatever `NT` is, so decode
//! and prefill agree bit for bit.

use super::layout::{Field, KLayout, Place, GROUP_ROWS};
use crate::dot::ActRow;

/// Bytes of a Q4_K super-block chunk (16 rows).
pub(super) const Q4_K_CHUNK: usize = GROUP_ROWS * 144;
/// Q4_K chunk offsets: d's, dmin's, scales, quants.
pub(super) const Q4_K_D: usize = 0;
pub(super) const Q4_K_DMIN: usize = 32;
pub(super) const Q4_K_SCALES: usize = 64;
pub(super) const Q4_K_QS: usize = 256;
pub(crate) const Q4_K: KLayout = KLayout {
    block: 144,
    chunk: Q4_K_CHUNK,
    recode: None,
    bias: token_bias,
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

/// The integer sums each (token, super-block) starts from, 4 a super-block: the mins'
/// activation sums as i16 pairs for `vpdpwssd`, p_j = bsum_2j + bsum_2j+1 (the 32
/// activations of sub-block j; |p_j| ≤ 32·128, an i16): (p0, p2), (p1, p3), (p4, p6),
/// (p5, p7), the first of each pair in the low half. Q5_K's too (its mins and their
/// activation sums are Q4_K's).
pub(crate) fn token_bias(rows: &[ActRow]) -> Vec<i32> {
    rows.iter()
        .flat_map(|a| a.q8_k)
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
        .collect()
}

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::q4_k_q8_k;
#[cfg(target_arch = "x86_64")]
pub(super) use kernel::q4_k_scales;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use crate::formats::blocks::QK_K;
    use crate::packed::layout::{Out, Tokens};
    use crate::packed::simd::{
        add_super_block, halves, load, prefetch_sparse as prefetch, splat, steps,
    };

    use super::{Q4_K_CHUNK, Q4_K_D, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES};

    /// Q4_K's sub-block scales and mins of the 16 rows, from the 3 scale registers at `p`
    /// (lane r: row r's 12 scale bytes), with the word rule of `k_scales` run lane-parallel:
    /// - `sc[j]`: scale j in each lane, times 16 for the even (low-nibble) sub-blocks, whose
    ///   quants enter the dot unshifted while the odd ones' enter as 16·q (see `q4_k`);
    /// - `mins`: the mins as i16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7), matching the
    ///   activation pairs of `token_bias`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::packed) unsafe fn q4_k_scales(p: *const u8) -> ([__m512i; 8], [__m512i; 4]) {
        let low6 = _mm512_set1_epi32(0x3f3f_3f3f);
        let low4 = _mm512_set1_epi32(0x0f0f_0f0f);
        let low2 = _mm512_set1_epi32(0x0303_0303);
        let (w0, w1, w2) = (load(p), load(p.add(64)), load(p.add(128)));
        let top = |w| _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(w), low2));
        // Bytes j of `sc_lo` and j + 4 of `sc_hi` (j < 4): scale j and j + 4; likewise mins.
        let sc_lo = _mm512_and_si512(w0, low6);
        let sc_hi = _mm512_or_si512(_mm512_and_si512(w2, low4), top(w0));
        let m_lo = _mm512_and_si512(w1, low6);
        let m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32::<4>(w2), low4), top(w1));
        let byte = _mm512_set1_epi32(0xFF);
        let x16 = _mm512_set1_epi32(0xFF << 4);
        let sc = |w: __m512i| {
            [
                _mm512_and_si512(_mm512_slli_epi32::<4>(w), x16),
                _mm512_and_si512(_mm512_srli_epi32::<8>(w), byte),
                _mm512_and_si512(_mm512_srli_epi32::<12>(w), x16),
                _mm512_srli_epi32::<24>(w),
            ]
        };
        let (a, b) = (sc(sc_lo), sc(sc_hi));
        let words = _mm512_set1_epi32(0x00FF_00FF);
        let even = |w| _mm512_and_si512(w, words);
        let odd = |w| _mm512_and_si512(_mm512_srli_epi32::<8>(w), words);
        (
            [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
            [even(m_lo), odd(m_lo), even(m_hi), odd(m_hi)],
        )
    }

    /// Q4_K: the low nibbles (even sub-blocks) enter `vpdpbusd` masked, the high ones masked in
    /// place, as 16·q (≤ 240, still a u8), which saves a shift a register. The even scales
    /// carry the factor 16 instead (`q4_k_scales`), so the super-block sum is exactly 16·isum:
    /// |16·isum| ≤ 8 sub-blocks · 63 · 32·240·128 < 2³¹. cvt(16·isum) = 16·cvt(isum) and
    /// (d/16)·d_a = (d·d_a)/16 exactly (powers of two), so the result is that of isum and d.
    ///
    /// # Safety
    /// As [`GroupFn`](crate::packed::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(crate) unsafe fn q4_k_q8_k<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        let nb = cols / QK_K;
        debug_assert!(g.len() >= nb * Q4_K_CHUNK);
        debug_assert!(tk.bias.len() >= (t0 + NT) * nb * 4);
        let gp = g.as_ptr();
        let (low4, high4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0xF0u8 as i8));
        let sixteenth = _mm512_set1_ps(1.0 / 16.0);
        let mut acc = [_mm512_setzero_ps(); NT];
        for b in 0..nb {
            let c = gp.add(b * Q4_K_CHUNK);
            // The head now, each quarter's 8 lines one a step of its first token's dots: the
            // whole chunk at once was slower from memory, and a quarter's lines at once as it
            // started read 15.3-15.8 GB/s at 1 thread where one a step reads 16.0-16.3.
            prefetch(c, Q4_K_QS);
            let (sc, mins) = q4_k_scales(c.add(Q4_K_SCALES));
            let mut isum = [_mm512_setzero_si512(); NT];
            for i in 0..4 {
                // The quarters in order: LLVM interleaves their loads otherwise, and a stream
                // read out of order loses the hardware prefetchers, which the sparse requests
                // rely on.
                std::arch::asm!("", options(nostack, preserves_flags));
                let q = c.add(Q4_K_QS + 8 * 64 * i);
                // Register k's low and high nibbles, loaded at its dots in decode (`steps!`).
                let nibbles = |k: usize| {
                    let r = load(q.add(64 * k));
                    (_mm512_and_si512(r, low4), _mm512_and_si512(r, high4))
                };
                let zero = (_mm512_setzero_si512(), _mm512_setzero_si512());
                let nibbles = steps!(NT, 8, nibbles, zero);
                for (t, isum) in isum.iter_mut().enumerate() {
                    let x = tk.rows[t0 + t]
                        .q8_k
                        .get_unchecked(b)
                        .qs
                        .as_ptr()
                        .add(64 * i);
                    let x = x.cast::<u8>();
                    let mut s_lo = _mm512_setzero_si512();
                    let mut s_hi = _mm512_setzero_si512();
                    for k in 0..8 {
                        if t == 0 {
                            prefetch(q.add(64 * k), 64);
                        }
                        let (lo, hi) = nibbles(k);
                        s_lo = _mm512_dpbusd_epi32(s_lo, lo, splat(x.add(4 * k)));
                        s_hi = _mm512_dpbusd_epi32(s_hi, hi, splat(x.add(32 + 4 * k)));
                    }
                    let s = _mm512_add_epi32(
                        _mm512_mullo_epi32(s_lo, sc[2 * i]),
                        _mm512_mullo_epi32(s_hi, sc[2 * i + 1]),
                    );
                    *isum = _mm512_add_epi32(*isum, s);
                }
            }
            let dw = _mm512_mul_ps(halves(c.add(Q4_K_D)), sixteenth);
            let mw = halves(c.add(Q4_K_DMIN));
            for (t, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                let da = tk.rows[t0 + t].q8_k.get_unchecked(b).d;
                let p = tk.bias.as_ptr().add(((t0 + t) * nb + b) * 4).cast::<u8>();
                // Σ m_j·p_j: |m_j·p_j| ≤ 63·32·128, 8 of them: exact.
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
    use super::*;
    use crate::formats::GgmlType;

    #[test]
    fn q4_k_packing_follows_the_layout_and_is_a_permutation() {
        crate::packed::layout::tests::assert_k_packing(GgmlType::Q4_K, &Q4_K);
    }
}
