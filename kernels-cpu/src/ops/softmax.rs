//! Numerically stable softmax: subtract the maximum before exponentiating, so no term
//! overflows and the largest is exactly 1.

use super::Path;
use crate::isa::{self, Isa};

/// Replaces `x` with softmax(x). An empty slice is left as is.
pub fn softmax(x: &mut [f32]) {
    softmax_isa(isa::active(), x)
}

pub fn softmax_isa(isa: Isa, x: &mut [f32]) {
    match Path::of(isa) {
        Path::Reference => softmax_ref(x),
        Path::Simd(level) => {
            if x.is_empty() {
                return;
            }
            let m = level.max(x);
            let sum = level.exp_shift_sum(x, m);
            level.scale(x, 1.0 / sum);
        }
    }
}

/// The reference twin: ggml accumulates the sum in double precision.
pub fn softmax_ref(x: &mut [f32]) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
