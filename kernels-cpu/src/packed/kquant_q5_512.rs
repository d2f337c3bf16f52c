//! The packed Q5_K kernel (AVX-512 VNNI): one group (16 rows, one a lane) times `NT`
//! tokens, layout in `kquant_q5`.
//!
//! As Q4_K's (`kquant512`): per super-block the scales and mins are unpacked lane-parallel
//! once for the tile; each sub-block's dot is exact in i32 (`vpdpbusd` of the unsigned
//! five-bit quants and the token's broadcast activation words), multiplied by its scale in
//! i32 and summed over the super-block, exactly; then two float terms a super-block, as in
//! the reference: cvt(isum)·(d·d_a) and −cvt(Σ m_j·p_j)·(dmin·d_a). Each token has its own
//! accumulators and the same operations whatever `NT` is, so decode and prefill agree bit
//! for bit.

use std::arch::x86_64::*;

use super::avx512::{add_super_block, halves, load, prefetch, splat, Out};
use super::kquant512::q4_k_scales;
use super::kquant_q5::{CHUNK, D, DMIN, QH, QS, SCALES};
use super::layout::Tokens;
use crate::formats::blocks::QK_K;

/// The `qh` register at `p` with bits 2I and 2I + 1 of each byte moved to bits 4 and 5
/// (16-bit shifts: the bits that cross into a byte from its neighbour are never read).
#[inline(always)]
unsafe fn fifth_bits<const I: usize>(p: *const u8) -> __m512i {
    let h = load(p);
    match I {
        0 => _mm512_slli_epi16::<4>(h),
        1 => _mm512_slli_epi16::<2>(h),
        2 => h,
        _ => _mm512_srli_epi16::<2>(h),
    }
}

/// Sub-block pair I's quants of the 16 rows (`qs` registers 8I..8I + 8): for k = 0..8,
/// lane r of `even[k]` holds q of elements 4k..4k + 4 of sub-block 2I of row r, `odd[k]`
/// 2q of sub-block 2I + 1's (q = nibble | fifth bit << 4 ≤ 31, so 2q ≤ 62 is a u8).
///
/// The odd nibble sits in bits 4..8; 16q would not fit a byte, and moving it to bits 1..5
/// (2q) takes one shift, as moving it to 0..4 would: the odd fifth bit then sits where
/// `fifth_bits` put it for the even one's neighbour, bit 5, with no shift of its own.
#[inline(always)]
unsafe fn pair<const I: usize>(c: *const u8) -> ([__m512i; 8], [__m512i; 8]) {
    let (low4, odd4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x1E));
    let (bit4, bit5) = (_mm512_set1_epi8(0x10), _mm512_set1_epi8(0x20));
    let mut even = [_mm512_setzero_si512(); 8];
    let mut odd = [_mm512_setzero_si512(); 8];
    for k in 0..8 {
        let raw = load(c.add(QS + 64 * (8 * I + k)));
        let h = fifth_bits::<I>(c.add(QH + 64 * k));
        // a | (b & c) in one `vpternlogd` (truth tables a = 0xF0, b = 0xCC, c = 0xAA).
        even[k] = _mm512_ternarylogic_epi32::<0xF8>(_mm512_and_si512(raw, low4), h, bit4);
        let n2 = _mm512_and_si512(_mm512_srli_epi16::<3>(raw), odd4);
        odd[k] = _mm512_ternarylogic_epi32::<0xF8>(n2, h, bit5);
    }
    (even, odd)
}

/// Adds pair I's scaled sub-block dots (quants from `pair`, scales `sc`) of each token to
/// its `isum`.
#[inline(always)]
unsafe fn pair_dots<const NT: usize, const I: usize>(
    c: *const u8,
    x: &[*const u8; NT],
    sc: &[__m512i; 8],
    isum: &mut [__m512i; NT],
) {
    prefetch(c.add(QS + 64 * 8 * I), 64 * 8);
    let (even, odd) = pair::<I>(c);
    for (x, isum) in x.iter().zip(isum.iter_mut()) {
        let x = x.add(64 * I);
        let mut s_even = _mm512_setzero_si512();
        let mut s_odd = _mm512_setzero_si512();
        for k in 0..8 {
            s_even = _mm512_dpbusd_epi32(s_even, even[k], splat(x.add(4 * k)));
            s_odd = _mm512_dpbusd_epi32(s_odd, odd[k], splat(x.add(32 + 4 * k)));
        }
        let s = _mm512_add_epi32(
            _mm512_mullo_epi32(s_even, sc[2 * I]),
            _mm512_mullo_epi32(s_odd, sc[2 * I + 1]),
        );
        *isum = _mm512_add_epi32(*isum, s);
    }
}

/// Q5_K: the even sub-blocks' quants enter the dots as q, the odd ones' as 2q (`pair`),
/// so the even scales are doubled (from `q4_k_scales`' 16·sc, exactly: a shift by 3) and
/// the super-block sum is exactly 2·isum: |2·isum| ≤ 2 · 8 sub-blocks · 63 · 32·31·128
/// < 2³¹. cvt(2·isum) = 2·cvt(isum) and (d/2)·d_a = (d·d_a)/2 exactly (powers of two), so
/// the result is that of isum and d.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
pub(super) unsafe fn q5_k<const NT: usize>(
    g: &[u8],
    cols: usize,
    tk: &Tokens,
    t0: usize,
    out: &mut Out,
) {
    let nb = cols / QK_K;
    debug_assert!(g.len() >= nb * CHUNK);
    debug_assert!(tk.bias.len() >= (t0 + NT) * nb * 4);
    let gp = g.as_ptr();
    let half = _mm512_set1_ps(0.5);
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let c = gp.add(b * CHUNK);
        // The head and qh now, each pair's quants as it starts (`pair_dots`): the whole
        // chunk at once was slower from memory (two-level prefetch, `prefetch::ahead`).
        prefetch(c, QS);
        let (mut sc, mins) = q4_k_scales(c.add(SCALES));
        for i in 0..4 {
            sc[2 * i] = _mm512_srli_epi32::<3>(sc[2 * i]);
        }
        let x: [*const u8; NT] = std::array::from_fn(|t| {
            let y = tk.rows[t0 + t].q8_k.get_unchecked(b);
            y.qs.as_ptr().cast::<u8>()
        });
        let mut isum = [_mm512_setzero_si512(); NT];
        pair_dots::<NT, 0>(c, &x, &sc, &mut isum);
        pair_dots::<NT, 1>(c, &x, &sc, &mut isum);
        pair_dots::<NT, 2>(c, &x, &sc, &mut isum);
        pair_dots::<NT, 3>(c, &x, &sc, &mut isum);
        let dw = _mm512_mul_ps(halves(c.add(D)), half);
        let mw = halves(c.add(DMIN));
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
