//! AVX2 activation quantizers. The AVX-512 levels use these too: quantizing x costs `cols`
//! element operations against `rows·cols` for the matrix that reads it, so wider vectors
//! here would not show in a matvec.
//!
//! Same arithmetic as the scalar references per element (one f32 multiply by the same
//! inverse scale, then the reference's rounding rule), so the blocks are identical.

use std::arch::x86_64::*;

use half::f16;

use super::{bsums, first_with_magnitude, qsum};
use crate::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};
use crate::isa::Isa;

pub fn q8_0(isa: Isa, x: &[f32], out: &mut [BlockQ8_0]) {
    assert!(isa.is_supported() && isa >= Isa::Avx2 && x.len() >= out.len() * QK);
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: AVX2/FMA/F16C are present (asserted), `x` has 32 elements.
        let (d, qs) = unsafe { q8_block(x.as_ptr()) };
        b.d = f16::from_f32(d);
        b.qs = qs;
    }
}

pub fn q8_1(isa: Isa, x: &[f32], out: &mut [BlockQ8_1]) {
    assert!(isa.is_supported() && isa >= Isa::Avx2 && x.len() >= out.len() * QK);
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: as in `q8_0`.
        let (d, qs) = unsafe { q8_block(x.as_ptr()) };
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(qsum(&qs) as f32 * d);
        b.qs = qs;
    }
}

pub fn q8_k(isa: Isa, x: &[f32], out: &mut [BlockQ8K]) {
    assert!(isa.is_supported() && isa >= Isa::Avx2 && x.len() >= out.len() * QK_K);
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        // SAFETY: AVX2 is present (asserted), `x` has 256 elements.
        let amax = unsafe { amax256(x.as_ptr(), QK_K) };
        let max = x[first_with_magnitude(x, amax)];
        if max == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        // SAFETY: as above; `b.qs` has 256 bytes.
        unsafe { q8_k_quants(x.as_ptr(), iscale, b.qs.as_mut_ptr()) };
        b.bsums = bsums(&b.qs);
        b.d = 1.0 / iscale;
    }
}

/// max |x| over `n` (a multiple of 8) elements.
#[target_feature(enable = "avx2")]
unsafe fn amax256(x: *const f32, n: usize) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for i in (0..n).step_by(8) {
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x.add(i)), abs));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// Packs 32 integer-valued i32 lanes (4 vectors of 8, in order) into 32 i8, saturating.
#[target_feature(enable = "avx2")]
unsafe fn pack32(v: [__m256i; 4], out: *mut i8) {
    // packs interleave 128-bit halves: [a0 b0 a1 b1] → [a0 c0 b0 d0 | a1 c1 b1 d1] in
    // 4-lane groups; the permute puts the eight groups of four back in order.
    let ab = _mm256_packs_epi32(v[0], v[1]);
    let cd = _mm256_packs_epi32(v[2], v[3]);
    let abcd = _mm256_packs_epi16(ab, cd);
    let fixed = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.cast(), fixed);
}

/// d and quants of a 32-element block, halves rounded away from zero (C's `roundf`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: *const f32) -> (f32, [i8; QK]) {
    let d = amax256(x, QK) / 127.0;
    let id = _mm256_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let mut q = [_mm256_setzero_si256(); 4];
    for (k, q) in q.iter_mut().enumerate() {
        let r = _mm256_mul_ps(_mm256_loadu_ps(x.add(8 * k)), id);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(r);
        // The part dropped by truncation is exact; where it is ≥ ½, step one away from zero.
        let step = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(_mm256_sub_ps(r, t), abs), half);
        let away = _mm256_or_ps(_mm256_and_ps(r, sign), one);
        *q = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(step, away)));
    }
    let mut qs = [0i8; QK];
    pack32(q, qs.as_mut_ptr());
    (d, qs)
}

/// Q8_K quants: round(iscale·x) with halves to even, capped at 127.
#[target_feature(enable = "avx2")]
unsafe fn q8_k_quants(x: *const f32, iscale: f32, out: *mut i8) {
    let s = _mm256_set1_ps(iscale);
    let cap = _mm256_set1_epi32(127);
    for c in 0..QK_K / 32 {
        let mut q = [_mm256_setzero_si256(); 4];
        for (k, q) in q.iter_mut().enumerate() {
            let r = _mm256_mul_ps(_mm256_loadu_ps(x.add(32 * c + 8 * k)), s);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(r);
            *q = _mm256_min_epi32(_mm256_cvtps_epi32(r), cap);
        }
        pack32(q, out.add(32 * c));
    }
}
