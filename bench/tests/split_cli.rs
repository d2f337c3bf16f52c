//! `bench split` end to end on the real model: the formats, the plot and the trace, and
//! the flags' errors.

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

/// A fresh folder of this test's own under cargo's scratch space for tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A one-thread, one-run sweep of `num_gpu` with `extra` flags: its stdout, and the cells of
/// the markdown row for `num_gpu`.
fn one_row(model: &Path, num_gpu: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["--num-gpu", num_gpu, "-n", "2", "-t", "1", "-r", "1"];
    args.extend(extra);
    let o = split(model, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("| {num_gpu} |")))
        .unwrap_or_else(|| panic!("no num_gpu {num_gpu} row in {out}"));
    let cells = row.split('|').map(|c| c.trim().to_string()).collect();
    (out, cells)
}

/// The mean and sd of a `mean ± sd` cell.
fn mean_sd(cell: &str) -> (f64, &str) {
    let (mean, sd) = cell
        .split_once(" ± ")
        .unwrap_or_else(|| panic!("not `mean ± sd`: {cell}"));
    (mean.parse().unwrap(), sd)
}

/// `-p 0` means no prompt test, as in llama-bench: decode is still measured.
#[test]
fn no_prompt_measures_decode_only() {
    let Some(model) = model() else { return };
    let (_, cells) = one_row(&model, "0", &["--pose-gpus", "1GiB", "-p", "0"]);
    assert_eq!(cells[3], "-", "{cells:?}");
    // `mean ± sd`, the sd 0 for one run.
    let (mean, sd) = mean_sd(&cells[4]);
    assert!(mean > 0.0, "{cells:?}");
    assert_eq!(sd, "0.00", "{cells:?}");
}

/// `--parallel 2`: two sequences through a layer split over a posing device with a thread of
/// its own; the header says the tokens/s count both.
#[test]
fn parallel_sequences_run_through_a_split() {
    let Some(model) = model() else { return };
    let extra = ["--pose-gpus", "1GiB@1", "-p", "16", "--parallel", "2"];
    let (out, cells) = one_row(&model, "16", &extra);
    assert!(out.contains("2 sequences side by side"), "{out}");
    for c in [3, 4] {
        assert!(mean_sd(&cells[c]).0 > 0.0, "{cells:?}");
    }
}

/// The sweep users compare: JSON rows with every sample, an SVG plot, and a trace in which
/// num_gpu 16 shows work on both devices.
#[test]
fn json_rows_plot_and_trace() {
    let Some(model) = model() else { return };
    let dir = scratch("split_json_rows_plot_and_trace");
    let (svg, trace) = (dir.join("x.svg"), dir.join("t.json"));
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
            "--plot",
            svg.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
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

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..80]
    );

    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let pid = events
        .iter()
        .find(|e| e["name"] == "process_name" && e["args"]["name"] == "num_gpu 16")
        .map(|e| e["pid"].clone())
        .expect("a process for num_gpu 16");
    for tid in [0, 1] {
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "X" && e["pid"] == pid && e["tid"] == tid),
            "no span on device {tid} at num_gpu 16"
        );
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
    let dir = scratch("split_bad_flags");
    let missing = dir.join("no/such/folder/x.svg");
    let missing = missing.to_str().unwrap();
    for (args, words) in [
        (vec!["-o", "xml"], vec!["--output", "xml"]),
        (vec!["-r", "0"], vec!["--repetitions 0"]),
        (vec!["--parallel", "0"], vec!["--parallel 0"]),
        (vec!["--plot", missing], vec!["--plot", missing]),
        (vec!["--trace", missing], vec!["--trace", missing]),
    ] {
        let o = split(model, &args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        for w in words {
            assert!(err.contains(w), "{args:?}: `{w}` not in: {err}");
        }
    }
}
