//! RMSNorm, softmax, SwiGLU and add: every level against the reference twin, and the
//! reference twins against plain f64 formulas.

mod ops_support;

use ops_support::*;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::ops;

#[test]
fn add_is_exact_at_every_level() {
    // One rounding per element, the same in every path: results are bit-identical.
    let mut r = rng(1);
    for isa in levels() {
        for n in LENGTHS.into_iter().chain([1 << 18]) {
            let a = uniform(&mut r, n, 10.0);
            let b = uniform(&mut r, n, 10.0);
            let (mut fast, mut want) = (a.clone(), a.clone());
            ops::add_isa(isa, &mut fast, &b);
            ops::add_ref(&mut want, &b);
            assert_eq!(fast, want, "{isa} n={n}");
        }
    }
}

#[test]
fn rms_norm_matches_reference() {
    // The reference sums squares in f64 (error ≤ u relative after rounding to f32); a fast
    // path sums in f32 in its own order: ≤ γₙ relative. The scale 1/√(mean+ε) halves that
    // relative error through the square root; the division, +ε, sqrt, reciprocal and the two
    // products round once each in both paths (≤ 6u each side). So per element:
    // |fast − ref| ≤ (γₙ/2 + u/2 + 12u)·|x·scale·w|.
    let mut r = rng(2);
    for isa in levels() {
        for n in LENGTHS {
            let x = uniform(&mut r, n, 4.0);
            let w = uniform(&mut r, n, 2.0);
            let (mut fast, mut want) = (vec![0.0; n], vec![0.0; n]);
            ops::rms_norm_isa(isa, &x, &w, 1e-5, &mut fast);
            ops::rms_norm_ref(&x, &w, 1e-5, &mut want);
            let rel = gamma(n) / 2.0 + 12.5 * U;
            assert_close(&format!("{isa} n={n}"), &fast, &want, |i| {
                rel * want[i].abs()
            });
        }
    }
}

#[test]
fn rms_norm_reference_follows_the_formula() {
    let mut r = rng(3);
    let (n, eps) = (576, 1e-5f64);
    let x = uniform(&mut r, n, 3.0);
    let w = uniform(&mut r, n, 2.0);
    let mut got = vec![0.0; n];
    ops::rms_norm_ref(&x, &w, eps as f32, &mut got);
    let mean = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64;
    let scale = 1.0 / (mean + eps).sqrt();
    // f32 rounding of: x², the sum (f64, negligible), mean, +ε, sqrt, 1/·, two products:
    // ≤ 8u relative (the x² rounding enters the sum at most u, halved by the sqrt).
    let want: Vec<f32> = x
        .iter()
        .zip(&w)
        .map(|(&v, &w)| (f64::from(v) * scale * f64::from(w)) as f32)
        .collect();
    assert_close("ref", &got, &want, |i| 8.0 * U * want[i].abs());
}

#[test]
fn rms_norm_rows_is_row_by_row() {
    let mut r = rng(4);
    let (n, rows) = (80, 1000); // 80 000 elements: the threaded path
    let x = uniform(&mut r, n * rows, 3.0);
    let w = uniform(&mut r, n, 1.0);
    for isa in levels() {
        let mut all = vec![0.0; n * rows];
        ops::rms_norm_rows_isa(isa, &x, &w, 1e-6, &mut all);
        for (row, got) in all.chunks(n).enumerate() {
            let mut want = vec![0.0; n];
            ops::rms_norm_isa(isa, &x[row * n..(row + 1) * n], &w, 1e-6, &mut want);
            assert_eq!(got, &want[..], "{isa} row {row}");
        }
    }
}

/// The relative error of the fast e^x against the exact value: Cody–Waite reduction makes
/// r exact to ~u·|r|, the degree-7 Cephes polynomial is within ~1.5u of e^r on |r| ≤ ln2/2,
/// and the FMA evaluation adds ≤ 1.5u: 3u in all. Checked here through softmax on one
/// element pair, where p = e^(x−m) / (1 + e^(x−m)) exposes e^(x−m) directly.
const EXP_REL: f32 = 3.0 * U;

#[test]
fn fast_exp_is_within_three_ulp() {
    // softmax([0, d]) = [1/(1+e^d), e^d/(1+e^d)] for d ≤ 0; with the sum and the final
    // scaling each rounding once (2u + u·e^d/(1+e^d) ≤ 3u), e^d is recovered as p₁/p₀ to
    // within EXP_REL + 6u.
    for isa in levels() {
        let mut d = -87.0f32;
        while d <= 0.0 {
            let mut x = [0.0, d];
            ops::softmax_isa(isa, &mut x);
            let got = f64::from(x[1]) / f64::from(x[0]);
            let want = f64::from(d).exp();
            let rel = ((got - want) / want).abs() as f32;
            assert!(
                rel <= EXP_REL + 6.0 * U,
                "{isa} e^{d}: relative error {rel}"
            );
            d += 0.173;
        }
    }
}

#[test]
fn softmax_matches_reference() {
    // Per element p = e^(x−m)/Σ: both paths compute x − m identically; e^ differs by
    // EXP_REL + u (libm is within u); the fast sum is off by γₙ relative, the reference
    // (f64) by u; 1/Σ and the product round once each side (4u). Below e^(−87.3) the fast
    // exp clamps to 2⁻¹²⁶: an absolute error of at most that.
    let mut r = rng(5);
    for isa in levels() {
        for n in LENGTHS {
            let x = uniform(&mut r, n, 12.0);
            let (mut fast, mut want) = (x.clone(), x.clone());
            ops::softmax_isa(isa, &mut fast);
            ops::softmax_ref(&mut want);
            let rel = EXP_REL + gamma(n) + 6.0 * U;
            assert_close(&format!("{isa} n={n}"), &fast, &want, |i| {
                rel * want[i] + f32::MIN_POSITIVE
            });
        }
    }
}

#[test]
fn softmax_reference_follows_the_formula() {
    let x = [1000.0f32, 999.0, -5.0, 1000.0, f32::NEG_INFINITY];
    let mut p = x;
    ops::softmax_ref(&mut p);
    let m = 1000.0f64;
    let e: Vec<f64> = x.iter().map(|&v| (f64::from(v) - m).exp()).collect();
    let s: f64 = e.iter().sum();
    for (i, (&p, e)) in p.iter().zip(&e).enumerate() {
        // exp, the f64 sum rounded, 1/Σ and the product: ≤ 4u relative.
        let want = (e / s) as f32;
        assert!(
            (p - want).abs() <= 4.0 * U * want,
            "element {i}: {p} vs {want}"
        );
    }
    assert_eq!(p[4], 0.0);
    let mut empty: [f32; 0] = [];
    for isa in Isa::ALL {
        ops::softmax_isa(isa, &mut empty);
    }
}

#[test]
fn swiglu_matches_reference() {
    // silu(g)·u = g/(1 + e^(−g))·u: e^(−g) differs by EXP_REL + u; 1 + e^(−g) adds u and
    // passes on at most the exp's relative error; the division and product round once each
    // side. |fast − ref| ≤ (EXP_REL + 7u)·|ref|, plus 2⁻¹²⁰·|g·u| for the clamp of e^(−g)
    // above e^88 (irrelevant to the range tested, kept for honesty).
    let mut r = rng(6);
    for isa in levels() {
        for n in LENGTHS.into_iter().chain([70_001]) {
            let g = uniform(&mut r, n, 20.0);
            let u = uniform(&mut r, n, 3.0);
            let (mut fast, mut want) = (vec![0.0; n], vec![0.0; n]);
            ops::swiglu_isa(isa, &g, &u, &mut fast);
            ops::swiglu_ref(&g, &u, &mut want);
            assert_close(&format!("{isa} n={n}"), &fast, &want, |i| {
                (EXP_REL + 7.0 * U) * want[i].abs() + (g[i] * u[i]).abs() * 2f32.powi(-120)
            });
        }
    }
}

#[test]
fn swiglu_reference_follows_the_formula() {
    let g = [-30.0f32, -1.0, 0.0, 0.5, 3.0, 40.0];
    let u = [2.0f32, -1.5, 7.0, 1.0, 0.25, -1.0];
    let mut got = [0.0; 6];
    ops::swiglu_ref(&g, &u, &mut got);
    for i in 0..6 {
        let (gd, ud) = (f64::from(g[i]), f64::from(u[i]));
        let want = (gd / (1.0 + (-gd).exp()) * ud) as f32;
        // libm exp (u), 1 + e (u), the division and the product: ≤ 5u relative.
        assert!(
            (got[i] - want).abs() <= 5.0 * U * want.abs(),
            "{i}: {} vs {want}",
            got[i]
        );
    }
}
