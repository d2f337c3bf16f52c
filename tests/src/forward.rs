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
