//! The ops mixture-of-experts and latent-attention models add: MLA attention over a latent
//! cache (every level against the reference, the reference against a naive f64 formula,
//! batch against token by token), the router (every level against the reference, both
//! against the definition in f64), `add_scaled`, the weighted sum of quantized rows (every
//! level bit for bit against the reference), and YaRN rope against its formula.

mod ops_support;

use ops_support::*;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::ops::{self, Gating, KvType, LatentCache, MlaShape, Rope, Router, Yarn};
use strata_kernels_cpu::{quantize, GgmlType};

/// (heads, rope part, latent, start, tokens)
const MLA_CASES: [(usize, usize, usize, usize, usize); 5] = [
    (1, 16, 64, 0, 1),
    (4, 16, 64, 0, 7),
    (16, 64, 512, 30, 1),
    (6, 8, 40, 5, 3),
    (8, 16, 64, 200, 2),
];

fn mla_setup(
    (nh, pe, kvr, start, n): (usize, usize, usize, usize, usize),
    ty: KvType,
    seed: u64,
) -> (LatentCache, Vec<f32>, Vec<f32>, MlaShape) {
    let mut r = rng(seed);
    let w = pe + kvr;
    let rows = uniform(&mut r, (start + n) * w, 1.0);
    let q = uniform(&mut r, n * nh * w, 1.0);
    let mut cache = LatentCache::try_new(ty, start + n + 2, w).unwrap();
    cache.append(0, &rows).unwrap();
    let shape = MlaShape {
        n_tokens: n,
        n_heads: nh,
        v_off: pe,
        scale: 0.7 / (w as f32).sqrt(),
    };
    (cache, q, rows, shape)
}

fn mla_run(isa: Isa, c: &LatentCache, q: &[f32], start: usize, s: MlaShape) -> Vec<f32> {
    let dv = c.width() - s.v_off;
    let mut out = vec![f32::NAN; s.n_tokens * s.n_heads * dv];
    ops::mla_attention_isa(isa, q, c, start, s, &mut out);
    out
}

/// Two f32 paths' distance for scores of at most `s_terms` (Σ|q·k|·scale) over n keys of
/// width d (the same derivation as ops_attention's bound, without range merging).
fn mla_bound(d: usize, n: usize, s_terms: f32) -> f32 {
    let ds = (gamma(d) + U) * s_terms;
    2.0 * (((2.0 * ds).exp() - 1.0) + 3.0 * U + 2.0 * gamma(n) + 2.0 * U)
}

fn s_terms(q: &[f32], rows: &[f32], w: usize, scale: f32) -> f32 {
    let mut m = 0.0f32;
    for qh in q.chunks(w) {
        for k in rows.chunks(w) {
            m = m.max(qh.iter().zip(k).map(|(a, b)| (a * b).abs()).sum());
        }
    }
    m * scale
}

#[test]
fn mla_attention_matches_reference_at_every_level() {
    for (ci, &c) in MLA_CASES.iter().enumerate() {
        for ty in [KvType::F32, KvType::F16] {
            let (cache, q, rows, s) = mla_setup(c, ty, 10 + ci as u64);
            let want = mla_run(Isa::Reference, &cache, &q, c.3, s);
            let bound = mla_bound(
                cache.width(),
                c.3 + c.4,
                s_terms(&q, &rows, cache.width(), s.scale),
            );
            for isa in levels() {
                let got = mla_run(isa, &cache, &q, c.3, s);
                assert_close(&format!("{isa} {ty:?} case {ci}"), &got, &want, |_| bound);
            }
        }
    }
}

#[test]
fn mla_batch_equals_token_by_token() {
    for (ci, &c) in MLA_CASES.iter().enumerate() {
        let (cache, q, _, s) = mla_setup(c, KvType::F16, 20 + ci as u64);
        let (w, dv) = (cache.width(), cache.width() - s.v_off);
        for isa in levels() {
            let batch = mla_run(isa, &cache, &q, c.3, s);
            for t in 0..c.4 {
                let one_s = MlaShape { n_tokens: 1, ..s };
                let one = mla_run(
                    isa,
                    &cache,
                    &q[t * c.0 * w..(t + 1) * c.0 * w],
                    c.3 + t,
                    one_s,
                );
                assert_eq!(
                    &batch[t * c.0 * dv..(t + 1) * c.0 * dv],
                    &one[..],
                    "{isa} case {ci} token {t}"
                );
            }
        }
    }
}

#[test]
fn mla_reference_matches_naive_masked_formula() {
    for (ci, &c) in MLA_CASES.iter().enumerate() {
        let (nh, _, _, start, n) = c;
        let (cache, q, rows, s) = mla_setup(c, KvType::F32, 30 + ci as u64);
        let (w, dv) = (cache.width(), cache.width() - s.v_off);
        let got = mla_run(Isa::Reference, &cache, &q, start, s);
        let bound = mla_bound(w, start + n, s_terms(&q, &rows, w, s.scale)) / 2.0;
        for t in 0..n {
            for h in 0..nh {
                let qh = &q[(t * nh + h) * w..][..w];
                // Every cached row, the ones after the query's position masked to −∞.
                let sc: Vec<f64> = rows
                    .chunks(w)
                    .enumerate()
                    .map(|(j, k)| {
                        if j > start + t {
                            return f64::NEG_INFINITY;
                        }
                        qh.iter()
                            .zip(k)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum::<f64>()
                            * f64::from(s.scale)
                    })
                    .collect();
                let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..dv {
                    let want: f64 = rows
                        .chunks(w)
                        .zip(&e)
                        .map(|(k, e)| e * f64::from(k[s.v_off + d]))
                        .sum::<f64>()
                        / sum;
                    let g = got[(t * nh + h) * dv + d];
                    assert!(
                        (f64::from(g) - want).abs() <= f64::from(bound),
                        "case {ci} t {t} h {h} d {d}: {g} vs {want}"
                    );
                }
            }
        }
    }
}

fn routers() -> Vec<Router> {
    let r = |gating, norm, scale, groups| Router {
        n_expert: 64,
        n_used: 6,
        gating,
        norm,
        scale,
        groups,
    };
    vec![
        r(Gating::Softmax, true, 1.0, None),
        r(Gating::Softmax, false, 1.0, None),
        r(Gating::Sigmoid, true, 2.5, None),
        r(Gating::Sigmoid, true, 2.5, Some((8, 3))),
        r(Gating::Softmax, false, 0.0, Some((4, 2))),
    ]
}

/// The router's definition in f64: probabilities, selection = p + bias, groups scored by
/// their two best, the k best eligible (ties to the lower index), weights p, normalised
/// and scaled.
fn route_f64(logits: &[f32], bias: Option<&[f32]>, r: &Router) -> (Vec<u32>, Vec<f64>) {
    let l: Vec<f64> = logits.iter().map(|&x| f64::from(x)).collect();
    let p: Vec<f64> = match r.gating {
        Gating::Softmax => {
            let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = l.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        }
        Gating::Sigmoid => l.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
    };
    let sel: Vec<f64> = (0..p.len())
        .map(|e| p[e] + bias.map_or(0.0, |b| f64::from(b[e])))
        .collect();
    let mut ok = vec![true; p.len()];
    if let Some((g, used)) = r.groups {
        let per = p.len() / g;
        let score = |grp: usize| {
            let mut v = sel[grp * per..(grp + 1) * per].to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            v[0] + v[1]
        };
        let mut order: Vec<usize> = (0..g).collect();
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        for &grp in &order[used..] {
            ok[grp * per..(grp + 1) * per].fill(false);
        }
    }
    let mut order: Vec<usize> = (0..p.len()).filter(|&e| ok[e]).collect();
    order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]));
    let ids: Vec<u32> = order[..r.n_used].iter().map(|&e| e as u32).collect();
    let mut w: Vec<f64> = ids.iter().map(|&e| p[e as usize]).collect();
    if r.norm {
        let s: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= s.max(6.103515625e-5));
    }
    if r.scale != 0.0 && r.scale != 1.0 {
        w.iter_mut().for_each(|x| *x *= f64::from(r.scale));
    }
    (ids, w)
}

#[test]
fn route_matches_its_definition_at_every_level() {
    for (ri, r) in routers().iter().enumerate() {
        for seed in 0..20u64 {
            let mut g = rng(1000 + seed);
            let logits = uniform(&mut g, r.n_expert, 4.0);
            let bias = uniform(&mut g, r.n_expert, 0.1);
            let bias = (r.gating == Gating::Sigmoid).then_some(&bias[..]);
            let (want_ids, want_w) = route_f64(&logits, bias, r);
            for isa in levels() {
                let (mut ids, mut w, mut l) =
                    (vec![0; r.n_used], vec![0.0; r.n_used], logits.clone());
                ops::route_isa(isa, &mut l, bias, r, &mut ids, &mut w);
                assert_eq!(ids, want_ids, "{isa} router {ri} seed {seed}");
                for (k, (&got, &want)) in w.iter().zip(&want_w).enumerate() {
                    // exp, a sum of 64 and a division, each a few ulps, scaled by ≤ 2.5.
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * want.abs().max(1e-3),
                        "{isa} router {ri} seed {seed} weight {k}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn route_ties_go_to_the_lower_expert() {
    let r = Router {
        n_expert: 8,
        n_used: 3,
        gating: Gating::Softmax,
        norm: true,
        scale: 1.0,
        groups: None,
    };
    let logits = [0.0, 2.0, 1.0, 2.0, 1.0, 2.0, 0.0, -1.0];
    for isa in levels() {
        let (mut ids, mut w, mut l) = (vec![0; 3], vec![0.0; 3], logits.to_vec());
        ops::route_isa(isa, &mut l, None, &r, &mut ids, &mut w);
        assert_eq!(ids, [1, 3, 5], "{isa}");
        assert_close(&format!("{isa}"), &w, &[1.0 / 3.0; 3], |_| 4.0 * U);
    }
}

#[test]
fn add_scaled_matches_reference_at_every_level() {
    for &n in &LENGTHS {
        let mut g = rng(n as u64);
        let (a, b) = (uniform(&mut g, n, 2.0), uniform(&mut g, n, 2.0));
        let mut want = a.clone();
        ops::add_scaled_ref(&mut want, 0.37, &b);
        for isa in levels() {
            let mut got = a.clone();
            ops::add_scaled_isa(isa, &mut got, 0.37, &b);
            // One product and one add, fused or not: within 2 ulps of the larger term.
            assert_close(&format!("{isa} n {n}"), &got, &want, |i| {
                2.0 * U * (want[i].abs() + (0.37 * b[i]).abs())
            });
        }
    }
}

/// Every level gives the reference's bits, for the formats with a fast path (Q4_0, Q8_0)
/// and for the others (which run the reference), over spans that end short of a full one.
#[test]
fn weighted_rows_match_the_reference_bit_for_bit() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::F16,
    ] {
        for (rows, cols) in [(1, 32), (3, 96), (128, 512), (5, 160), (2, 256)] {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let mut g = rng((rows * cols) as u64);
            let mut w = vec![0u8; rows * cols / ty.block_size() * ty.type_size()];
            quantize(ty, &uniform(&mut g, rows * cols, 1.0), &mut w).unwrap();
            let (p, start) = (uniform(&mut g, rows, 1.0), uniform(&mut g, cols, 1.0));
            let mut want = start.clone();
            ops::weighted_rows_ref(ty, &w, &p, &mut want).unwrap();
            for isa in levels() {
                let mut got = start.clone();
                ops::weighted_rows_isa(isa, ty, &w, &p, &mut got).unwrap();
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} {rows}x{cols} at {isa}");
            }
        }
    }
}

#[test]
fn weighted_rows_that_do_not_fit_are_an_error() {
    let w = vec![0u8; 18 * 3];
    let mut out = vec![0.0; 32];
    assert!(ops::weighted_rows(GgmlType::Q4_0, &w, &[1.0; 2], &mut out).is_err());
    assert!(ops::weighted_rows(GgmlType::Q4_0, &w, &[1.0; 3], &mut out).is_ok());
}

#[test]
fn yarn_rope_matches_its_formula() {
    // ggml's rope_yarn: θ_extrap = pos·base^(−2i/d); θ_interp = freq_scale·θ_extrap; a ramp
    // over pairs between the correction dims mixes them; cos and sin times mscale. DeepSeek's
    // shapes: 64 rotated dims, factor 40, original context 4096, base 10000.
    let (n_rot, base, factor, orig) = (64usize, 10000.0f32, 40.0f32, 4096usize);
    let yarn = Yarn::new(n_rot, orig, base, 1.25);
    let corr = |turns: f64| {
        n_rot as f64 * (orig as f64 / (turns * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * f64::from(base).ln())
    };
    assert_eq!(yarn.low, corr(32.0).floor().max(0.0) as f32);
    assert_eq!(yarn.high, corr(1.0).ceil().min(n_rot as f64 - 1.0) as f32);
    let rope = Rope {
        n_rot,
        freq_base: base,
        freq_scale: 1.0 / factor,
        neox: false,
        yarn: Some(yarn),
    };
    for pos in [0usize, 1, 17, 3000, 100_000] {
        let mut g = rng(pos as u64);
        let x = uniform(&mut g, 2 * n_rot, 1.0);
        let mut got = x.clone();
        ops::rope_ref(&mut got, 2, n_rot, pos, &rope);
        for head in 0..2 {
            for i in 0..n_rot / 2 {
                let extrap = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / n_rot as f64);
                let interp = extrap / f64::from(factor);
                let y =
                    (i as f64 - f64::from(yarn.low)) / f64::from((yarn.high - yarn.low).max(0.001));
                let mix = 1.0 - y.clamp(0.0, 1.0);
                let theta = interp * (1.0 - mix) + extrap * mix;
                let (s, c) = (theta.sin() * 1.25, theta.cos() * 1.25);
                let (x0, x1) = (
                    f64::from(x[head * n_rot + 2 * i]),
                    f64::from(x[head * n_rot + 2 * i + 1]),
                );
                let want = [x0 * c - x1 * s, x0 * s + x1 * c];
                // θ is accumulated in f32 by repeated products (ggml's order): relative
                // error ≤ (i + 2)·u in θ, times |θ| ≤ pos in the angle.
                let dtheta = (i as f64 + 3.0) * f64::from(U) * theta.abs();
                let tol = 1.25 * 2.0 * (dtheta + 4.0 * f64::from(U)) + 1e-6;
                for k in 0..2 {
                    let g = f64::from(got[head * n_rot + 2 * i + k]);
                    assert!(
                        (g - want[k]).abs() <= tol,
                        "pos {pos} pair {i}: {g} vs {}",
                        want[k]
                    );
                }
            }
        }
    }
}
