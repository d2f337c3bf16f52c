//! The AVX-512 level (AVX-512F): 16 lanes of f32 in a `__m512`.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89, above the workspace's declared
//! rust-version 1.85: building this crate needs 1.89 (the lead decides whether to raise it).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

type V = __m512;
const L: usize = 16;

macro_rules! avx512 {
    ($($item:item)*) => { $( #[target_feature(enable = "avx512f,avx2,fma,f16c")] #[inline] $item )* };
}

avx512! {
    unsafe fn ld(p: *const f32) -> V { _mm512_loadu_ps(p) }
    unsafe fn ld_h(p: *const half::f16) -> V { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    unsafe fn st(p: *mut f32, v: V) { _mm512_storeu_ps(p, v) }
    unsafe fn splat(x: f32) -> V { _mm512_set1_ps(x) }
    unsafe fn vadd(a: V, b: V) -> V { _mm512_add_ps(a, b) }
    unsafe fn vsub(a: V, b: V) -> V { _mm512_sub_ps(a, b) }
    unsafe fn vmul(a: V, b: V) -> V { _mm512_mul_ps(a, b) }
    unsafe fn vdiv(a: V, b: V) -> V { _mm512_div_ps(a, b) }
    unsafe fn fma(a: V, b: V, c: V) -> V { _mm512_fmadd_ps(a, b, c) }
    unsafe fn vmax(a: V, b: V) -> V { _mm512_max_ps(a, b) }
    unsafe fn vmin(a: V, b: V) -> V { _mm512_min_ps(a, b) }
    unsafe fn hsum(v: V) -> f32 { _mm512_reduce_add_ps(v) }
    unsafe fn hmax(v: V) -> f32 { _mm512_reduce_max_ps(v) }
    unsafe fn hsum4(v: [V; 4]) -> [f32; 4] {
        // Fold each to 256 bits, then the AVX2 transpose-and-add.
        let half = |x: V| {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
            _mm256_add_ps(_mm512_castps512_ps256(x), hi)
        };
        let ab = _mm256_hadd_ps(half(v[0]), half(v[1]));
        let cd = _mm256_hadd_ps(half(v[2]), half(v[3]));
        let abcd = _mm256_hadd_ps(ab, cd);
        let s = _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
        let mut out = [0.0; 4];
        _mm_storeu_ps(out.as_mut_ptr(), s);
        out
    }
    unsafe fn round(v: V) -> V { _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) }
    unsafe fn pow2i(n: V) -> V {
        let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        _mm512_castsi512_ps(_mm512_slli_epi32(e, 23))
    }
    unsafe fn swap_pairs(v: V) -> V { _mm512_permute_ps(v, 0b10_11_00_01) }
}

slice_kernels!(#[target_feature(enable = "avx512f,avx2,fma,f16c")]);
