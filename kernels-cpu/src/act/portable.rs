//! Activation quantizers written with `wide` (8 f32 lanes), for any CPU. Same arithmetic as
//! the scalar references, in the same order per element, so the blocks are identical.

use half::f16;
use wide::f32x8;

use super::{bsums, first_with_magnitude, qsum};
use crate::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};

fn lanes(x: &[f32]) -> impl Iterator<Item = f32x8> + '_ {
    x.chunks_exact(8)
        .map(|c| f32x8::from(<[f32; 8]>::try_from(c).expect("8 lanes")))
}

fn amax(x: &[f32]) -> f32 {
    let m = lanes(x).fold(f32x8::splat(0.0), |m, v| m.max(v.abs()));
    m.to_array().into_iter().fold(0.0f32, f32::max)
}

/// d (f32) and the quants of one 32-element block, as `formats::q8_0::quantize_block`.
fn q8_block(x: &[f32]) -> (f32, [i8; QK]) {
    let d = amax(x) / 127.0;
    let id = f32x8::splat(if d == 0.0 { 0.0 } else { 1.0 / d });
    let mut qs = [0i8; QK];
    for (q, v) in qs.chunks_exact_mut(8).zip(lanes(x)) {
        // `round` of wide is ties-to-even; the reference rounds halves away from zero:
        // trunc, then step away from zero where the dropped part is at least one half.
        let r = v * id;
        let t = r.trunc();
        let step = (r - t).abs().simd_ge(f32x8::splat(0.5));
        let away = f32x8::splat(1.0).copysign(r);
        let rounded = step.select(t + away, t);
        for (q, r) in q.iter_mut().zip(rounded.to_array()) {
            *q = r as i8;
        }
    }
    (d, qs)
}

pub fn q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = q8_block(x);
        b.d = f16::from_f32(d);
        b.qs = qs;
    }
}

pub fn q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = q8_block(x);
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(qsum(&qs) as f32 * d);
        b.qs = qs;
    }
}

pub fn q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let max = x[first_with_magnitude(x, amax(x))];
        if max == 0.0 {
            *b = bytemuck::Zeroable::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in b.qs.chunks_exact_mut(8).zip(lanes(x)) {
            let r = (v * f32x8::splat(iscale))
                .round_ties_even()
                .min(f32x8::splat(127.0));
            for (q, r) in q.iter_mut().zip(r.to_array()) {
                *q = r as i8;
            }
        }
        b.bsums = bsums(&b.qs);
        b.d = 1.0 / iscale;
    }
}
