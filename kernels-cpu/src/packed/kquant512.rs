//! The packed K-quant kernels (Q4_K, Q6_K; AVX-512 VNNI): one group (16 rows, one a lane)
//! times `NT` tokens, layout in `kquant`.
//!
//! Per super-block, the group's scales are unpacked lane-parallel once and serve every
//! token of the tile. Each sub-block's dot is exact in i32 (`vpdpbusd` of unsigned quants
//! and the token's broadcast activation words), is multiplied by its sub-block scale in
//! i32 (`vpmulld`) and summed over the super-block, exactly: the same integer as the
//! reference's `isum`. Only then does the float part run, as in the reference: Q4_K adds
//! two terms a super-block, cvt(isum)·(d·d_a) and −cvt(Σ m_j·p_j)·(dmin·d_a); Q6_K one.
//! Each token has its own accumulators and the same operations whatever `NT` is, so decode
//! and prefill agree bit for bit.

use std::arch::x86_64::*;

use super::avx512::{add_super_block, halves, load, prefetch, splat, Out};
use super::kquant::{
    Q4_K_CHUNK, Q4_K_D, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K, Q6_K_HALF, Q6_K_HALVES, Q6_K_QH,
    Q6_K_QL, Q6_K_SCALES,
};
use super::layout::Tokens;
use crate::formats::blocks::QK_K;

/// Q4_K's sub-block scales and mins of the 16 rows, from the 3 scale registers at `p`
/// (lane r: row r's 12 scale bytes), with the word rule of `k_scales` run lane-parallel:
/// - `sc[j]`: scale j in each lane, times 16 for the even (low-nibble) sub-blocks, whose
///   quants enter the dot unshifted while the odd ones' enter as 16·q (see `q4_k`);
/// - `mins`: the mins as i16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7), matching the
///   activation pairs of `kquant::token_bias`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn q4_k_scales(p: *const u8) -> ([__m512i; 8], [__m512i; 4]) {
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
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
pub(super) unsafe fn q4_k<const NT: usize>(
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
        // The head now, each quarter's quants as it starts: with the two-level prefetch
        // (`prefetch::ahead`) the whole chunk at once was slower from memory.
        prefetch(c, Q4_K_QS);
        let (sc, mins) = q4_k_scales(c.add(Q4_K_SCALES));
        let mut isum = [_mm512_setzero_si512(); NT];
        for i in 0..4 {
            let q = c.add(Q4_K_QS + 8 * 64 * i);
            prefetch(q, 512);
            let raw: [__m512i; 8] = std::array::from_fn(|k| load(q.add(64 * k)));
            let lo = raw.map(|r| _mm512_and_si512(r, low4));
            let hi = raw.map(|r| _mm512_and_si512(r, high4));
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
                    s_lo = _mm512_dpbusd_epi32(s_lo, lo[k], splat(x.add(4 * k)));
                    s_hi = _mm512_dpbusd_epi32(s_hi, hi[k], splat(x.add(32 + 4 * k)));
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

/// Q6_K's 16 sub-block scales (i8) of the 16 rows, sign-extended, from the 4 scale
/// registers at `p` (lane r: row r's scale bytes 4k..4k + 4 in register k).
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
    sc
}

/// Q6_K: for half h, quarter s (elements 128h + 32s..+32, sub-blocks 8h + 2s and
/// 8h + 2s + 1), the unsigned quants (`q6_k_quarter`) go through `vpdpbusd`; each
/// sub-block's dot starts at −32·bsum_j (`kquant::token_bias`): Σ (u − 32)·a, exact;
/// |sc·Σ (u − 32)·a| ≤ 128·16·32·128 a sub-block, 16 of them: < 2³¹.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
pub(super) unsafe fn q6_k<const NT: usize>(
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
            // The half's 24 lines are asked for one at a time through its first three
            // quarters (`q6_k_quarter`), between their loads: asked for in bursts (16 lines,
            // then 8) the kernel read 75% of the read reference from memory, spread 82–87%.
            let half = c.add(Q6_K_HALVES + Q6_K_HALF * h);
            let ql = half.add(Q6_K_QL);
            let qh: [__m512i; 8] = std::array::from_fn(|k| load(half.add(Q6_K_QH + 64 * k)));
            let q = Quarter { tk, t0, b, nb };
            q.dot(h, 0, &q6_k_quarter::<0>(ql, &qh, half), &sc, &mut isum);
            q.dot(h, 1, &q6_k_quarter::<1>(ql, &qh, half), &sc, &mut isum);
            q.dot(h, 2, &q6_k_quarter::<2>(ql, &qh, half), &sc, &mut isum);
            q.dot(h, 3, &q6_k_quarter::<3>(ql, &qh, half), &sc, &mut isum);
        }
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

/// The unsigned six-bit quants of quarter `S` of a Q6_K half (`ql`: its 16 ql registers,
/// `qh`: its 8 qh registers): u = (nibble S / 2 of ql register 8(S % 2) + k) | (bits
/// 2S..2S + 2 of qh register k) << 4, for k = 0..8 (4 elements each). Quarters 0..3
/// prefetch line 8S + k of the `half` at their step k (`prefetch`).
#[inline(always)]
unsafe fn q6_k_quarter<const S: usize>(
    ql: *const u8,
    qh: &[__m512i; 8],
    half: *const u8,
) -> [__m512i; 8] {
    let (low4, bits45) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    let mut u = [_mm512_setzero_si512(); 8];
    for (k, u) in u.iter_mut().enumerate() {
        if S < 3 {
            prefetch(half.add(64 * (8 * S + k)), 64);
        }
        let l = load(ql.add(64 * (8 * (S % 2) + k)));
        let low = if S < 2 {
            _mm512_and_si512(l, low4)
        } else {
            _mm512_and_si512(_mm512_srli_epi16::<4>(l), low4)
        };
        let high = match S {
            0 => _mm512_slli_epi16::<4>(qh[k]),
            1 => _mm512_slli_epi16::<2>(qh[k]),
            2 => qh[k],
            _ => _mm512_srli_epi16::<2>(qh[k]),
        };
        // low | (high & 0x30) in one `vpternlogd`: a | (b & c) over the truth tables
        // a = 0xF0, b = 0xCC, c = 0xAA.
        *u = _mm512_ternarylogic_epi32::<0xF8>(low, high, bits45);
    }
    u
}

/// One Q6_K super-block's tokens of a tile, for the quarter dots.
struct Quarter<'t, 'a> {
    tk: &'t Tokens<'a>,
    t0: usize,
    b: usize,
    nb: usize,
}

impl Quarter<'_, '_> {
    /// Adds quarter s of half h (quants `u`) times each token, scaled, to its `isum`.
    #[inline(always)]
    unsafe fn dot<const NT: usize>(
        &self,
        h: usize,
        s: usize,
        u: &[__m512i; 8],
        sc: &[__m512i; 16],
        isum: &mut [__m512i; NT],
    ) {
        let j = 8 * h + 2 * s;
        for (t, isum) in isum.iter_mut().enumerate() {
            let t = self.t0 + t;
            let x = self.tk.rows[t].q8_k.get_unchecked(self.b).qs.as_ptr();
            let x = x.add(128 * h + 32 * s).cast::<u8>();
            let p = self.tk.bias.as_ptr().add((t * self.nb + self.b) * 16 + j);
            let p = p.cast::<u8>();
            let mut s0 = splat(p);
            let mut s1 = splat(p.add(4));
            for k in 0..4 {
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
