//! The slice kernels the f32 ops are built from, written once (in [`slice_kernels!`]) over a
//! small set of vector primitives, and instantiated per SIMD level: `wide` (portable), AVX2
//! and AVX-512. Each level module defines the primitives with its own `#[target_feature]`
//! attributes and expands the macro with the same attributes, so every primitive inlines
//! into the kernels (a trait over vector types would not: LLVM does not inline a function
//! that needs a target feature into one that lacks it).
//!
//! [`Level`] is the only way in: it is built from the detected CPU features, so holding a
//! `Level::Avx512` proves the CPU has AVX-512, which is what makes the calls sound.

#[macro_use]
mod kernels;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use half::f16;

/// A SIMD level the CPU running this process supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Level {
    /// The best level this CPU supports that is not above `wanted`.
    pub(crate) fn at_most(wanted: Wanted) -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = avx2 && is_x86_feature_detected!("avx512f");
            match wanted {
                Wanted::Avx512 if avx512 => return Level::Avx512,
                Wanted::Avx512 | Wanted::Avx2 if avx2 => return Level::Avx2,
                _ => {}
            }
        }
        let _ = wanted;
        Level::Portable
    }
}

/// The level a caller asks for; [`Level::at_most`] turns it into one the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    Portable,
    Avx2,
    Avx512,
}

/// Generates one method per kernel on [`Level`] that calls that level's instance.
macro_rules! dispatch {
    ($( fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)?; )*) => {
        impl Level {
            $(
                #[inline]
                pub(crate) fn $name(self, $($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: a `Level` is only built by `at_most`, after detecting the
                    // features its module is compiled for; the kernels check their slice
                    // lengths with asserts before any unchecked access.
                    unsafe {
                        match self {
                            Level::Portable => portable::$name($($arg),*),
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx2 => avx2::$name($($arg),*),
                            #[cfg(target_arch = "x86_64")]
                            Level::Avx512 => avx512::$name($($arg),*),
                        }
                    }
                }
            )*
        }
    };
}

dispatch! {
    fn sum_sq(x: &[f32]) -> f32;
    fn max(x: &[f32]) -> f32;
    fn scale(y: &mut [f32], a: f32);
    fn mul_scale(x: &[f32], s: f32, w: &[f32], out: &mut [f32]);
    fn add(a: &mut [f32], b: &[f32]);
    fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]);
    fn exp_shift_sum(x: &mut [f32], m: f32) -> f32;
    fn rotate_halves(x0: &mut [f32], x1: &mut [f32], cos: &[f32], sin: &[f32]);
    fn rotate_adjacent(x: &mut [f32], cos2: &[f32], sin2: &[f32]);
    fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]);
    fn scores_f16(q: &[f32], keys: &[f16], stride: usize, scale: f32, out: &mut [f32]);
    fn weighted_sum(p: &[f32], vals: &[f32], stride: usize, out: &mut [f32]);
    fn weighted_sum_f16(p: &[f32], vals: &[f16], stride: usize, out: &mut [f32]);
    fn convert_f16_rows(src: &[f16], stride: usize, d: usize, dst: &mut [f32]);
}
