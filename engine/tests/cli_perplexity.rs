//! The `perplexity` binary on the real model: the running and final perplexity, and the
//! KL-divergence comparison against saved log-probabilities.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn perplexity(model: &std::path::Path, extra: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_perplexity"))
        .arg("-m")
        .arg(model)
        // Any text will do; this one is in the repository.
        .args(["-f", "docs/design.md", "-c", "128", "--chunks", "2"])
        .args(extra)
        .current_dir(root())
        .output()
        .expect("run perplexity");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// The number after `label` on the line that starts with it.
fn value(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' in {out}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

#[test]
fn perplexity_and_kl_divergence() {
    let model = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.is_file() {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("strata-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.logprobs");
    let base_arg = ["--kl-divergence-base", base.to_str().unwrap()];

    let o = perplexity(&model, &base_arg);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    // "[1]x,[2]y," then the final estimate, which is the last running value.
    let running: Vec<f64> = out
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.split(']').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(running.len(), 2, "{out}");
    let ppl = value(&out, "Final estimate: PPL =");
    assert!((ppl - running[1]).abs() < 1e-4, "{out}");
    // A trained model on English text: far better than chance (49152 tokens).
    assert!(ppl > 1.0 && ppl < 1000.0, "{out}");

    // The same model against its own saved log-probabilities: only the 16-bit storage
    // differs, at most 30/131070 nats per value (score::Packed16), which bounds the KL
    // divergence and the log of the perplexity ratio.
    let step = 30.0 / 131070.0;
    let o = perplexity(&model, &[&base_arg[..], &["--kl-divergence"]].concat());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(value(&out, "Mean KLD").abs() <= step * 1.01, "{out}");
    assert!(value(&out, "PPL ratio").ln().abs() <= step * 1.01, "{out}");
    assert!(value(&out, "Same top token") >= 99.0, "{out}");

    // Another quantization of it differs by more than the storage does.
    let q8 = dir.join("q8_0.gguf");
    let opts = strata_engine::gguf::QuantizeOptions {
        ty: strata_engine::gguf::GgmlType::Q8_0,
        token_embedding: None,
        output: None,
        fallback: true,
    };
    strata_engine::gguf::quantize_file(&model, &q8, &opts).unwrap();
    let o = perplexity(&q8, &[&base_arg[..], &["--kl-divergence"]].concat());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(value(&out, "Mean KLD") > step * 2.0, "{out}");
    assert!(value(&out, "Same top token") < 100.0 + 1e-9, "{out}");
}

#[test]
fn a_base_file_for_another_text_is_refused() {
    let model = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.is_file() {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    }
    let base = std::env::temp_dir().join(format!("strata-ppl-other-{}", std::process::id()));
    perplexity(&model, &["--kl-divergence-base", base.to_str().unwrap()]);
    let o = Command::new(env!("CARGO_BIN_EXE_perplexity"))
        .arg("-m")
        .arg(&model)
        .args(["-f", "README.md", "-c", "128", "--chunks", "2"])
        .args([
            "--kl-divergence-base",
            base.to_str().unwrap(),
            "--kl-divergence",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&base);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("saved for another text"), "{e}");
}
