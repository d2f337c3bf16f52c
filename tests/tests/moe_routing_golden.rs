//! The router (`strata_kernels_cpu::ops::route`) at every level against
//! golden/data/moe/routing.json (golden/gen/moe.py: the rule written from llama.cpp's
//! `build_moe_ffn` in float64): 16 rows of 64 router logits — random ones, exact ties at
//! the k-th place, all equal, very negative, saturated, tied groups — through softmax with
//! and without normalisation, sigmoid with a selection bias, normalised and scaled, and
//! sigmoid with expert groups. Ids must be the reference's, in its order (ties to the
//! lower index); weights within f32's error of the f64 ones.
//!
//! Weight tolerance: a probability is exp (a few ulps) over a sum of 64 terms (γ₆₄), or a
//! sigmoid (a few ulps); normalising adds a sum of 8 and a division, scaling a product.
//! Together under (4 + 64 + 8 + 3)·u ≈ 4.7e-6 relative; 1e-5 relative is held, with an
//! absolute floor of 1e-9 for weights that underflow toward zero.

use serde_json::Value;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::ops::{self, Gating, Router};

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn router_matches_golden_at_every_level() {
    let path = strata_tests::golden("moe/routing.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (n_expert, k) = (
        g["meta"]["n_expert"].as_u64().unwrap() as usize,
        g["meta"]["k"].as_u64().unwrap() as usize,
    );
    let bias = f32s(&g["bias"]);
    let labels: Vec<&str> = g["row_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let groups = match case["n_group"].as_u64().unwrap() as usize {
            0 | 1 => None,
            n => Some((n, case["n_group_used"].as_u64().unwrap() as usize)),
        };
        let r = Router {
            n_expert,
            n_used: k,
            gating: match case["gating"].as_str().unwrap() {
                "softmax" => Gating::Softmax,
                "sigmoid" => Gating::Sigmoid,
                other => panic!("{name}: gating {other}"),
            },
            norm: case["norm"].as_bool().unwrap(),
            scale: case["scale"].as_f64().unwrap() as f32,
            groups,
        };
        let bias = case["bias"].as_bool().unwrap().then_some(&bias[..]);
        for (row, logits) in g["logits"].as_array().unwrap().iter().enumerate() {
            let want_ids: Vec<u32> = case["ids"][row]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let want_w: Vec<f64> = case["weights"][row]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            for isa in Isa::supported() {
                let mut l = f32s(logits);
                let (mut ids, mut w) = (vec![0u32; k], vec![0f32; k]);
                ops::route_isa(isa, &mut l, bias, &r, &mut ids, &mut w);
                let what = format!("{name} row {row} ({}) {isa}", labels[row]);
                assert_eq!(ids, want_ids, "{what}: ids");
                for (j, (&got, &want)) in w.iter().zip(&want_w).enumerate() {
                    let tol = (1e-5 * want.abs()).max(1e-9);
                    assert!(
                        (f64::from(got) - want).abs() <= tol,
                        "{what}: weight {j}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
