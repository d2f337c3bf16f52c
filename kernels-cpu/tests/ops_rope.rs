//! RoPE: every level against the reference twin, both orderings, partial rotation; the
//! reference against θᵢ = freq_scale · pos · base^(−2i/n_rot) in f64.

mod ops_support;

use ops_support::*;
use strata_kernels_cpu::ops::{self, Rope};

fn ropes(head_dim: usize) -> Vec<Rope> {
    let mut v = Vec::new();
    for neox in [false, true] {
        for (n_rot, freq_base, freq_scale) in [
            (head_dim, 10000.0, 1.0),
            (head_dim, 100000.0, 0.25),
            (head_dim / 2, 10000.0, 1.0),
        ] {
            // head_dim / 2 must stay even to be a valid n_rot.
            let n_rot = n_rot & !1;
            v.push(Rope {
                n_rot,
                freq_base,
                freq_scale,
                neox,
                yarn: None,
            });
        }
    }
    v
}

#[test]
fn rope_matches_reference() {
    // Both paths use the same f32 angles and the same sin/cos values; they differ only in
    // how the rotation x0·c − x1·s rounds (an FMA or not): ≤ 3u·(|x0| + |x1|) per element.
    let mut r = rng(11);
    for isa in levels() {
        for head_dim in [2, 6, 64, 80, 128] {
            for rope in ropes(head_dim) {
                for (n_heads, pos) in [(1, 0), (9, 1), (3, 17), (9, 8191)] {
                    let x = uniform(&mut r, n_heads * head_dim, 2.0);
                    let (mut fast, mut want) = (x.clone(), x.clone());
                    ops::rope_isa(isa, &mut fast, n_heads, head_dim, pos, &rope);
                    ops::rope_ref(&mut want, n_heads, head_dim, pos, &rope);
                    let bound = 3.0 * U * 2.0 * 2.0; // |x0| + |x1| < 4
                    assert_close(
                        &format!("{isa} {rope:?} hd={head_dim} pos={pos}"),
                        &fast,
                        &want,
                        |_| bound,
                    );
                    // Dimensions past n_rot are untouched.
                    for h in 0..n_heads {
                        let tail = h * head_dim + rope.n_rot..(h + 1) * head_dim;
                        assert_eq!(fast[tail.clone()], x[tail], "{isa} {rope:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn rope_rows_is_token_by_token() {
    let mut r = rng(12);
    let (n_tokens, n_heads, head_dim, start) = (70, 9, 64, 5); // 40 320 elements: threaded
    let rope = Rope {
        n_rot: 64,
        freq_base: 10000.0,
        freq_scale: 1.0,
        neox: false,
        yarn: None,
    };
    let x = uniform(&mut r, n_tokens * n_heads * head_dim, 1.0);
    for isa in levels() {
        let mut all = x.clone();
        ops::rope_rows_isa(isa, &mut all, n_tokens, n_heads, head_dim, start, &rope);
        for (t, got) in all.chunks(n_heads * head_dim).enumerate() {
            let mut want = x[t * n_heads * head_dim..(t + 1) * n_heads * head_dim].to_vec();
            ops::rope_isa(isa, &mut want, n_heads, head_dim, start + t, &rope);
            assert_eq!(got, &want[..], "{isa} token {t}");
        }
    }
}

#[test]
fn rope_reference_follows_the_formula() {
    // ggml's θᵢ = freq_scale·pos·tsⁱ with ts = base^(−2/n_rot) rounded to f32 and raised to
    // the i-th power by i f32 products. ts is off by ≤ (1 + ln(base)·2/n_rot)·u (powf, and
    // the rounding of −2/n_rot scaled by the exponent's ln(base)); each product adds u and the
    // final ×freq_scale one more: |Δθᵢ| ≤ (i·(2 + 2·ln(base)/n_rot) + 1)·u·θᵢ. The rotated
    // pair then moves by ≤ |Δθ|·|(x0, x1)|, plus sin/cos and rotation roundings ≤ 4u·(|x0|+|x1|).
    let mut r = rng(13);
    for neox in [false, true] {
        for (freq_base, freq_scale, pos) in [
            (10000.0f32, 1.0f32, 1usize),
            (10000.0, 1.0, 4095),
            (500000.0, 0.5, 777),
        ] {
            let (n_heads, head_dim, n_rot) = (3, 80, 64);
            let rope = Rope {
                n_rot,
                freq_base,
                freq_scale,
                neox,
                yarn: None,
            };
            let x = uniform(&mut r, n_heads * head_dim, 1.0);
            let mut got = x.clone();
            ops::rope_ref(&mut got, n_heads, head_dim, pos, &rope);
            for h in 0..n_heads {
                let head = &x[h * head_dim..(h + 1) * head_dim];
                for i in 0..n_rot / 2 {
                    let theta = f64::from(freq_scale)
                        * pos as f64
                        * f64::from(freq_base).powf(-2.0 * i as f64 / n_rot as f64);
                    let (a, b) = if neox {
                        (i, i + n_rot / 2)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (f64::from(head[a]), f64::from(head[b]));
                    let (s, c) = theta.sin_cos();
                    let want = [x0 * c - x1 * s, x0 * s + x1 * c];
                    let dtheta =
                        (i as f64 * (2.0 + 2.0 * f64::from(freq_base).ln() / n_rot as f64) + 1.0)
                            * f64::from(U)
                            * theta;
                    let bound = dtheta * x0.hypot(x1) + 4.0 * f64::from(U) * (x0.abs() + x1.abs());
                    for (k, &idx) in [a, b].iter().enumerate() {
                        let g = f64::from(got[h * head_dim + idx]);
                        assert!(
                            (g - want[k]).abs() <= bound,
                            "neox={neox} pos={pos} pair {i}: {g} vs {} (bound {bound})",
                            want[k]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn rope_at_position_zero_is_identity() {
    let mut r = rng(14);
    let x = uniform(&mut r, 9 * 64, 1.0);
    for isa in levels() {
        for neox in [false, true] {
            let mut y = x.clone();
            ops::rope_isa(
                isa,
                &mut y,
                9,
                64,
                0,
                &Rope {
                    n_rot: 64,
                    freq_base: 1e4,
                    freq_scale: 1.0,
                    neox,
                    yarn: None,
                },
            );
            assert_eq!(y, x, "{isa} neox={neox}");
        }
    }
}
