//! `bench split` end to end on the real model: the formats, and the flags' errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model() -> Option<PathBuf> {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if model.is_file() {
        Some(model)
    } else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        None
    }
}

fn split(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["split", "-m"])
        .arg(model)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `-p 0` means no prompt test, as in llama-bench: decode is still measured.
#[test]
fn no_prompt_measures_decode_only() {
    let Some(model) = model() else { return };
    let o = split(
        &model,
        &[
            "--pose-gpus",
            "1GiB",
            "--num-gpu",
            "0",
            "-p",
            "0",
            "-n",
            "2",
            "-t",
            "1",
            "-r",
            "1",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    let row = out
        .lines()
        .find(|l| l.starts_with("| 0 |"))
        .unwrap_or_else(|| panic!("no num_gpu 0 row in {out}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[3], "-", "{row}");
    // `mean ± sd`, the sd 0 for one run.
    let (mean, sd) = cells[4].split_once(" ± ").unwrap();
    assert!(mean.parse::<f64>().unwrap() > 0.0, "{row}");
    assert_eq!(sd, "0.00", "{row}");
}

/// The sweep users compare: JSON rows with every sample.
#[test]
fn json_rows() {
    let Some(model) = model() else { return };
    let o = split(
        &model,
        &[
            "--pose-gpus",
            "1GiB",
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "2",
            "--num-gpu",
            "0,16",
            "-o",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, (num_gpu, devices_used)) in rows.iter().zip([("0", 1), ("16", 2)]) {
        assert_eq!(row["num_gpu"], num_gpu);
        assert_eq!(row["repetitions"], 2);
        for phase in ["pp", "tg"] {
            let p = &row[phase];
            assert_eq!(
                p["samples_tokens_per_s"].as_array().unwrap().len(),
                2,
                "{phase}"
            );
            assert!(p["sd_tokens_per_s"].as_f64().unwrap() >= 0.0, "{phase}");
            assert!(p["mean_tokens_per_s"].as_f64().unwrap() > 0.0, "{phase}");
            let busy: Vec<f64> = p["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["busy"].as_f64().unwrap())
                .collect();
            assert_eq!(busy.len(), 2, "every device, used or not");
            assert_eq!(
                busy.iter().filter(|&&b| b > 0.0).count(),
                devices_used,
                "{busy:?}"
            );
        }
        assert!(row["predicted_tg_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
}

/// CSV: a header, then one line per num_gpu value with as many fields.
#[test]
fn csv_has_a_header_and_a_line_per_row() {
    let Some(model) = model() else { return };
    let o = split(
        &model,
        &[
            "--pose-gpus",
            "1GiB",
            "-p",
            "4",
            "-n",
            "2",
            "-r",
            "1",
            "--num-gpu",
            "0,31",
            "-o",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("model,num_gpu,gpu_layers,"),
        "{}",
        lines[0]
    );
    let n = lines[0].split(',').count();
    assert!(
        lines[1..].iter().all(|l| l.split(',').count() == n),
        "{out}"
    );
}

/// Bad values are refused before anything runs, naming the flag and the value.
#[test]
fn bad_flags_name_the_flag_and_the_value() {
    // None of these reaches the model: a path that does not exist will do.
    let model = Path::new("no-such-model.gguf");
    for (args, words) in [
        (vec!["-o", "xml"], vec!["--output", "xml"]),
        (vec!["-r", "0"], vec!["--repetitions 0"]),
    ] {
        let o = split(model, &args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        for w in words {
            assert!(err.contains(w), "{args:?}: `{w}` not in: {err}");
        }
    }
}
