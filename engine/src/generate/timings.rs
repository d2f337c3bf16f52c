//! What `generate` reports at the end: on stderr, and as JSON for scripts.

use serde_json::json;

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub load_ms: f64,
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub gen_tokens: usize,
    pub gen_ms: f64,
    pub threads: usize,
    /// Weight bytes one decode step reads (the chosen experts only, for MoE models).
    pub bytes_per_token: usize,
    /// Sequences decoded side by side (`gen_tokens` counts all of theirs).
    pub sequences: usize,
}

fn per_s(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

impl Timings {
    pub fn prompt_tokens_per_s(&self) -> f64 {
        per_s(self.prompt_tokens, self.prompt_ms)
    }

    pub fn gen_tokens_per_s(&self) -> f64 {
        per_s(self.gen_tokens, self.gen_ms)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "load_ms": self.load_ms,
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_per_s": self.prompt_tokens_per_s(),
            "gen_tokens": self.gen_tokens,
            "gen_tokens_per_s": self.gen_tokens_per_s(),
            "threads": self.threads,
            "sequences": self.sequences.max(1),
            "weight_bytes_per_token": self.bytes_per_token,
            "gen_weight_gb_per_s": self.gen_tokens_per_s() * self.bytes_per_token as f64 / 1e9,
        })
    }

    pub fn summary(&self) -> String {
        let seqs = match self.sequences {
            0 | 1 => String::new(),
            n => format!(" in {n} sequences"),
        };
        format!(
            "load: {:.0} ms | prompt: {} tokens, {:.1} tokens/s | generated: {} tokens{seqs}, {:.1} tokens/s | threads: {}",
            self.load_ms,
            self.prompt_tokens,
            self.prompt_tokens_per_s(),
            self.gen_tokens,
            self.gen_tokens_per_s(),
            self.threads
        )
    }
}
