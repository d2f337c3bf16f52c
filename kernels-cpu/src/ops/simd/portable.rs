//! The portable level: `wide::f32x8`, which compiles to whatever vectors the build target
//! has (SSE2 on a baseline x86-64 build, NEON on aarch64) and serves every other CPU.

use wide::{f32x8, i32x8};

type V = f32x8;
const L: usize = 8;

#[inline(always)]
unsafe fn ld(p: *const f32) -> V {
    f32x8::from(p.cast::<[f32; 8]>().read_unaligned())
}
#[inline(always)]
unsafe fn ld_h(p: *const half::f16) -> V {
    let h = p.cast::<[half::f16; 8]>().read_unaligned();
    f32x8::from(h.map(half::f16::to_f32))
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
