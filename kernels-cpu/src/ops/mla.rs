//! Multi-head latent attention in its absorbed form (DeepSeek-V2/V3/R1): every query head
//! attends over the same cached rows `C[j]` = [rotary key | latent] of a [`LatentCache`],
//! the whole row as the key and the latent part as the value, so the cache is read once per
//! token for all heads instead of once per head.
//!
//! `out[t][h] = Σⱼ softmax_j(scale · q[t][h] · C[j]) · C[j][v_off..]` over j ≤ start_pos + t,
//! with `q` `n_tokens × n_heads × width` (each head's query already multiplied into the
//! latent space) and `out` `n_tokens × n_heads × (width − v_off)`.

use rayon::prelude::*;

use super::simd::Level;
use super::{KvView, LatentCache, Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};

/// Query heads one task takes: enough work per task for the scheduling to pay, and enough
/// tasks for the threads when one token decodes.
const HEADS_PER_TASK: usize = 4;

/// The shape and scale of one call.
#[derive(Debug, Clone, Copy)]
pub struct MlaShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    /// Where the value (the latent) starts in a cached row.
    pub v_off: usize,
    /// Scale of the scores (DeepSeek: mscale² / √(qk_nope + qk_rope)).
    pub scale: f32,
}

pub fn mla_attention(
    q: &[f32],
    cache: &LatentCache,
    start_pos: usize,
    s: MlaShape,
    out: &mut [f32],
) {
    mla_attention_isa(isa::active(), q, cache, start_pos, s, out)
}

pub fn mla_attention_isa(
    isa: Isa,
    q: &[f32],
    cache: &LatentCache,
    start_pos: usize,
    s: MlaShape,
    out: &mut [f32],
) {
    let level = match Path::of(isa) {
        Path::Reference => return mla_attention_ref(q, cache, start_pos, s, out),
        Path::Simd(level) => level,
    };
    let (w, dv) = check(q.len(), out.len(), cache, start_pos, s);
    // Tasks never straddle tokens: a whole number of them per token.
    let per_task = if s.n_heads.is_multiple_of(HEADS_PER_TASK) {
        HEADS_PER_TASK
    } else {
        1
    };
    let task = |(i, out): (usize, &mut [f32])| {
        let mut scores = Vec::new();
        for (k, out) in out.chunks_mut(dv).enumerate() {
            // Heads are numbered over tokens × heads, row-major.
            let (t, h) = (
                (i * per_task + k) / s.n_heads,
                (i * per_task + k) % s.n_heads,
            );
            let q = &q[(t * s.n_heads + h) * w..][..w];
            attend_one(level, q, cache, start_pos + t + 1, s, &mut scores, out);
        }
    };
    let chunk = per_task * dv;
    let work = s.n_heads * w * 2 * (s.n_tokens * start_pos + s.n_tokens * (s.n_tokens + 1) / 2);
    if work >= PARALLEL_MIN_WORK && out.len() > chunk {
        out.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// One (token, head): scores over keys `0..n_keys`, softmax, weighted sum of the latents.
fn attend_one(
    level: Level,
    q: &[f32],
    cache: &LatentCache,
    n_keys: usize,
    s: MlaShape,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let w = cache.width();
    scores.resize(n_keys, 0.0);
    match cache.rows() {
        KvView::F32(c) => level.scores(q, c, w, s.scale, scores),
        KvView::F16(c) => level.scores_f16(q, c, w, s.scale, scores),
    }
    let m = level.max(scores);
    let l = level.exp_shift_sum(scores, m);
    out.fill(0.0);
    match cache.rows() {
        KvView::F32(c) => level.weighted_sum(scores, &c[s.v_off..], w, out),
        KvView::F16(c) => level.weighted_sum_f16(scores, &c[s.v_off..], w, out),
    }
    level.scale(out, 1.0 / l);
}

/// The reference twin: scalar loops, one (token, head) after the other.
pub fn mla_attention_ref(
    q: &[f32],
    cache: &LatentCache,
    start_pos: usize,
    s: MlaShape,
    out: &mut [f32],
) {
    let (w, dv) = check(q.len(), out.len(), cache, start_pos, s);
    let at = |i: usize| match cache.rows() {
        KvView::F32(c) => c[i],
        KvView::F16(c) => c[i].to_f32(),
    };
    for (i, out) in out.chunks_mut(dv).enumerate() {
        let t = i / s.n_heads;
        let q = &q[i * w..(i + 1) * w];
        let mut p: Vec<f32> = (0..=start_pos + t)
            .map(|j| s.scale * (0..w).map(|c| q[c] * at(j * w + c)).sum::<f32>())
            .collect();
        super::softmax_ref(&mut p);
        out.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (c, o) in out.iter_mut().enumerate() {
                *o += pj * at(j * w + s.v_off + c);
            }
        }
    }
}

/// (row width, value width), after checking the shapes.
fn check(
    q: usize,
    out: usize,
    cache: &LatentCache,
    start_pos: usize,
    s: MlaShape,
) -> (usize, usize) {
    let w = cache.width();
    assert!(
        s.v_off < w,
        "mla_attention: value offset {} is not inside rows of {w}",
        s.v_off
    );
    let dv = w - s.v_off;
    assert!(
        q == s.n_tokens * s.n_heads * w && out == s.n_tokens * s.n_heads * dv,
        "mla_attention: q has {q} and out {out} elements, expected {} tokens × {} heads × {w} and × {dv}",
        s.n_tokens,
        s.n_heads
    );
    assert!(
        start_pos + s.n_tokens <= cache.len(),
        "mla_attention: positions up to {} are not in the cache (it holds {})",
        start_pos + s.n_tokens,
        cache.len()
    );
    (w, dv)
}
