//! The AVX2 level (with FMA and F16C): 8 lanes of f32 in a `__m256`.

use std::arch::x86_64::*;

type V = __m256;
const L: usize = 8;

macro_rules! avx2 {
    ($($item:item)*) => { $( #[target_feature(enable = "avx2,fma,f16c")] #[inline] $item )* };
}

avx2! {
    unsafe fn ld(p: *const f32) -> V { _mm256_loadu_ps(p) }
    unsafe fn ld_h(p: *const half::f16) -> V { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    unsafe fn st(p: *mut f32, v: V) { _mm256_storeu_ps(p, v) }
    unsafe fn splat(x: f32) -> V { _mm256_set1_ps(x) }
    unsafe fn vadd(a: V, b: V) -> V { _mm256_add_ps(a, b) }
    unsafe fn vsub(a: V, b: V) -> V { _mm256_sub_ps(a, b) }
    unsafe fn vmul(a: V, b: V) -> V { _mm256_mul_ps(a, b) }
    unsafe fn vdiv(a: V, b: V) -> V { _mm256_div_ps(a, b) }
    unsafe fn fma(a: V, b: V, c: V) -> V { _mm256_fmadd_ps(a, b, c) }
    unsafe fn vmax(a: V, b: V) -> V { _mm256_max_ps(a, b) }
    unsafe fn vmin(a: V, b: V) -> V { _mm256_min_ps(a, b) }
    unsafe fn hsum(v: V) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
    unsafe fn hsum4(v: [V; 4]) -> [f32; 4] {
        let ab = _mm256_hadd_ps(v[0], v[1]);
        let cd = _mm256_hadd_ps(v[2], v[3]);
        let abcd = _mm256_hadd_ps(ab, cd);
        let s = _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
        let mut out = [0.0; 4];
        _mm_storeu_ps(out.as_mut_ptr(), s);
        out
    }
    unsafe fn hmax(v: V) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }
    unsafe fn round(v: V) -> V { _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) }
    unsafe fn pow2i(n: V) -> V {
        let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32(e, 23))
    }
    unsafe fn swap_pairs(v: V) -> V { _mm256_permute_ps(v, 0b10_11_00_01) }
}

slice_kernels!(#[target_feature(enable = "avx2,fma,f16c")]);
