//! Shared by the ops_* tests: seeded random inputs, the levels to test, error-bound helpers.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_kernels_cpu::isa::Isa;

/// Unit roundoff of f32.
pub const U: f32 = f32::EPSILON / 2.0;

/// γₙ = n·u / (1 − n·u): the relative error bound of a sum of n terms in f32, in any order.
pub fn gamma(n: usize) -> f32 {
    let nu = n as f32 * U;
    nu / (1.0 - nu)
}

/// Every level this CPU runs (the reference included, which must match itself).
pub fn levels() -> Vec<Isa> {
    Isa::supported()
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in [-r, r).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, r: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-r..r)).collect()
}

/// Lengths that hit every tail: below, at and just past vector widths (8, 16) and their
/// unrolled multiples (32, 64), plus model sizes.
pub const LENGTHS: [usize; 14] = [1, 2, 7, 8, 15, 16, 17, 31, 63, 64, 65, 80, 576, 1539];

/// Asserts |got − want| ≤ tol(i) for every element, naming the first that fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for i in 0..got.len() {
        let (g, w, t) = (got[i], want[i], tol(i));
        assert!(
            (g - w).abs() <= t,
            "{what}: element {i} of {}: got {g}, want {w}, diff {} > tolerance {t}",
            got.len(),
            (g - w).abs()
        );
    }
}
