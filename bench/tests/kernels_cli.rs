//! `bench kernels` end to end, on matrices small enough for a debug build.

use std::process::Command;

#[test]
fn passes_prints_every_timed_pass_and_the_table_keeps_the_best() {
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "kernels",
            "--formats",
            "q4_0",
            "--threads",
            "1",
            "--no-matmul",
        ])
        .args([
            "--matvec-mib",
            "1",
            "--stream-mib",
            "1",
            "--reps",
            "2",
            "--passes",
        ])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    // Row layout first, then packed where the CPU has the packed kernels; reps + 1 passes
    // each, every one a candidate for the table's best.
    let mut best = 0.0f64;
    for pass in 0..3 {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("Q4_0 1T pass {pass}: read ")))
            .unwrap_or_else(|| panic!("no pass {pass} line in {err}"));
        let matvec: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        best = best.max(matvec);
    }
    let row = out
        .lines()
        .find(|l| l.starts_with("| Q4_0 |"))
        .unwrap_or_else(|| panic!("no Q4_0 row in {out}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | Q4_0 | level | read | matvec | ratio | in-cache |
    let table: f64 = cells[4].parse().unwrap();
    // Both printed to 0.1 from the same bytes/s, and rounding keeps the order: equal.
    assert_eq!(table, best, "{row}");
}

/// Values that would divide by zero, make an empty matrix or overflow are refused by name.
#[test]
fn bad_sizes_are_named_errors_not_panics() {
    for (flag, value, says) in [
        ("--cols", "0", "--cols 0"),
        ("--cols", "100", "multiple of 256"),
        ("--stream-mib", "0", "--stream-mib 0"),
        ("--matvec-mib", "0", "--matvec-mib 0"),
        ("--matvec-mib", "17592186044416", "--matvec-mib"),
        ("--stream-mib", "17592186044416", "--stream-mib"),
        ("--threads", "0", "--threads 0"),
    ] {
        let mut sizes = vec![
            ("--matvec-mib", "1"),
            ("--stream-mib", "1"),
            ("--reps", "1"),
        ];
        sizes.retain(|(f, _)| *f != flag);
        sizes.push((flag, value));
        let o = Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["kernels", "--formats", "q4_0", "--no-matmul"])
            .args(sizes.iter().flat_map(|(f, v)| [*f, *v]))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{flag} {value}: {err}"
        );
    }
}
