//! The SmolLM2 forward-pass golden data (`golden/gen/forward.py`): per prompt, its token
//! ids, greedy tokens and the teacher-forced top logits of both reference modes.

use serde_json::Value;

/// `golden/data/forward/SmolLM2-135M-Instruct.Q4_1.json`, parsed.
pub fn smollm2() -> Value {
    let path = crate::golden("forward/SmolLM2-135M-Instruct.Q4_1.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden forward data {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

/// Greedy decoding from `prompt` with `r`, against the reference's greedy tokens `want`
/// and its teacher-forced top logits `top` (positions of prompt + want): equal until a
/// position where the reference rates our token within `tol` of its own (a near tie that
/// rounding may break either way), where the sequences may part. Returns where they
/// parted and the reference's margin there, or the failure.
pub fn greedy_until_near_tie(
    r: &mut strata_engine::runner::Runner,
    prompt: &[u32],
    want: &[u32],
    top: &Value,
    tol: f64,
) -> Result<Option<(usize, f64)>, String> {
    let mut l = r.eval(prompt).map_err(|e| e.to_string())?.to_vec();
    let mut got = Vec::new();
    for (k, &w) in want.iter().enumerate() {
        let t = crate::split::argmax(&l);
        got.push(t);
        if t != w {
            let at = &top[prompt.len() - 1 + k];
            let ref_ids = ids(&at["ids"]);
            let logit = |id: u32| {
                ref_ids
                    .iter()
                    .position(|&i| i == id)
                    .map(|j| at["logits"][j].as_f64().expect("a logit"))
            };
            let margin = logit(w).expect("the reference's own token is in its top")
                - logit(t).unwrap_or(f64::NEG_INFINITY);
            if margin > tol {
                return Err(format!(
                    "token {k}: ours {t}, reference {w} by a margin of {margin}; ours so far {got:?}"
                ));
            }
            return Ok(Some((k, margin)));
        }
        l = r.eval(&[t]).map_err(|e| e.to_string())?.to_vec();
    }
    Ok(None)
}

/// Every position's logits of `seq` in one batched pass at ISA level `level` (the
/// process's level is restored after).
pub fn logits_at(
    model: &strata_engine::model::Model,
    seq: &[u32],
    level: strata_kernels_cpu::isa::Isa,
) -> Vec<f32> {
    use strata_engine::runner::{Runner, RunnerOptions};
    use strata_kernels_cpu::isa;
    let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 128);
    opts.all_logits = true;
    let before = isa::active();
    isa::force(level).expect("a level this CPU runs");
    let l = Runner::new(model, opts)
        .and_then(|mut r| r.eval_all(seq))
        .expect("the model runs");
    isa::force(before).expect("the level it ran at");
    l
}
