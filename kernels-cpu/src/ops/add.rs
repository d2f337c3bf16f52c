//! Element-wise addition (the residual connections): a += b.

use super::{Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};
use rayon::prelude::*;

/// Adds `b` to `a` element by element (same length).
pub fn add(a: &mut [f32], b: &[f32]) {
    add_isa(isa::active(), a, b)
}

pub fn add_isa(isa: Isa, a: &mut [f32], b: &[f32]) {
    check(a.len(), b.len());
    match Path::of(isa) {
        Path::Reference => add_ref(a, b),
        Path::Simd(level) if a.len() >= 4 * PARALLEL_MIN_WORK => {
            // Memory-bound: split only when each thread gets a sizeable piece.
            let chunk = a.len().div_ceil(rayon::current_num_threads());
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .for_each(|(a, b)| level.add(a, b));
        }
        Path::Simd(level) => level.add(a, b),
    }
}

pub fn add_ref(a: &mut [f32], b: &[f32]) {
    check(a.len(), b.len());
    for (a, &b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

fn check(a: usize, b: usize) {
    assert!(a == b, "add: lengths differ, {a} and {b}");
}

/// `a += w · b` element by element (same length): one expert's output into the sum of a
/// token's experts.
pub fn add_scaled(a: &mut [f32], w: f32, b: &[f32]) {
    add_scaled_isa(isa::active(), a, w, b)
}

pub fn add_scaled_isa(isa: Isa, a: &mut [f32], w: f32, b: &[f32]) {
    check(a.len(), b.len());
    match Path::of(isa) {
        Path::Reference => add_scaled_ref(a, w, b),
        // A weighted sum of one row is this.
        Path::Simd(level) => level.weighted_sum(&[w], b, b.len(), a),
    }
}

pub fn add_scaled_ref(a: &mut [f32], w: f32, b: &[f32]) {
    check(a.len(), b.len());
    for (a, &b) in a.iter_mut().zip(b) {
        *a += w * b;
    }
}
