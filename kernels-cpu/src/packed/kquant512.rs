//! The packed K-quant kernels (Q4_K, Q6_K; AVX-512 VNNI): one group (16 rows, one a lane)
//! times `NT` tokens, layout in `kquant`.
//!
//! Per super-block, the group's scales are unpacked lane-parallel once and serve every
//! token of the tile. Each sub-block's dot is exact in i32 (`vpdpbusd` of unsigned quants
//! and the token's broadcast activation words), is multiplied by its sub-block scale in
//! i32 (`vpmulld`) and summed over the super-block, exactly: the reference's `isum` times a
//! power of two (quants that enter in place, as 16·q or 4·q, and scales that carry the
//! rest), which the float scale undoes exactly. Only then does the float part run, as in
//! the reference: Q4_K adds
//! two terms a super-block, cvt(isum)·(d·d_a) and −cvt(Σ m_j·p_j)·(dmin·d_a); Q6_K one.
//! Each token has its own accumulators and the same operations whatever `NT` is, so decode
//! and prefill agree bit for bit.

use std::arch::x86_64::*;

use super::avx512::{add_super_block, halves, load, prefetch, splat, steps, Out};
use super::kquant::{
    Q4_K_CHUNK, Q4_K_D, Q4_K_DMIN, Q4_K_QS, Q4_K_SCALES, Q6_K, Q6_K_HALF, Q6_K_HALVES, Q6_K_SCALES,
    Q6_K_TRIPLE,
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
        // The head now, each quarter's 8 lines one a step of its first token's dots: the
        // whole chunk at once was slower from memory, and a quarter's lines at once as it
        // started read 15.3-15.8 GB/s at 1 thread where one a step reads 16.0-16.3.
        prefetch(c, Q4_K_QS);
        let (sc, mins) = q4_k_scales(c.add(Q4_K_SCALES));
        let mut isum = [_mm512_setzero_si512(); NT];
        for i in 0..4 {
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
/// quarter 3's as 4·q; each sub-block's dot starts at −32·f_j·bsum_j (`kquant::token_bias`,
/// f_j the quants' factor): f_j·Σ (q − 32)·a, exact. The scales carry 4/f_j
/// (`q6_k_scales`), so the super-block sum is 4·isum, exact: |sc·Σ (q − 32)·a| ≤
/// 128·16·32·128 = 2²³ a sub-block, 16 of them, times 4: < 2³¹. cvt(4·isum) = 4·cvt(isum)
/// and (d/4)·d_a = (d·d_a)/4 exactly (powers of two), so the result is that of isum and d.
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
/// `kquant::recode_q6_k_half`): `u[k][s]` = quarter s's register 4p + k, quarters 0–2
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
