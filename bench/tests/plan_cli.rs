//! `bench plan` end to end: flags, exit status, messages, JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

fn deepseek() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../golden/data/deepseek-r1-671b-q8_0.header.gguf")
}

fn plan(extra: &[&str]) -> Output {
    let mut c = bench();
    c.arg("plan")
        .arg("-m")
        .arg(deepseek())
        .args(["--host-mem", "1TiB"])
        .args(extra);
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_for_scripts() {
    let o = plan(&["--gpus", "8x80GiB", "-o", "json", "--fill", "layers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["num_gpu"], 49);
    assert_eq!(v["output_device"], "CUDA7");
    assert_eq!(v["devices"].as_array().unwrap().len(), 9);
    // The expert plan (the default): every block's parts, experts by range.
    let o = plan(&["--gpus", "8x80GiB", "-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["num_gpu"], 62);
    let parts = v["block_parts"].as_array().unwrap();
    assert_eq!(parts.len(), 61);
    assert_eq!(parts[10]["experts"][1]["device"], "CPU");
    let (on, all) = (
        v["expert_bytes_on_gpus"].as_f64().unwrap(),
        v["expert_bytes"].as_f64().unwrap(),
    );
    assert!(on / all > 0.93, "{on} of {all}");
    assert!(v["devices"][0]["read_per_token_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn table_with_the_ollama_style_line() {
    let o = plan(&["--gpus", "8x80GiB", "--fill", "layers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("CUDA7") && out.contains("why not num_gpu 50"),
        "{out}"
    );
    assert!(
        out.contains("layers.requested=auto layers.model=62 layers.offload=49"),
        "{out}"
    );
}

#[test]
fn bad_flags_are_errors_that_say_what_is_wrong() {
    for (flags, want) in [
        (vec!["--gpus", "8x80"], "--gpus '8x80'"),
        (vec!["--gpus", "0x80GiB"], "repeat count of 0"),
        (vec!["--gpus", "8x80GiB", "--margin", "lots"], "size 'lots'"),
        (
            vec!["--gpus", "8x80GiB", "--num-gpu", "many"],
            "--num-gpu 'many'",
        ),
        (
            vec!["--gpus", "8x80GiB", "--tensor-split", "1,2"],
            "2 proportions for 8 GPUs",
        ),
        (
            vec!["--gpus", "8x80GiB", "--kv-type", "q4_0"],
            "--kv-type 'q4_0'",
        ),
        (vec!["--gpus", "8x80GiB", "-o", "xml"], "--output 'xml'"),
        (
            vec!["--gpus", "8x80GiB", "--num-gpu", "51"],
            "largest num_gpu that fits is 49",
        ),
        (
            vec!["--gpus", "8x80GiB", "--fill", "tensors"],
            "'tensors' for '--fill",
        ),
        // llama.cpp's spelling `-ot`, with a device that is not there.
        (
            vec!["--gpus", "8x80GiB", "-ot", "exps=CUDA8"],
            "no device 'CUDA8'",
        ),
    ] {
        let o = plan(&flags);
        assert!(!o.status.success(), "{flags:?} succeeded");
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
    }
    let o = bench()
        .args([
            "plan",
            "-m",
            "/nonexistent/model.gguf",
            "--host-mem",
            "1TiB",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/model.gguf"),
        "{}",
        stderr(&o)
    );
}

#[cfg(unix)]
#[test]
fn a_reader_that_stops_early_ends_the_run_quietly() {
    use std::process::Stdio;
    // A pipe whose reading end is closed before bench starts: its first print meets a
    // broken pipe whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = bench()
        .arg("plan")
        .arg("-m")
        .arg(deepseek())
        .args(["--host-mem", "1TiB", "--gpus", "8x80GiB"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // Before: `bench kernels` panicked at its next print, `bench plan` printed an error.
    let err = stderr(&o);
    assert!(err.is_empty(), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{err}");
}

#[test]
fn a_block_count_beyond_the_tensors_is_refused() {
    let mut bytes = std::fs::read(deepseek()).unwrap();
    let key = b"deepseek2.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "a u32 value");
    bytes[at + 4..at + 8].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    let bad = std::env::temp_dir().join(format!("strata-plan-blocks-{}.gguf", std::process::id()));
    std::fs::write(&bad, bytes).unwrap();
    let o = bench()
        .args(["plan", "-m"])
        .arg(&bad)
        .args(["--gpus", "8x80GiB", "--host-mem", "1TiB"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("deepseek2.block_count") && e.contains("block 60"),
        "{e}"
    );
}
