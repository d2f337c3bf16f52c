//! RMSNorm as ggml computes it: y = x · 1/√(mean(x²) + ε), then y · weight.

use super::{Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};
use rayon::prelude::*;

/// Normalizes one row `x` into `out` and multiplies by `weight` (all the same length).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_isa(isa::active(), x, weight, eps, out)
}

pub fn rms_norm_isa(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    check(x.len(), weight.len(), out.len());
    match Path::of(isa) {
        Path::Reference => rms_norm_ref(x, weight, eps, out),
        Path::Simd(level) => {
            let mean = level.sum_sq(x) / x.len() as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            level.mul_scale(x, scale, weight, out);
        }
    }
}

/// The reference twin: ggml sums the squares in double precision.
pub fn rms_norm_ref(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    check(x.len(), weight.len(), out.len());
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Normalizes every row of `x` (`n_rows × weight.len()`, row-major) into `out`.
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_rows_isa(isa::active(), x, weight, eps, out)
}

pub fn rms_norm_rows_isa(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    assert!(n > 0, "rms_norm_rows: empty weight");
    assert!(
        x.len().is_multiple_of(n) && out.len() == x.len(),
        "rms_norm_rows: x has {} and out {} elements, not whole rows of {n}",
        x.len(),
        out.len()
    );
    let row = |(x, out): (&[f32], &mut [f32])| rms_norm_isa(isa, x, weight, eps, out);
    if x.len() >= PARALLEL_MIN_WORK && x.len() > n {
        x.par_chunks(n).zip(out.par_chunks_mut(n)).for_each(row);
    } else {
        x.chunks(n).zip(out.chunks_mut(n)).for_each(row);
    }
}

fn check(x: usize, weight: usize, out: usize) {
    assert!(
        x > 0 && weight == x && out == x,
        "rms_norm: x, weight and out must have one non-zero length, got {x}, {weight}, {out}"
    );
}
