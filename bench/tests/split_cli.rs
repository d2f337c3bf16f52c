//! `bench split` end to end on the real model.

use std::path::PathBuf;
use std::process::Command;

/// `-p 0` means no prompt test, as in llama-bench: decode is still measured.
#[test]
fn no_prompt_measures_decode_only() {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.is_file() {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["split", "-m"])
        .arg(&model)
        .args(["--pose-gpus", "1GiB", "--num-gpu", "0"])
        .args(["-p", "0", "-n", "2", "-t", "1"])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("| 0 |"))
        .unwrap_or_else(|| panic!("no num_gpu 0 row in {out}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[3], "-", "{row}");
    assert!(cells[4].parse::<f64>().unwrap() > 0.0, "{row}");
}
