//! qwen3moe and deepseek2 against the numpy reference forward pass (`golden/gen/moe.py`,
//! data in `golden/data/moe/`): tiny random-weight files with a real vocabulary, in Q8_0,
//! Q4_0 and Q4_K (made by our quantizer) experts, deepseek2 with and without a q
//! projection rank and in both MLA file kinds. Per prompt: the token ids, teacher-forced
//! logits against both reference modes, greedy tokens equal to the mode that computes as
//! ggml does until a near tie, and the experts each position chose.

use serde_json::Value;
use strata_engine::gguf::GgufFile;
use strata_engine::model::Model;
use strata_engine::runner::{Runner, RunnerOptions};
use strata_engine::tokenizer::Tokenizer;
use strata_kernels_cpu::isa::{self, Isa};
use strata_tests::forward::{greedy_until_near_tie, ids, logits_at};

const FILES: [&str; 6] = [
    "tiny-qwen3moe-q8_0",
    "tiny-qwen3moe-q4_0",
    "tiny-qwen3moe-q4_k",
    "tiny-deepseek2-lite",
    "tiny-deepseek2",
    "tiny-deepseek2-kvb",
];

/// Largest |a − b| over the reference's top-10 ids at every position, `b` given as the
/// reference's own logits (`top`) or as another run of ours.
fn worst(ours: &[f32], n_vocab: usize, top: &Value, other: Option<&[f32]>) -> f64 {
    let mut w = 0.0f64;
    for (t, pos) in top.as_array().unwrap().iter().enumerate() {
        for (j, id) in ids(&pos["ids"]).into_iter().enumerate() {
            let i = t * n_vocab + id as usize;
            let b = match other {
                Some(o) => o[i] as f64,
                None => pos["logits"][j].as_f64().unwrap(),
            };
            w = w.max((ours[i] as f64 - b).abs());
        }
    }
    w
}

/// The largest difference between the two reference modes' top logits (same ids).
fn modes_apart(case: &Value) -> f64 {
    let (g, f) = (&case["top_ggml"], &case["top_float"]);
    let mut w = 0.0f64;
    for (pg, pf) in g.as_array().unwrap().iter().zip(f.as_array().unwrap()) {
        let fid = ids(&pf["ids"]);
        for (j, id) in ids(&pg["ids"]).into_iter().enumerate() {
            if let Some(k) = fid.iter().position(|&x| x == id) {
                let d = pg["logits"][j].as_f64().unwrap() - pf["logits"][k].as_f64().unwrap();
                w = w.max(d.abs());
            }
        }
    }
    w
}

// Rounding sensitivity S, as for SmolLM2 (engine_golden.rs): our fastest kernels and the
// portable ones compute the same formulas with f32 sums in another order; with activations
// quantized to int8 before every product, a last-bit difference can move one value across
// a rounding step and the step travels on. How far that alone moves these models' logits is
// measured by running both, and held below S_MAX. Measured: see docs/moe.md.
const S_MAX: f64 = 0.25;

#[test]
fn moe_models_match_the_reference_forward_pass() {
    for stem in FILES {
        let path = strata_tests::golden(&format!("moe/{stem}.gguf"));
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let model = Model::bind(&file, |_| {}).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
        let n_vocab = model.cfg.n_vocab;
        let g: Value = serde_json::from_str(
            &std::fs::read_to_string(strata_tests::golden(&format!("moe/{stem}.json"))).unwrap(),
        )
        .unwrap();
        for case in g["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let prompt_ids = ids(&case["prompt_ids"]);
            assert_eq!(
                tok.encode(prompt).unwrap(),
                prompt_ids,
                "{stem}: ids of {prompt:?}"
            );

            let seq = ids(&case["teacher_forced_ids"]);
            let fast = isa::active();
            let logits_at = |level: Isa| logits_at(&model, &seq, level);
            let logits = logits_at(fast);
            let portable = logits_at(Isa::Portable);
            let s = worst(&logits, n_vocab, &case["top_ggml"], Some(&portable));
            let d_ggml = worst(&logits, n_vocab, &case["top_ggml"], None);
            let d_float = worst(&logits, n_vocab, &case["top_float"], None);
            let apart = modes_apart(case);
            eprintln!(
                "{stem} {prompt:?}: S {s:.4}; vs ggml mode {d_ggml:.4}, vs float mode \
                 {d_float:.4} (the modes {apart:.4} apart)"
            );
            assert!(
                s <= S_MAX,
                "{stem} {prompt:?}: rounding spread {s} above S_MAX"
            );
            // Against the ggml mode: one more implementation of the same quantized
            // formulas, each within S of any other.
            assert!(
                d_ggml <= 2.0 * S_MAX,
                "{stem} {prompt:?}: {d_ggml} vs ggml mode"
            );
            // Against the float mode: the whole effect of quantizing activations, which
            // the two reference modes show between themselves, plus S.
            assert!(
                d_float <= apart + S_MAX,
                "{stem} {prompt:?}: {d_float} vs float mode"
            );

            // Greedy, token by token: the ggml mode's tokens until the reference rates our
            // token within 2·S_MAX of its own.
            let want = ids(&case["greedy_ggml"]);
            let mut r = Runner::new(&model, RunnerOptions::cpu(model.cfg.n_layer, 128)).unwrap();
            let top = &case["top_ggml"];
            match greedy_until_near_tie(&mut r, &prompt_ids, &want, top, 2.0 * S_MAX) {
                Ok(Some((k, margin))) => {
                    eprintln!("{stem} {prompt:?}: parted at token {k} (margin {margin:.3})")
                }
                Ok(None) => {}
                Err(e) => panic!("{stem} {prompt:?}: {e}"),
            }
        }
    }
}

#[test]
fn both_mla_file_kinds_give_the_same_logits() {
    // The same weights, once as attn_k_b/attn_v_b and once as one attn_kv_b (F16 both, an
    // exact change of layout): our absorbed attention reads one by row, the other
    // transposed — the same f32 products summed in another order, a last-bit difference
    // that the next int8 quantization of activations mostly absorbs (measured: none left
    // in the logits); held to S_MAX, the bound of any such reordering.
    let run = |stem: &str| {
        let file = GgufFile::open(strata_tests::golden(&format!("moe/{stem}.gguf"))).unwrap();
        let model = Model::bind(&file, |_| {}).unwrap();
        let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 64);
        opts.all_logits = true;
        let seq: Vec<u32> = (0..24).map(|i| (i * 97 % 2048) as u32).collect();
        Runner::new(&model, opts).unwrap().eval_all(&seq).unwrap()
    };
    let (a, b) = (run("tiny-deepseek2"), run("tiny-deepseek2-kvb"));
    assert!(a.iter().chain(&b).all(|x| x.is_finite()));
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    eprintln!("split vs joint kv_b: logits differ by at most {d}");
    assert!(f64::from(d) <= S_MAX, "{d}");
}
