//! SwiGLU, the feed-forward gate: out = silu(gate) · up, silu(g) = g / (1 + e^(−g)).

use super::{Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};
use rayon::prelude::*;

/// `out = silu(gate) · up`, element by element (all the same length).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    swiglu_isa(isa::active(), gate, up, out)
}

pub fn swiglu_isa(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    check(gate.len(), up.len(), out.len());
    match Path::of(isa) {
        Path::Reference => swiglu_ref(gate, up, out),
        // A batch of tokens (e.g. 512 × 1536) is worth splitting; one token's row is not.
        Path::Simd(level) if out.len() >= PARALLEL_MIN_WORK => {
            const CHUNK: usize = 1 << 14;
            out.par_chunks_mut(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
                .for_each(|(out, (gate, up))| level.silu_mul(gate, up, out));
        }
        Path::Simd(level) => level.silu_mul(gate, up, out),
    }
}

pub fn swiglu_ref(gate: &[f32], up: &[f32], out: &mut [f32]) {
    check(gate.len(), up.len(), out.len());
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

fn check(gate: usize, up: usize, out: usize) {
    assert!(
        gate == up && up == out,
        "swiglu: gate, up and out lengths differ: {gate}, {up}, {out}"
    );
}
