//! Every embedded PTX module through `ptxas -v` for sm_80 and sm_90 (a module compiled for a
//! later virtual architecture, such as `matvec_sm90`, only for those it runs on): fails on
//! any ptxas error or register spill, prints the register count of every kernel. Needs no GPU, only
//! the `ptxas` that `scripts/fetch-cuda.sh` unpacks into `.cuda/` (or a CUDA toolkit's).

use std::path::PathBuf;
use std::process::Command;

use strata_kernels_cuda::ptx;

const ARCHS: [(&str, u32); 2] = [("sm_80", 80), ("sm_90", 90)];

fn ptxas() -> Option<PathBuf> {
    let cuda_dir = std::env::var_os("STRATA_CUDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| strata_tests::root().join(".cuda"));
    let candidates = [
        cuda_dir.join("nvidia/cuda_nvcc/bin/ptxas"),
        std::env::var_os("CUDA_PATH")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join("bin/ptxas"),
        PathBuf::from("/usr/local/cuda/bin/ptxas"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// One kernel's line of `ptxas -v` output.
#[derive(Debug)]
struct KernelInfo {
    name: String,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack: u32,
}

/// Parses ptxas's `-v` report: "Compiling entry function 'f' for 'sm_80'", then
/// "N bytes stack frame, N bytes spill stores, N bytes spill loads", then "Used N registers".
fn parse(report: &str) -> Vec<KernelInfo> {
    let mut out: Vec<KernelInfo> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("?").to_string();
            out.push(KernelInfo {
                name,
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
                stack: 0,
            });
        } else if let Some(k) = out.last_mut() {
            let num_before = |key: &str| -> Option<u32> {
                let i = line.find(key)?;
                line[..i].split_whitespace().last()?.parse().ok()
            };
            if line.contains("bytes stack frame") {
                k.stack = num_before(" bytes stack frame").unwrap_or(0);
                k.spill_stores = num_before(" bytes spill stores").unwrap_or(0);
                k.spill_loads = num_before(" bytes spill loads").unwrap_or(0);
            }
            if let Some(n) = num_before(" registers") {
                k.registers = n;
            }
        }
    }
    out
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    let Some(ptxas) = ptxas() else {
        println!("skipped: ptxas not installed (run scripts/fetch-cuda.sh)");
        return;
    };
    if let Some(why) = ptx::missing_kernels_reason() {
        panic!("ptxas is at {} but the crate was {why}", ptxas.display());
    }
    assert!(!ptx::MODULES.is_empty(), "no kernel modules embedded");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_ptx");
    std::fs::create_dir_all(&dir).unwrap();

    let mut table =
        String::from("| module | kernel | sm_80 regs | sm_90 regs |\n|---|---|---|---|\n");
    let mut failures = Vec::new();
    for m in ptx::MODULES {
        let file = dir.join(format!("{}.ptx", m.name));
        std::fs::write(&file, m.ptx().unwrap()).unwrap();
        let min_cc = m
            .min_compute_capability
            .unwrap_or_else(|| panic!("module {}: arch {:?} unreadable", m.name, m.arch));
        let mut per_arch = Vec::new();
        for (arch, cc) in ARCHS {
            if cc < min_cc {
                per_arch.push(Vec::new());
                continue;
            }
            let out = Command::new(&ptxas)
                .args(["-v", "--gpu-name", arch, "-o", "/dev/null"])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
            let report = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                failures.push(format!("{} {arch}: ptxas failed:\n{report}", m.name));
                continue;
            }
            let infos = parse(&report);
            if infos.is_empty() {
                failures.push(format!(
                    "{} {arch}: no kernels in ptxas report:\n{report}",
                    m.name
                ));
            }
            for k in &infos {
                if k.spill_stores > 0 || k.spill_loads > 0 {
                    failures.push(format!(
                        "{} {arch} {}: {} bytes spill stores, {} bytes spill loads ({} regs)",
                        m.name, k.name, k.spill_stores, k.spill_loads, k.registers
                    ));
                }
            }
            per_arch.push(infos);
        }
        if per_arch.len() == 2 {
            // Kernels in the order of the first architecture that compiled them.
            let names = per_arch
                .iter()
                .find(|v| !v.is_empty())
                .into_iter()
                .flatten();
            for name in names.map(|k| &k.name) {
                let ks: Vec<Option<&KernelInfo>> = per_arch
                    .iter()
                    .map(|v| v.iter().find(|k| &k.name == name))
                    .collect();
                let regs = |i: usize| match (ARCHS[i].1 < min_cc, ks[i]) {
                    (true, _) => "-".to_string(),
                    (false, Some(k)) => k.registers.to_string(),
                    (false, None) => "?".to_string(),
                };
                let stack = ks.iter().flatten().map(|k| k.stack).max().unwrap_or(0);
                let stack = if stack > 0 {
                    format!(" (stack {stack} B)")
                } else {
                    String::new()
                };
                table += &format!(
                    "| {} | {name} | {}{stack} | {} |\n",
                    m.name,
                    regs(0),
                    regs(1)
                );
            }
        }
    }
    println!("{table}");
    std::fs::write(dir.join("registers.md"), &table).unwrap();
    assert!(
        failures.is_empty(),
        "ptxas problems:\n{}",
        failures.join("\n")
    );
}

#[test]
fn parser_reads_a_ptxas_report() {
    let report = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
        ptxas info    : Function properties for k\n\
        \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
        ptxas info    : Used 40 registers, used 0 barriers, 368 bytes cmem[0]\n";
    let k = parse(report);
    assert_eq!(k.len(), 1);
    assert_eq!((k[0].name.as_str(), k[0].registers), ("k", 40));
    assert_eq!(
        (k[0].stack, k[0].spill_stores, k[0].spill_loads),
        (8, 4, 12)
    );
}
