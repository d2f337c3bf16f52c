//! The `generate` binary: bad flags and missing models get clear messages; with the real
//! model, a greedy run prints the expected continuation and writes the timings JSON.

use std::path::PathBuf;
use std::process::{Command, Output};

fn generate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(args)
        // Relative paths (the default model) resolve from the workspace root.
        .current_dir(root())
        .output()
        .expect("run generate")
}

/// A run of `generate` that must succeed (its stderr shown if it does not).
fn generate_ok(args: &[&str]) -> Output {
    let o = generate(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    o
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn model() -> Option<PathBuf> {
    let p = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        None
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = generate(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}

#[test]
fn bad_number_names_the_flag() {
    let o = generate(&["-n", "many", "-p", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--n-predict"), "{}", stderr(&o));
}

#[test]
fn missing_model_file_is_named() {
    let o = generate(&["-m", "no/such/model.gguf", "-p", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("model file not found: no/such/model.gguf"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_default_model_says_how_to_fetch_it() {
    // Run from a folder without models/: the default path is then absent.
    let o = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["-p", "hi"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("scripts/fetch-model.sh"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn not_a_gguf_file_is_an_error_not_a_panic() {
    let path = std::env::temp_dir().join(format!("strata-not-gguf-{}.gguf", std::process::id()));
    std::fs::write(&path, b"this is not a model").unwrap();
    let o = generate(&["-m", path.to_str().unwrap(), "-p", "hi"]);
    std::fs::remove_file(&path).ok();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn no_prompt_is_an_error() {
    let Some(m) = model() else { return };
    let o = generate(&["-m", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-p"), "{}", stderr(&o));
}

#[test]
fn greedy_paris_with_timings_json_and_ngl_note() {
    let Some(m) = model() else { return };
    let json = std::env::temp_dir().join(format!("strata-timings-{}.json", std::process::id()));
    let o = generate(&[
        "-m",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
        "-t",
        "2",
        "-ngl",
        "99",
        "--timings-json",
        json.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with(" Paris."), "stdout: {out:?}");
    // Without a usable CUDA device the count is ignored, and the run says so.
    let has_gpu = strata_engine::devices::CudaAccel::discover().is_ok_and(|d| !d.is_empty());
    assert_eq!(err.contains("--num-gpu 99 ignored"), !has_gpu, "{err}");
    assert!(err.contains("tokens/s"), "{err}");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    assert_eq!(t["prompt_tokens"], 5);
    assert_eq!(t["gen_tokens"], 4);
    assert_eq!(t["threads"], 2);
    for k in ["load_ms", "prompt_tokens_per_s", "gen_tokens_per_s"] {
        assert!(t[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {t}");
    }
}

#[test]
fn bogus_ngl_is_a_usage_error() {
    let o = generate(&["-ngl", "bogus", "-p", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("'bogus'") && err.contains("--num-gpu"),
        "{err}"
    );
    assert!(err.contains("auto"), "{err}");
}

/// A greedy run of 8 tokens after "The capital of France is" with these extra flags.
fn greedy(m: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "-m",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "2",
    ];
    args.extend_from_slice(extra);
    generate(&args)
}

#[test]
fn ngl_auto_runs_silently_with_or_without_a_gpu() {
    let Some(m) = model() else { return };
    let o = greedy(&m, &["-ngl", "auto"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(" Paris."));
    // `auto` uses the GPUs there are, or none, without a note either way.
    assert!(!err.contains("ignored"), "{err}");
}

#[test]
fn ngl_auto_puts_every_layer_on_posing_gpus_with_the_same_text() {
    let Some(m) = model() else { return };
    let cpu = greedy(&m, &["-ngl", "0"]);
    assert_eq!(cpu.status.code(), Some(0), "{}", stderr(&cpu));
    let posed = greedy(
        &m,
        &["-ngl", "auto", "--pose-gpus", "1GiB,1GiB", "--verbose"],
    );
    let err = stderr(&posed);
    assert_eq!(posed.status.code(), Some(0), "{err}");
    // SmolLM2-135M: 30 blocks + the output layer, about 220 MiB in all: everything fits.
    assert!(err.contains("num_gpu auto -> 31 "), "{err}");
    // Split by free memory between the two (the output layer, 28 MiB, weighs most).
    let line = err
        .lines()
        .find(|l| l.starts_with("offloaded 31/31 layers to GPUs ("))
        .unwrap_or_else(|| panic!("no offload line: {err}"));
    assert!(
        line.contains(" on ACCEL0, ") && line.ends_with(" on ACCEL1)"),
        "{line}"
    );
    assert!(!err.contains("ignored"), "{err}");
    assert!(!posed.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&posed.stdout),
        String::from_utf8_lossy(&cpu.stdout)
    );
}

/// A copy of `src` at `dst` with the u32 metadata value of `key` replaced by `value`.
fn patch_u32(src: &std::path::Path, dst: &std::path::Path, key: &str, value: u32) {
    let mut bytes = std::fs::read(src).unwrap();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("key in the file")
        + key.len();
    // The key is followed by its value type (u32: 4) and the value.
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn a_block_count_beyond_the_tensors_is_named_at_once() {
    let Some(m) = model() else { return };
    let bad = std::env::temp_dir().join(format!("strata-blocks-{}.gguf", std::process::id()));
    patch_u32(&m, &bad, "llama.block_count", 4_000_000_000);
    let start = std::time::Instant::now();
    let o = generate(&["-m", bad.to_str().unwrap(), "-p", "Hi", "-n", "1"]);
    let _ = std::fs::remove_file(&bad);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("llama.block_count") && e.contains("4000000000") && e.contains("block 29"),
        "{e}"
    );
    // Refused from the header, before anything is sized by the count.
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

/// The host refusing memory (here a limit on the address space) is a message naming the
/// buffer and what to change, and exit status 1, never an abort.
#[test]
fn a_host_allocation_failure_is_a_message_not_an_abort() {
    use std::os::unix::process::CommandExt;
    let Some(m) = model() else { return };
    let mut c = Command::new(env!("CARGO_BIN_EXE_generate"));
    c.args([
        "-m",
        m.to_str().unwrap(),
        "-p",
        "Hi",
        "-n",
        "1",
        "-c",
        "8192",
        "-t",
        "1",
    ]);
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            // 300 MiB of address space: enough to start and map the model, not for the
            // weights, 8192 positions of KV cache and the scratch together.
            let limit = libc::rlimit {
                rlim_cur: 300 << 20,
                rlim_max: 300 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().expect("run generate");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("memory allocation of"), "{e}");
    assert!(
        e.contains("on CPU failed") && e.contains("refused") && e.contains("-c/--ctx-size"),
        "{e}"
    );
}

/// The host's part of the plan is checked against its memory before anything is loaded:
/// too little is refused with the plan and what to change; `--host-mem` overrides.
#[test]
fn a_plan_over_the_host_budget_is_refused_before_loading() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let run = |mem: &str| {
        generate(&[
            "-m",
            m,
            "-p",
            "Hi",
            "-n",
            "1",
            "-c",
            "512",
            "--host-mem",
            mem,
        ])
    };
    let o = run("50MiB");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("of host memory") && e.contains("50.00 MiB available"),
        "{e}"
    );
    assert!(e.contains("OVER") && e.contains("-c/--ctx-size"), "{e}");
    let o = run("1GiB");
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `-c 0` takes the training context; a huge one (patched here to 4M positions, ~92 GB of
/// KV cache) is refused from the plan, not run into the kernel's OOM killer.
#[test]
fn a_training_context_too_large_for_the_host_is_refused() {
    let Some(m) = model() else { return };
    let bad = std::env::temp_dir().join(format!("strata-ctx-{}.gguf", std::process::id()));
    patch_u32(&m, &bad, "llama.context_length", 4_000_000);
    let o = generate(&[
        "-m",
        bad.to_str().unwrap(),
        "-p",
        "Hi",
        "-n",
        "1",
        "-c",
        "0",
    ]);
    let _ = std::fs::remove_file(&bad);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("of host memory") && e.contains("KV cache") && e.contains("(now 4000000)"),
        "{e}"
    );
}

#[test]
fn a_directory_or_a_device_as_model_is_named_as_such() {
    let o = generate(&["-m", "docs", "-p", "Hi"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("docs: a directory, not a GGUF file"), "{e}");
    let o = generate(&["-m", "/dev/zero", "-p", "Hi"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("/dev/zero: not a regular file"), "{e}");
}

/// llama.cpp's spellings: `--seed -1` is a random seed, `--temp` below 0 is greedy; more
/// threads than CPUs are cut to the CPUs, with a note.
#[test]
fn llama_cpp_negative_values_and_too_many_threads() {
    let Some(m) = model() else { return };
    let m = m.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "-m",
            m,
            "-p",
            "The capital of France is",
            "-n",
            "8",
            "-c",
            "64",
        ];
        a.extend_from_slice(extra);
        let o = generate(&a);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        o
    };
    let greedy = run(&["--temp", "0"]);
    let negative = run(&["--temp", "-1", "--seed", "-1"]);
    assert_eq!(greedy.stdout, negative.stdout);
    let many = run(&["--temp", "0", "-t", "1000"]);
    assert_eq!(greedy.stdout, many.stdout);
    assert!(
        stderr(&many).contains("-t 1000 is more than"),
        "{}",
        stderr(&many)
    );
    let o = generate(&["-m", m, "-p", "x", "--seed", "-2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Ctrl-C stops generation, prints what there is, and exits 130 as shells expect.
#[test]
fn ctrl_c_exits_130() {
    use std::io::Read;
    let Some(m) = model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args([
            "-m",
            m.to_str().unwrap(),
            "-p",
            "Once upon a time",
            "-n",
            "-1",
        ])
        .args(["--ignore-eos", "-c", "8192", "--temp", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run generate");
    // Wait for the first generated bytes, then interrupt.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("generated text");
    // SAFETY: kill() on the child's pid, which it still is (not yet waited for).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted") && e.contains("generated:"), "{e}");
}

/// llama.cpp's placement flags on a mixture-of-experts file: `--cpu-moe`, `-ot`, experts
/// split with a posing device of its own thread (side by side and one at a time) all give
/// the CPU's greedy text; a bad rule is named.
#[test]
fn placement_flags_on_a_moe_file() {
    let m = root().join("golden/data/moe/tiny-deepseek2.gguf");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-m",
            m.to_str().unwrap(),
            "-p",
            "Hello world",
            "-n",
            "8",
            "--temp",
            "0",
            "-t",
            "1",
            // The posing devices' sizes below are cut to the scratch of 64-token passes.
            "-b",
            "64",
            "--verbose",
        ];
        args.extend_from_slice(extra);
        generate_ok(&args)
    };
    let cpu = run(&["-ngl", "0"]);
    for extra in [
        &["--pose-gpus", "2MiB", "-ngl", "99", "--cpu-moe"][..],
        &["--pose-gpus", "2MiB,2MiB", "-ot", "exps=ACCEL1,attn=ACCEL0"],
        &["--pose-gpus", "900KiB@1"],
        &["--pose-gpus", "900KiB@1", "--no-overlap"],
    ] {
        let o = run(extra);
        assert_eq!(o.stdout, cpu.stdout, "{extra:?}");
        assert!(stderr(&o).contains("routed experts ("), "{extra:?}");
    }
    // The experts split between the posing device and the CPU.
    let err = stderr(&run(&["--pose-gpus", "900KiB@1"]));
    let line = err
        .lines()
        .find(|l| l.starts_with("routed experts ("))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        !line.contains("(0.0%)") && !line.contains("(100.0%)"),
        "{line}"
    );
    let o = generate(&["-m", m.to_str().unwrap(), "-p", "Hi", "-ot", "exps=CUDA3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no device 'CUDA3'"), "{}", stderr(&o));
}

/// `-np 3` (llama.cpp's flag): three continuations of the prompt, seeded --seed, +1, +2,
/// each the text a run of one sequence with that seed prints, in one batch a step; the
/// same over a posing device holding half the blocks.
#[test]
fn parallel_sequences_each_continue_as_one_run_with_its_seed() {
    let Some(m) = model() else { return };
    let run = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "-m",
            m.to_str().unwrap(),
            "-p",
            "The capital of France is",
            "-n",
            "12",
            "--temp",
            "0.9",
            "--seed",
            seed,
            "--ignore-eos",
            "-t",
            "2",
        ];
        args.extend_from_slice(extra);
        generate_ok(&args)
    };
    let alone: Vec<String> = ["5", "6", "7"]
        .iter()
        .map(|s| String::from_utf8(run(s, &[]).stdout).unwrap())
        .collect();
    assert!(alone[0] != alone[1] || alone[1] != alone[2], "{alone:?}");
    for extra in [
        &["-np", "3"][..],
        &["--parallel", "3", "--pose-gpus", "1GiB", "-ngl", "16"],
    ] {
        let o = run("5", extra);
        let out = String::from_utf8_lossy(&o.stdout);
        let want: String = alone
            .iter()
            .enumerate()
            .map(|(i, a)| format!("sequence {i}:\n{a}\n"))
            .collect();
        assert_eq!(out, want, "{extra:?}");
        let err = stderr(&o);
        assert!(err.contains("generated: 36 tokens in 3 sequences"), "{err}");
    }
    let o = generate(&["-m", m.to_str().unwrap(), "-p", "x", "-np", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--parallel 0"), "{}", stderr(&o));
}
