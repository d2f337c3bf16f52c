//! Q5_K's packed group: its layout (a [`KLayout`] table) and its kernel (AVX-512 VNNI);
//! the sums it starts from are Q4_K's.
//!
//! As for Q4_K (`q4_k`), a group holds one chunk of whole 64-byte registers per
//! super-block b (256 columns) of its 16 rows, 2816 bytes = 16 × 176; in it, each field of
//! the GGUF block with its bytes 4j..4j + 4 of row r in lane r of register j, or (an f16)
//! row r's at bytes 2r..2r + 2:
//! - at 0 the 16 d's, at 32 the 16 dmin's;
//! - at 64 the 12 scale bytes, 3 registers (Q4_K's 6-bit scale/min packing);
//! - at 256 `qh`, 8 registers: byte m of register k, lane r, is row r's `qh[4k + m]`, whose
//!   bit j is the fifth bit of element 32j + 4k + m;
//! - at 768 `qs`, 32 registers: register 8i + k holds elements 4k..4k + 4 of sub-block 2i in
//!   the low nibbles, of 2i + 1 in the high ones, so that its byte m lines up with byte m
//!   of `qh` register k (bits 2i and 2i + 1 are its elements' fifth bits).
//!
//! Packing is a permutation of the group's bytes, as for the other K-quants.
//!
//! The kernel, as Q4_K's: per super-block the scales and mins are unpacked lane-parallel
//! once for the tile; each sub-block's dot is exact in i32 (`vpdpbusd` of the unsigned
//! five-bit quants and the token's broadcast activation words), multiplied by its scale in
//! i32 and summed over the super-block, exactly; then two float terms a super-block, as in
//! the reference: cvt(isum)·(d·d_a) and −cvt(Σ m_j·p_j)·(dmin·d_a). Each token has its own
//! accumulators and the same operations whatever `NT` is, so decode and prefill agree bit
//! for bit.

use super::layout::{Field, KLayout, Place, GROUP_ROWS, MAX_BLOCK};

/// Bytes of a Q5_K block (one row's super-block).
const BLOCK: usize = 176;
// The staging rows of `layout::pack_k` hold a block.
const _: () = assert!(BLOCK <= MAX_BLOCK);
/// Bytes of a super-block chunk (16 rows).
pub(super) const CHUNK: usize = GROUP_ROWS * BLOCK;

/// Chunk offsets: d's, dmin's, scales, fifth bits, nibbles.
pub(super) const D: usize = 0;
pub(super) const DMIN: usize = 32;
pub(super) const SCALES: usize = 64;
pub(super) const QH: usize = 256;
pub(super) const QS: usize = 768;

/// The fields of a GGUF block, each at its chunk offset.
pub(crate) const Q5_K: KLayout = KLayout {
    block: BLOCK,
    chunk: CHUNK,
    recode: None,
    bias: super::q4_k::token_bias,
    fields: &[
        Field {
            src: 0,
            len: 2,
            at: Place::Chunk(D),
        },
        Field {
            src: 2,
            len: 2,
            at: Place::Chunk(DMIN),
        },
        Field {
            src: 4,
            len: 12,
            at: Place::Chunk(SCALES),
        },
        Field {
            src: 16,
            len: 32,
            at: Place::Chunk(QH),
        },
        Field {
            src: 48,
            len: 128,
            at: Place::Chunk(QS),
        },
    ],
};

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::q5_k_q8_k;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use crate::formats::blocks::QK_K;
    use crate::packed::layout::{Out, Tokens};
    use crate::packed::q4_k::q4_k_scales;
    use crate::packed::simd::{add_super_block, halves, load, prefetch, splat};

    use super::{CHUNK, D, DMIN, QH, QS, SCALES};

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
            // The chunk's 44 lines asked for one or two a step, none in bursts: this pair's
            // 8 quant lines, and 3 of the 12 head and qh lines.
            prefetch(c.add(QS + 64 * (8 * I + k)), 64);
            if k < 3 {
                prefetch(c.add(64 * (3 * I + k)), 64);
            }
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
        let (even, odd) = pair::<I>(c);
        for (x, isum) in x.iter().zip(isum.iter_mut()) {
            let x = x.add(64 * I);
            // Four chains of dependent `vpdpbusd`, not two: in cache 45 -> 47 GB/s.
            let mut s = [_mm512_setzero_si512(); 4];
            for k in 0..8 {
                let (e, o) = (k % 2, 2 + k % 2);
                s[e] = _mm512_dpbusd_epi32(s[e], even[k], splat(x.add(4 * k)));
                s[o] = _mm512_dpbusd_epi32(s[o], odd[k], splat(x.add(32 + 4 * k)));
            }
            let s = _mm512_add_epi32(
                _mm512_mullo_epi32(_mm512_add_epi32(s[0], s[1]), sc[2 * I]),
                _mm512_mullo_epi32(_mm512_add_epi32(s[2], s[3]), sc[2 * I + 1]),
            );
            *isum = _mm512_add_epi32(*isum, s);
        }
    }

    /// Q5_K: the even sub-blocks' quants enter the dots as q, the odd ones' as 2q (`pair`),
    /// so the even scales are doubled (from `q4_k_scales`' 16·sc, exactly: a shift by 3) and
    /// the super-block sum is exactly 2·isum: |2·isum| ≤ 2 · 8 sub-blocks · 63 · 32·31·128
    /// < 2³¹. cvt(2·isum) = 2·cvt(isum) and (d/2)·d_a = (d·d_a)/2 exactly (powers of two), so
    /// the result is that of isum and d.
    ///
    /// # Safety
    /// As [`GroupFn`](crate::packed::layout::GroupFn), at VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    pub(crate) unsafe fn q5_k_q8_k<const NT: usize>(
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
}

#[cfg(test)]
mod tests {
    use super::super::layout::test_bytes as bytes;
    use super::super::layout::GroupLayout;
    use super::*;
    use crate::formats::blocks::QK_K;
    use crate::formats::GgmlType;

    /// Where byte `i` of a row's super-block goes in its chunk, for row `r`: the layout by
    /// the module docs' words, field by field (not through `Q5_K`).
    fn place(i: usize, r: usize) -> usize {
        match i {
            0..2 => 2 * r + i,
            2..4 => 32 + 2 * r + (i - 2),
            4..16 => 64 + ((i - 4) / 4) * 64 + 4 * r + (i - 4) % 4,
            16..48 => 256 + ((i - 16) / 4) * 64 + 4 * r + (i - 16) % 4,
            _ => 768 + ((i - 48) / 4) * 64 + 4 * r + (i - 48) % 4,
        }
    }

    #[test]
    fn packing_follows_the_layout_and_is_a_permutation() {
        assert_eq!(BLOCK, GgmlType::Q5_K.type_size());
        // The places tile a chunk exactly.
        let mut hits = vec![0u8; CHUNK];
        for r in 0..GROUP_ROWS {
            (0..BLOCK).for_each(|i| hits[place(i, r)] += 1);
        }
        assert!(hits.iter().all(|&h| h == 1), "chunk bytes");
        for nb in [1, 2, 3] {
            for n in [1, 5, GROUP_ROWS] {
                let src = bytes(n * nb * BLOCK, (nb * 31 + n) as u64);
                let mut want = vec![0u8; GROUP_ROWS * nb * BLOCK];
                for r in 0..n {
                    for b in 0..nb {
                        for i in 0..BLOCK {
                            want[b * CHUNK + place(i, r)] = src[(r * nb + b) * BLOCK + i];
                        }
                    }
                }
                let mut got = vec![0u8; want.len()];
                Q5_K.pack(nb * QK_K, &src, n, &mut got);
                assert!(got == want, "{n} rows, nb {nb}");
                let mut back = vec![0u8; src.len()];
                Q5_K.unpack(nb * QK_K, &got, n, &mut back);
                assert!(back == src, "{n} rows, nb {nb}: unpack");
            }
        }
    }
}
