//! The float formats' packed groups (F16, BF16; f32 activations): element k of the 16
//! rows, 16 halves (32 bytes), for k = 0..cols; a register holds the same element of 16
//! rows, and the token's value is broadcast to all lanes.

use super::layout::{GroupLayout, GROUP_ROWS};
use crate::dot::ActRow;

/// The layout F16 and BF16 share: both are 2-byte halves.
pub(crate) struct Halves;

impl GroupLayout for Halves {
    fn pack(&self, cols: usize, src: &[u8], n: usize, out: &mut [u8]) {
        let rb = 2 * cols;
        pack_halves(cols, src[..n * rb].chunks_exact(rb.max(1)), out)
    }

    fn unpack(&self, cols: usize, src: &[u8], n: usize, dst: &mut [u8]) {
        let rb = 2 * cols;
        for r in 0..n {
            for k in 0..cols {
                let at = (k * GROUP_ROWS + r) * 2;
                dst[r * rb + 2 * k..r * rb + 2 * k + 2].copy_from_slice(&src[at..at + 2]);
            }
        }
    }

    fn bias(&self, _rows: &[ActRow], _cols: usize) -> Vec<i32> {
        Vec::new()
    }
}

/// 16 columns of the 16 rows at a time, a 16×16 transpose of halves.
fn pack_halves<'a>(cols: usize, rows: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) {
    const K: usize = 16;
    let rows: Vec<&[u8]> = rows.collect();
    let whole = cols / K * K;
    for (c, dst) in out[..whole * 32].chunks_exact_mut(K * 32).enumerate() {
        let mut t = [[0u8; 2 * K]; GROUP_ROWS];
        for (tr, row) in t.iter_mut().zip(&rows) {
            tr.copy_from_slice(&row[c * 2 * K..(c + 1) * 2 * K]);
        }
        for (k, line) in dst.chunks_exact_mut(32).enumerate() {
            for (r, tr) in t.iter().enumerate().take(rows.len()) {
                line[2 * r..2 * r + 2].copy_from_slice(&tr[2 * k..2 * k + 2]);
            }
        }
    }
    for k in whole..cols {
        for (r, row) in rows.iter().enumerate() {
            let at = (k * GROUP_ROWS + r) * 2;
            out[at..at + 2].copy_from_slice(&row[2 * k..2 * k + 2]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use kernel::{bf16_f32, f16_f32};

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use crate::packed::layout::{Out, Tokens};
    use crate::packed::simd::{each_token, halves, prefetch};

    /// The 16 rows' BF16 values at `p`, as f32 (exact: a bf16 is an f32's high half).
    #[inline(always)]
    unsafe fn bf16s(p: *const u8) -> __m512 {
        let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
    }

    /// The 16 rows' element at `p`: F16 (`BF` false) or BF16 (true).
    #[inline(always)]
    unsafe fn element<const BF: bool>(p: *const u8) -> __m512 {
        if BF {
            bf16s(p)
        } else {
            halves(p)
        }
    }

    /// F16 (`BF` false) and BF16 (true), f32 activations.
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at AVX-512 F/BW with F16C.
    #[target_feature(enable = "avx512f,avx512bw,f16c,fma")]
    unsafe fn halves16<const NT: usize, const BF: bool>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        debug_assert!(g.len() >= cols * 32);
        let gp = g.as_ptr();
        // Two accumulators a token (even and odd k): one FMA chain per token would wait on the
        // FMA latency in decode.
        let mut acc = [[_mm512_setzero_ps(); 2]; NT];
        let x: [*const f32; NT] = std::array::from_fn(|t| tk.rows[t0 + t].x.as_ptr());
        let pairs = cols / 2;
        for p in 0..pairs {
            let at = gp.add(64 * p);
            prefetch(at, 64);
            let w0 = element::<BF>(at);
            let w1 = element::<BF>(at.add(32));
            let k = 2 * p;
            each_token!(NT, t, {
                acc[t][0] = _mm512_fmadd_ps(w0, _mm512_set1_ps(*x[t].add(k)), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(w1, _mm512_set1_ps(*x[t].add(k + 1)), acc[t][1]);
            });
        }
        if cols % 2 == 1 {
            let k = cols - 1;
            let w = element::<BF>(gp.add(32 * k));
            for t in 0..NT {
                acc[t][0] = _mm512_fmadd_ps(w, _mm512_set1_ps(*x[t].add(k)), acc[t][0]);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(a[0], a[1]));
        }
    }

    /// F16 ([`halves16`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at AVX-512 F/BW with F16C.
    pub(crate) unsafe fn f16_f32<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        halves16::<NT, false>(g, cols, tk, t0, out)
    }

    /// BF16 ([`halves16`]).
    ///
    /// # Safety
    /// As [`GroupFn`](super::layout::GroupFn), at AVX-512 F/BW with F16C.
    pub(crate) unsafe fn bf16_f32<const NT: usize>(
        g: &[u8],
        cols: usize,
        tk: &Tokens,
        t0: usize,
        out: &mut Out,
    ) {
        halves16::<NT, true>(g, cols, tk, t0, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{group_bytes, row_bytes, test_bytes as bytes};
    use super::*;
    use crate::formats::GgmlType;

    /// Element k of row r at halves k·16 + r, byte for byte; unpacking inverts it.
    #[test]
    fn packing_follows_the_layout_and_unpacks() {
        let cases = [
            (GgmlType::BF16, 33),
            (GgmlType::F16, 1),
            (GgmlType::F16, 33),
            (GgmlType::F16, 577),
        ];
        for (ty, cols) in cases {
            for n in [1, 5, GROUP_ROWS] {
                let rb = row_bytes(ty, cols);
                let src = bytes(n * rb, (cols * 31 + n) as u64);
                let mut want = vec![0u8; group_bytes(ty, cols)];
                for r in 0..n {
                    let row = &src[r * rb..(r + 1) * rb];
                    for (k, half) in row.chunks_exact(2).enumerate() {
                        want[(k * GROUP_ROWS + r) * 2..][..2].copy_from_slice(half);
                    }
                }
                let mut out = vec![0u8; group_bytes(ty, cols)];
                Halves.pack(cols, &src, n, &mut out);
                assert!(out == want, "{ty} {n}x{cols}");
                let mut back = vec![0u8; src.len()];
                Halves.unpack(cols, &out, n, &mut back);
                assert_eq!(back, src, "{ty} {n}x{cols}");
            }
        }
    }
}
