//! The portable level: `wide::f32x8`, which compiles to whatever vectors the build target
//! has (SSE2 on a baseline x86-64 build, NEON on aarch64) and serves every other CPU.

use wide::{f32x8, i32x8};

type V = f32x8;
const L: usize = 8;

#[inline(always)]
unsafe fn ld(p: *const f32) -> V {
    f32x8::from(p.cast::<[f32; 8]>().read_unaligned())
}
/// f16 → f32 without F16C: the f16 exponent and mantissa shifted into f32 position and
/// scaled by 2¹¹² (the exponent bias difference) give every finite value exactly,
/// subnormals included; what lands on 2¹⁶ or above was Inf/NaN and gets the f32 all-ones
/// exponent instead.
#[inline(always)]
unsafe fn ld_h(p: *const half::f16) -> V {
    let h = p.cast::<[u16; 8]>().read_unaligned();
    let bits = i32x8::from(h.map(i32::from));
    let em = (bits & i32x8::splat(0x7fff)) << 13;
    let sign = (bits & i32x8::splat(0x8000)) << 16;
    let finite =
        bytemuck::cast::<i32x8, f32x8>(em) * f32x8::splat(f32::from_bits((127 + 112) << 23));
    let special = bytemuck::cast::<i32x8, f32x8>(em | i32x8::splat(0x7f80_0000));
    let value = finite
        .simd_ge(f32x8::splat(65536.0))
        .select(special, finite);
    bytemuck::cast::<i32x8, f32x8>(bytemuck::cast::<f32x8, i32x8>(value) | sign)
}
#[inline(always)]
unsafe fn st(p: *mut f32, v: V) {
    p.cast::<[f32; 8]>().write_unaligned(v.to_array())
}
#[inline(always)]
fn splat(x: f32) -> V {
    f32x8::splat(x)
}
#[inline(always)]
fn vadd(a: V, b: V) -> V {
    a + b
}
#[inline(always)]
fn vsub(a: V, b: V) -> V {
    a - b
}
#[inline(always)]
fn vmul(a: V, b: V) -> V {
    a * b
}
#[inline(always)]
fn vdiv(a: V, b: V) -> V {
    a / b
}
#[inline(always)]
fn fma(a: V, b: V, c: V) -> V {
    a.mul_add(b, c)
}
#[inline(always)]
fn vmax(a: V, b: V) -> V {
    a.fast_max(b)
}
#[inline(always)]
fn vmin(a: V, b: V) -> V {
    a.fast_min(b)
}
#[inline(always)]
fn hsum(v: V) -> f32 {
    v.reduce_add()
}
#[inline(always)]
fn hmax(v: V) -> f32 {
    v.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max)
}
#[inline(always)]
fn hsum4(v: [V; 4]) -> [f32; 4] {
    v.map(|v| v.reduce_add())
}
#[inline(always)]
fn round(v: V) -> V {
    v.round()
}
#[inline(always)]
fn pow2i(n: V) -> V {
    let bits: i32x8 = (n.round_int() + i32x8::splat(127)) << 23;
    bytemuck::cast(bits)
}
#[inline(always)]
fn swap_pairs(v: V) -> V {
    let a = v.to_array();
    f32x8::from([a[1], a[0], a[3], a[2], a[5], a[4], a[7], a[6]])
}

slice_kernels!();

#[cfg(test)]
mod tests {
    use half::f16;

    #[test]
    fn f16_load_matches_half_for_every_bit_pattern() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for chunk in all.chunks(8) {
            // SAFETY: `chunk` holds 8 f16 (65536 is a multiple of 8).
            let got = unsafe { super::ld_h(chunk.as_ptr()) }.to_array();
            for (g, h) in got.iter().zip(chunk) {
                let want = h.to_f32();
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "f16 {:#06x}: got {g:e}, want {want:e}",
                    h.to_bits()
                );
            }
        }
    }
}
