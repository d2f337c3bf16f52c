//! The `quantize` binary refuses what would lose data or cannot be read, by name.

use std::path::PathBuf;
use std::process::Command;

fn quantize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run quantize")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn writing_over_the_input_is_refused_and_the_input_kept() {
    let model = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.is_file() {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    }
    // A copy, reached through two spellings of its path.
    let dir = std::env::temp_dir().join(format!("strata-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("m.gguf");
    std::fs::copy(&model, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let other = dir.join(".").join("m.gguf");
    let o = quantize(&[copy.to_str().unwrap(), other.to_str().unwrap(), "Q8_0"]);
    let after = std::fs::read(&copy).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("both the input and the output"), "{e}");
    assert!(before == after, "the input was changed");
}

#[test]
fn a_directory_as_input_is_named() {
    let o = quantize(&["docs", "out.gguf", "Q8_0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("docs: a directory, not a GGUF file"), "{e}");
}
