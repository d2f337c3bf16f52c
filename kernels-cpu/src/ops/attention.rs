//! Grouped-query attention over a [`KvCache`], causal, for one token or a batch.
//!
//! Query head h reads KV head h / (n_heads / n_kv_heads). Token t of a batch that starts at
//! position `start_pos` attends to positions 0..=start_pos + t (the causal mask: later
//! positions are not masked to −∞, they are never read). Scores are scaled by 1/√head_dim.

use super::simd::Level;
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
    let (hd, group, n_kv) = (shape.head_dim, shape.group, cache.n_kv_heads());

    // Tasks: (token, KV head, key range). Every query head of a group is done by the task
    // of its KV head, so each K/V row is read from memory once for the whole group. Long
    // contexts are split into ranges (flash-decoding) so a single token still spreads over
    // the threads; the ranges depend only on the number of keys, so a token computes the
    // same way alone or in a batch.
    let mut tasks = Vec::new();
    let mut first_task = Vec::with_capacity(n_tokens);
    for t in 0..n_tokens {
        first_task.push(tasks.len());
        let n_keys = start_pos + t + 1;
        let n_splits = n_keys.div_ceil(SPLIT_KEYS);
        for g in 0..n_kv {
            for s in 0..n_splits {
                tasks.push(Task {
                    t,
                    g,
                    keys: s * n_keys / n_splits..(s + 1) * n_keys / n_splits,
                });
            }
        }
    }
    let part_len = group * (hd + 2);
    let mut parts = vec![0.0f32; tasks.len() * part_len];
    let run = |scratch: &mut Scratch, (task, part): (&Task, &mut [f32])| {
        attend(level, q, cache, n_heads, group, task, scratch, part)
    };
    // Multiply-adds: 2 · head_dim per (query, key) pair.
    let work = n_heads * hd * 2 * (n_tokens * start_pos + n_tokens * (n_tokens + 1) / 2);
    if work >= PARALLEL_MIN_WORK && tasks.len() > 1 {
        tasks
            .par_iter()
            .zip(parts.par_chunks_mut(part_len))
            .for_each_init(Scratch::default, run);
    } else {
        let mut scratch = Scratch::default();
        tasks
            .iter()
            .zip(parts.chunks_mut(part_len))
            .for_each(|task| run(&mut scratch, task));
    }

    // Merge the ranges of each (token, head): out = Σₛ e^(mₛ−M)·oₛ / Σₛ e^(mₛ−M)·lₛ.
    for (i, out) in out.chunks_mut(hd).enumerate() {
        let (t, h) = (i / n_heads, i % n_heads);
        let (g, hg) = (h / group, h % group);
        let n_splits = (start_pos + t + 1).div_ceil(SPLIT_KEYS);
        let slot = |s: usize| {
            let p = &parts[(first_task[t] + g * n_splits + s) * part_len..][..part_len];
            (p[hg], p[group + hg], &p[2 * group + hg * hd..][..hd])
        };
        if n_splits == 1 {
            let (_, l, o) = slot(0);
            out.copy_from_slice(o);
            level.scale(out, 1.0 / l);
            continue;
        }
        let m_max = (0..n_splits)
            .map(|s| slot(s).0)
            .fold(f32::NEG_INFINITY, f32::max);
        let l_sum: f32 = (0..n_splits)
            .map(|s| (slot(s).0 - m_max).exp() * slot(s).1)
            .sum();
        out.fill(0.0);
        for s in 0..n_splits {
            let (m, _, o) = slot(s);
            let w = (m - m_max).exp() / l_sum;
            for (out, &o) in out.iter_mut().zip(o) {
                *out += w * o;
            }
        }
    }
}

/// Keys per range of a split context: long enough that a task outweighs its scheduling.
const SPLIT_KEYS: usize = 1024;
/// Keys per block: a block's K (or V) rows stay in L1 while every head of the group reads them.
const BLOCK_KEYS: usize = 128;

struct Task {
    t: usize,
    g: usize,
    keys: std::ops::Range<usize>,
}

/// A worker's buffers: the scores of a task, and one block of K or V rows as f32.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    rows: Vec<f32>,
}

/// K or V rows of one block, as the kernels read them.
enum Rows<'a> {
    F32(&'a [f32], usize),
    F16(&'a [half::f16], usize),
}

impl Scratch {
    /// The `len` rows of `head_dim` at `row0` (stride kv_dim) of `view`. At the portable
    /// level, whose f16 loads are integer arithmetic, an f16 block read by several heads is
    /// converted once into `rows` (2× faster measured); with F16C a conversion is one
    /// instruction per load, cheaper than a store and reload of f32 rows, so AVX2 and
    /// AVX-512 convert on the fly.
    fn rows<'a>(
        rows: &'a mut Vec<f32>,
        level: Level,
        view: KvView<'a>,
        row0: usize,
        len: usize,
        (hd, kv_dim, group): (usize, usize, usize),
    ) -> Rows<'a> {
        match view {
            KvView::F32(x) => Rows::F32(&x[row0..], kv_dim),
            KvView::F16(x) if group == 1 || level != Level::Portable => {
                Rows::F16(&x[row0..], kv_dim)
            }
            KvView::F16(x) => {
                rows.resize(len * hd, 0.0);
                level.convert_f16_rows(&x[row0..], kv_dim, hd, rows);
                Rows::F32(rows, hd)
            }
        }
    }
}

/// One task: the `group` query heads of KV head `task.g` over the keys `task.keys`, into
/// `part` = [m (group) | l (group) | o (group × head_dim)] with, per head, the maximum score
/// m, l = Σ e^(s−m) and o = Σ e^(s−m)·v (not yet divided by l).
#[allow(clippy::too_many_arguments)]
fn attend(
    level: Level,
    q: &[f32],
    cache: &KvCache,
    n_heads: usize,
    group: usize,
    task: &Task,
    scratch: &mut Scratch,
    part: &mut [f32],
) {
    let (hd, kv_dim) = (cache.head_dim(), cache.kv_dim());
    let dims = (hd, kv_dim, group);
    let scale = 1.0 / (hd as f32).sqrt();
    let n = task.keys.len();
    let qs = &q[(task.t * n_heads + task.g * group) * hd..][..group * hd];
    let (m, rest) = part.split_at_mut(group);
    let (l, o) = rest.split_at_mut(group);
    let Scratch { scores, rows } = scratch;
    scores.resize(group * n, 0.0);
    for b in (0..n).step_by(BLOCK_KEYS) {
        let len = BLOCK_KEYS.min(n - b);
        let row0 = (task.keys.start + b) * kv_dim + task.g * hd;
        let keys = Scratch::rows(rows, level, cache.keys(), row0, len, dims);
        for (h, q) in qs.chunks(hd).enumerate() {
            let s = &mut scores[h * n + b..][..len];
            match keys {
                Rows::F32(k, stride) => level.scores(q, k, stride, scale, s),
                Rows::F16(k, stride) => level.scores_f16(q, k, stride, scale, s),
            }
        }
    }
    for h in 0..group {
        let s = &mut scores[h * n..][..n];
        m[h] = level.max(s);
        l[h] = level.exp_shift_sum(s, m[h]);
    }
    o.fill(0.0);
    for b in (0..n).step_by(BLOCK_KEYS) {
        let len = BLOCK_KEYS.min(n - b);
        let row0 = (task.keys.start + b) * kv_dim + task.g * hd;
        let vals = Scratch::rows(rows, level, cache.values(), row0, len, dims);
        for (h, o) in o.chunks_mut(hd).enumerate() {
            let p = &scores[h * n + b..][..len];
            match vals {
                Rows::F32(v, stride) => level.weighted_sum(p, v, stride, o),
                Rows::F16(v, stride) => level.weighted_sum_f16(p, v, stride, o),
            }
        }
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
            n_heads > 0 && n_heads.is_multiple_of(n_kv),
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
