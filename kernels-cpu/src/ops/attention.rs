//! Grouped-query attention over a [`KvCache`], causal, for one token or a batch.
//!
//! Query head h reads KV head h / (n_heads / n_kv_heads). Token t of a batch that starts at
//! position `start_pos` attends to positions 0..=start_pos + t (the causal mask: later
//! positions are not masked to −∞, they are never read). Scores are scaled by 1/√head_dim.

use super::{KvCache, KvView, Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};
use rayon::prelude::*;

/// `out[t][h] = Σⱼ softmax(q[t][h] · K[j][g] / √head_dim) · V[j][g]` over j ≤ start_pos + t,
/// with g = h / (n_heads / n_kv_heads). `q` and `out` are `n_tokens × n_heads × head_dim`;
/// the cache must already hold positions `0..start_pos + n_tokens` (append the batch's own
/// keys and values first).
pub fn attention(
    q: &[f32],
    cache: &KvCache,
    start_pos: usize,
    n_tokens: usize,
    n_heads: usize,
    out: &mut [f32],
) {
    attention_isa(isa::active(), q, cache, start_pos, n_tokens, n_heads, out)
}

pub fn attention_isa(
    isa: Isa,
    q: &[f32],
    cache: &KvCache,
    start_pos: usize,
    n_tokens: usize,
    n_heads: usize,
    out: &mut [f32],
) {
    let level = match Path::of(isa) {
        Path::Reference => return attention_ref(q, cache, start_pos, n_tokens, n_heads, out),
        Path::Simd(level) => level,
    };
    let shape = Shape::check(q.len(), out.len(), cache, start_pos, n_tokens, n_heads);
    let (hd, kv_dim) = (shape.head_dim, cache.kv_dim());
    let scale = 1.0 / (hd as f32).sqrt();
    let (keys, values) = (cache.keys(), cache.values());

    // One task per (token, head); `scores` is a per-worker scratch buffer.
    let one = |scores: &mut Vec<f32>, (i, out): (usize, &mut [f32])| {
        let (t, h) = (i / n_heads, i % n_heads);
        let n_keys = start_pos + t + 1;
        let q = &q[i * hd..(i + 1) * hd];
        let head = h / shape.group * hd;
        scores.resize(n_keys, 0.0);
        match keys {
            KvView::F32(k) => level.scores(q, &k[head..], kv_dim, scale, scores),
            KvView::F16(k) => level.scores_f16(q, &k[head..], kv_dim, scale, scores),
        }
        let m = level.max(scores);
        let sum = level.exp_shift_sum(scores, m);
        match values {
            KvView::F32(v) => level.weighted_sum(scores, &v[head..], kv_dim, out),
            KvView::F16(v) => level.weighted_sum_f16(scores, &v[head..], kv_dim, out),
        }
        level.scale(out, 1.0 / sum);
    };
    // Multiply-adds: 2 · head_dim per (query, key) pair.
    let work = n_heads * hd * 2 * (n_tokens * start_pos + n_tokens * (n_tokens + 1) / 2);
    if work >= PARALLEL_MIN_WORK && n_tokens * n_heads > 1 {
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each_init(Vec::new, one);
    } else {
        let mut scores = Vec::new();
        out.chunks_mut(hd)
            .enumerate()
            .for_each(|task| one(&mut scores, task));
    }
}

/// The reference twin: scalar loops, scores then [`super::softmax_ref`] then the weighted
/// sum of values, one (token, head) after the other.
pub fn attention_ref(
    q: &[f32],
    cache: &KvCache,
    start_pos: usize,
    n_tokens: usize,
    n_heads: usize,
    out: &mut [f32],
) {
    let shape = Shape::check(q.len(), out.len(), cache, start_pos, n_tokens, n_heads);
    let (hd, kv_dim) = (shape.head_dim, cache.kv_dim());
    let scale = 1.0 / (hd as f32).sqrt();
    let at = |view: KvView<'_>, i: usize| match view {
        KvView::F32(s) => s[i],
        KvView::F16(s) => s[i].to_f32(),
    };
    for (i, out) in out.chunks_mut(hd).enumerate() {
        let (t, h) = (i / n_heads, i % n_heads);
        let q = &q[i * hd..(i + 1) * hd];
        let head = h / shape.group * hd;
        let mut p: Vec<f32> = (0..=start_pos + t)
            .map(|j| {
                let k = j * kv_dim + head;
                scale * (0..hd).map(|c| q[c] * at(cache.keys(), k + c)).sum::<f32>()
            })
            .collect();
        super::softmax_ref(&mut p);
        out.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (c, o) in out.iter_mut().enumerate() {
                *o += pj * at(cache.values(), j * kv_dim + head + c);
            }
        }
    }
}

struct Shape {
    head_dim: usize,
    /// Query heads per KV head.
    group: usize,
}

impl Shape {
    fn check(
        q: usize,
        out: usize,
        cache: &KvCache,
        start_pos: usize,
        n_tokens: usize,
        n_heads: usize,
    ) -> Shape {
        let (n_kv, hd) = (cache.n_kv_heads(), cache.head_dim());
        assert!(
            n_heads > 0 && n_heads % n_kv == 0,
            "attention: {n_heads} query heads is not a multiple of {n_kv} KV heads"
        );
        let expected = n_tokens * n_heads * hd;
        assert!(
            q == expected && out == expected,
            "attention: q has {q} and out {out} elements, expected {n_tokens} × {n_heads} × {hd}"
        );
        assert!(
            start_pos + n_tokens <= cache.len(),
            "attention: positions up to {} are not in the cache (it holds {})",
            start_pos + n_tokens,
            cache.len()
        );
        Shape {
            head_dim: hd,
            group: n_heads / n_kv,
        }
    }
}
