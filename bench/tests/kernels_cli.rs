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
