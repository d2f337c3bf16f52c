//! Attention: every level against the reference, batch against token-by-token, f16 cache
//! against f32 cache, and the reference against a naive f64 formula with an explicit mask.

mod ops_support;

use ops_support::*;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::ops::{self, KvCache, KvType};

struct Case {
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    start: usize,
    n_tokens: usize,
}

/// (n_heads, n_kv, head_dim, start, n_tokens)
const fn case(n_heads: usize, n_kv: usize, head_dim: usize, start: usize, n_tokens: usize) -> Case {
    Case {
        n_heads,
        n_kv,
        head_dim,
        start,
        n_tokens,
    }
}

const CASES: [Case; 8] = [
    case(1, 1, 64, 0, 1),
    case(9, 3, 64, 0, 1),
    case(9, 3, 64, 40, 1),
    case(9, 3, 64, 3, 37),
    case(4, 4, 80, 0, 21),
    case(8, 2, 128, 100, 5),
    case(6, 1, 24, 7, 3),
    // Past 1024 keys the fast path splits the context into ranges and merges them.
    case(9, 3, 64, 2100, 2),
];

/// A cache of `ty` filled with positions 0..start + n_tokens, and the batch's queries.
fn setup(c: &Case, ty: KvType, seed: u64) -> (KvCache, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let n_pos = c.start + c.n_tokens;
    let kv_dim = c.n_kv * c.head_dim;
    let k = uniform(&mut r, n_pos * kv_dim, 1.0);
    let v = uniform(&mut r, n_pos * kv_dim, 1.0);
    let q = uniform(&mut r, c.n_tokens * c.n_heads * c.head_dim, 1.0);
    let mut cache = KvCache::new(ty, n_pos + 3, c.n_kv, c.head_dim);
    cache.append(0, &k, &v).unwrap();
    (cache, q, k, v)
}

/// Σᵢ|qᵢ·kᵢ| maximized over the keys a query head sees, times the score scale.
fn max_abs_score_terms(c: &Case, q: &[f32], k: &[f32]) -> f32 {
    let mut m = 0.0f32;
    let kv_dim = c.n_kv * c.head_dim;
    for t in 0..c.n_tokens {
        for h in 0..c.n_heads {
            let qh = &q[(t * c.n_heads + h) * c.head_dim..][..c.head_dim];
            let g = h / (c.n_heads / c.n_kv);
            for j in 0..=c.start + t {
                let kh = &k[j * kv_dim + g * c.head_dim..][..c.head_dim];
                m = m.max(qh.iter().zip(kh).map(|(a, b)| (a * b).abs()).sum());
            }
        }
    }
    m / (c.head_dim as f32).sqrt()
}

/// The f32 arithmetic error of one attention output, for inputs |v| ≤ 1 (derivation):
/// a score is a d-term dot product (error γ_d·S with S = max Σ|q·k|/√d) plus the scaling
/// (u); a softmax weight pⱼ = e^(sⱼ−m)/Σ moves by at most a factor e^(2Δs) − 1 for score
/// errors ≤ Δs, plus exp (≤ 3u fast, u libm) and the n-term sum (γₙ); the output sums n
/// terms pⱼ·vⱼ (γₙ·Σpⱼ|vⱼ| ≤ γₙ) and is scaled once (u). Merging split ranges
/// (e^(mₛ−M) by libm, the weights' sum, a division, a product and an add per range, with
/// at most 3 ranges here) adds ≤ 3·5u. Two paths computed differently can each be this far
/// from the exact value.
fn f32_bound(c: &Case, s_terms: f32) -> f32 {
    let n = c.start + c.n_tokens;
    let ds = (gamma(c.head_dim) + U) * s_terms;
    let one_path = ((2.0 * ds).exp() - 1.0) + 3.0 * U + 2.0 * gamma(n) + 2.0 * U + 15.0 * U;
    2.0 * one_path
}

fn run(isa: Isa, c: &Case, cache: &KvCache, q: &[f32]) -> Vec<f32> {
    let mut out = vec![f32::NAN; q.len()];
    ops::attention_isa(isa, q, cache, c.start, c.n_tokens, c.n_heads, &mut out);
    out
}

#[test]
fn attention_matches_reference_at_every_level() {
    for (ci, c) in CASES.iter().enumerate() {
        for ty in [KvType::F32, KvType::F16] {
            let (cache, q, k, _) = setup(c, ty, 100 + ci as u64);
            let want = run(Isa::Reference, c, &cache, &q);
            let bound = f32_bound(c, max_abs_score_terms(c, &q, &k));
            for isa in levels() {
                let got = run(isa, c, &cache, &q);
                assert_close(&format!("{isa} {ty:?} case {ci}"), &got, &want, |_| bound);
            }
        }
    }
}

#[test]
fn batch_equals_token_by_token() {
    // Each (token, head) is computed alone from the same cache and the same number of keys,
    // so a batch and single-token calls do the same arithmetic: bit-identical.
    for (ci, c) in CASES.iter().enumerate() {
        let (cache, q, _, _) = setup(c, KvType::F16, 200 + ci as u64);
        for isa in levels() {
            let batch = run(isa, c, &cache, &q);
            let tok = c.n_heads * c.head_dim;
            for t in 0..c.n_tokens {
                let mut one = vec![0.0; tok];
                ops::attention_isa(
                    isa,
                    &q[t * tok..(t + 1) * tok],
                    &cache,
                    c.start + t,
                    1,
                    c.n_heads,
                    &mut one,
                );
                assert_eq!(
                    &batch[t * tok..(t + 1) * tok],
                    &one[..],
                    "{isa} case {ci} token {t}"
                );
            }
        }
    }
}

#[test]
fn f16_cache_is_within_f16_rounding_of_f32_cache() {
    // Storing K and V as f16 moves each element by ≤ u₁₆·|x| (u₁₆ = 2⁻¹¹), or by ≤ 2⁻²⁵
    // absolute below the f16 normal range (2⁻¹⁴). A score moves by
    // Δs ≤ Σᵢ|qᵢ|·(u₁₆|kᵢ| + 2⁻²⁵)/√d; the weights by a factor ≤ e^(2Δs) − 1 of the output's
    // max|v| ≤ 1; the values themselves by ≤ u₁₆·|v| + 2⁻²⁵. On top, each run has its own
    // f32 error (f32_bound).
    let u16 = 2f32.powi(-11);
    let sub = 2f32.powi(-25);
    for (ci, c) in CASES.iter().enumerate() {
        let seed = 300 + ci as u64;
        let (c32, q, k, _) = setup(c, KvType::F32, seed);
        let (c16, _, _, _) = setup(c, KvType::F16, seed);
        let q_abs_max: f32 = q
            .chunks(c.head_dim)
            .map(|h| h.iter().map(|x| x.abs()).sum::<f32>())
            .fold(0.0, f32::max);
        let ds =
            u16 * max_abs_score_terms(c, &q, &k) + q_abs_max * sub / (c.head_dim as f32).sqrt();
        let bound =
            ((2.0 * ds).exp() - 1.0) + u16 + sub + f32_bound(c, max_abs_score_terms(c, &q, &k));
        for isa in levels() {
            let a = run(isa, c, &c32, &q);
            let b = run(isa, c, &c16, &q);
            assert_close(&format!("{isa} case {ci}"), &b, &a, |_| bound);
        }
    }
}

#[test]
fn reference_matches_naive_masked_formula() {
    // Naive: f64 scores over every cached position, −∞ for positions after the query's own,
    // f64 softmax and sum. The reference's distance from it is one f32_bound path.
    for (ci, c) in CASES.iter().enumerate() {
        let (cache, q, k, v) = setup(c, KvType::F32, 400 + ci as u64);
        let got = run(Isa::Reference, c, &cache, &q);
        let n_pos = c.start + c.n_tokens;
        let kv_dim = c.n_kv * c.head_dim;
        let bound = f32_bound(c, max_abs_score_terms(c, &q, &k)) / 2.0;
        for t in 0..c.n_tokens {
            for h in 0..c.n_heads {
                let g = h * c.n_kv / c.n_heads;
                let qh = &q[(t * c.n_heads + h) * c.head_dim..][..c.head_dim];
                let s: Vec<f64> = (0..n_pos)
                    .map(|j| {
                        if j > c.start + t {
                            return f64::NEG_INFINITY;
                        }
                        let kh = &k[j * kv_dim + g * c.head_dim..][..c.head_dim];
                        qh.iter()
                            .zip(kh)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum::<f64>()
                            / (c.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..c.head_dim {
                    let want: f64 = (0..n_pos)
                        .map(|j| e[j] * f64::from(v[j * kv_dim + g * c.head_dim + d]))
                        .sum::<f64>()
                        / sum;
                    let gotv = got[(t * c.n_heads + h) * c.head_dim + d];
                    assert!(
                        (f64::from(gotv) - want).abs() <= f64::from(bound),
                        "case {ci} t={t} h={h} d={d}: {gotv} vs {want} (bound {bound})"
                    );
                }
            }
        }
    }
}

#[test]
fn one_position_returns_its_value() {
    // With a single key the softmax weight is exactly 1: out = v.
    let (n_kv, hd) = (3, 64);
    let mut r = rng(500);
    let (k, v) = (
        uniform(&mut r, n_kv * hd, 1.0),
        uniform(&mut r, n_kv * hd, 1.0),
    );
    let q = uniform(&mut r, 9 * hd, 5.0);
    let mut cache = KvCache::new(KvType::F32, 4, n_kv, hd);
    cache.append(0, &k, &v).unwrap();
    for isa in Isa::supported() {
        let mut out = vec![0.0; 9 * hd];
        ops::attention_isa(isa, &q, &cache, 0, 1, 9, &mut out);
        for h in 0..9 {
            assert_eq!(
                &out[h * hd..(h + 1) * hd],
                &v[h / 3 * hd..(h / 3 + 1) * hd],
                "{isa} head {h}"
            );
        }
    }
}

#[test]
fn kv_cache_positions_and_errors() {
    let mut cache = KvCache::new(KvType::F16, 4, 2, 8);
    assert_eq!(KvCache::bytes(KvType::F16, 4, 2, 8), 2 * 4 * 16 * 2);
    assert_eq!(
        cache.keys().as_bytes().len() + cache.values().as_bytes().len(),
        KvCache::bytes(KvType::F16, 4, 2, 8)
    );
    let tok = vec![0.5f32; 16];
    cache.append(0, &tok, &tok).unwrap();
    cache
        .append(
            1,
            &[tok.clone(), tok.clone()].concat(),
            &[tok.clone(), tok.clone()].concat(),
        )
        .unwrap();
    assert_eq!(cache.len(), 3);
    assert!(matches!(
        cache.append(5, &tok, &tok),
        Err(ops::OpError::ContextFull { .. })
    ));
    let five = vec![1.0f32; 16 * 2];
    assert!(matches!(
        cache.append(3, &five, &five),
        Err(ops::OpError::ContextFull { .. })
    ));
    // Rewinding: appending at position 1 drops positions 2 and after.
    cache.append(1, &tok, &tok).unwrap();
    assert_eq!(cache.len(), 2);
    let mut gap = KvCache::new(KvType::F32, 8, 2, 8);
    assert!(matches!(
        gap.append(1, &tok, &tok),
        Err(ops::OpError::KvGap { pos: 1, len: 0 })
    ));
}
