//! What the CUDA checks share (on the GPU, `cuda_kernels.rs`; as host C++,
//! `cuda_host_check.rs`; through ptxas, `cuda_ptx.rs`; and dev/cuda's tests of its trial
//! kernels): block facts to compare against the CPU reference, the host checker, the ptxas
//! check, and the GPU tests' inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_kernels_cpu::formats::k_scales;
use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_kernels_cuda::ptx::{self, PtxModule};
use strata_kernels_cuda::Gpu;

/// f32's unit roundoff, 2⁻²⁴: the tolerances of the CUDA checks are derived from it.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The f16 at the start of `bytes`, as f32.
pub fn f16_value(bytes: &[u8]) -> f32 {
    let mut v = [0.0f32];
    dequantize(GgmlType::F16, &bytes[..2], &mut v).expect("2 bytes are one f16");
    v[0]
}

/// Same bits, except that any NaN equals any NaN: PTX float arithmetic returns the canonical
/// NaN 0x7fffffff where the CPU propagates 0x7fc00000, so NaN bits are not comparable.
pub fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The group offsets b (w = a·q + b) of a block of a format with mins, one per 16 elements
/// (Q4_1/Q5_1/Q4_K/Q5_K repeat theirs); zero for formats without mins.
pub fn offsets16(ty: GgmlType, b: &[u8]) -> Vec<f64> {
    let groups = ty.block_size().div_ceil(16);
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => vec![f64::from(f16_value(&b[2..])); groups],
        GgmlType::Q2_K => {
            let dmin = f64::from(f16_value(&b[82..]));
            (0..16).map(|g| -dmin * f64::from(b[g] >> 4)).collect()
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let dmin = f64::from(f16_value(&b[2..]));
            let (_, m) = k_scales::unpack(b[4..16].try_into().expect("12 scale bytes"));
            (0..16).map(|g| -dmin * f64::from(m[g / 2])).collect()
        }
        _ => vec![0.0; groups],
    }
}

/// The first device, or `None` after printing "skipped: no CUDA device (why)": how every GPU
/// test starts, so that it passes (and says so) where there is none.
pub fn gpu() -> Option<Gpu> {
    match Gpu::first() {
        Ok(g) => Some(g),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// A reproducible generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// Random weights of `ty` made by the CPU quantizer from random floats.
pub fn weights(r: &mut ChaCha8Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let f = randn(r, rows * cols, 0.5);
    let mut b = vec![0u8; rows * (cols / ty.block_size()) * ty.type_size()];
    quantize(ty, &f, &mut b).unwrap_or_else(|e| panic!("quantize {ty}: {e}"));
    b
}

/// `got` (ntok × rows) against the f64 product of `wf` (rows × cols, dequantized exactly)
/// and `x` (ntok × cols), within the bound of rounding both to f16 and summing in f32.
pub fn check_f16_product(
    what: &str,
    wf: &[f32],
    x: &[f32],
    got: &[f32],
    (rows, cols, ntok): (usize, usize, usize),
) {
    for t in 0..ntok {
        for o in 0..rows {
            let (wr, xt) = (&wf[o * cols..][..cols], &x[t * cols..][..cols]);
            let want: f64 = wr
                .iter()
                .zip(xt)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let mag: f64 = wr
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            // Weights are dequantized exactly in f32, then each weight and activation is
            // rounded to f16 (relative u_h = 2^-11 for normals, absolute ≤ 2^-25 below
            // 2^-14): a product errs by (2·u_h + u_h²)·|w·x| + 2^-25·(|w| + |x|) + 2^-50.
            // The tensor cores' f32 sums of `cols` exact products may truncate rather
            // than round: at most (cols + 1)·2u·Σ|w·x| more.
            let (uh, sub) = (2f64.powi(-11), 2f64.powi(-25));
            let abs_sum: f64 = wr
                .iter()
                .zip(xt)
                .map(|(&a, &b)| f64::from(a.abs() + b.abs()))
                .sum();
            let tol = (2.0 * uh + uh * uh + 2.0 * (cols + 1) as f64 * U) * mag
                + sub * abs_sum
                + cols as f64 * 2f64.powi(-50);
            let g = f64::from(got[t * rows + o]);
            assert!(
                (g - want).abs() <= tol,
                "{what} token {t} row {o}: {g} vs {want} (tol {tol:e})"
            );
        }
    }
}

/// Builds kernels-cuda/host-check/formats_check.cpp (with `-D` macros `defines`, as
/// `exe_name` in `dir`, made if need be); `None` (after saying why) if it cannot be built
/// here.
pub fn build_host_checker(dir: &Path, exe_name: &str, defines: &[String]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let src = crate::root().join("kernels-cuda/host-check/formats_check.cpp");
    if !src.is_file() {
        println!("skipped: {} not found", src.display());
        return None;
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let exe = dir.join(exe_name);
    let compile = |extra: &[&str]| {
        Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O1",
                "-ffp-contract=off",
                "-Wall",
                "-Wno-unknown-pragmas",
            ])
            .args(extra)
            .args(defines.iter().map(|d| format!("-D{d}")))
            .args(["-DSTRATA_HOST_CHECK", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
    };
    // With AddressSanitizer where the compiler has it: a kernel read past a block's bytes
    // (the dot products read blocks as aligned words) then fails the run.
    let out = match compile(&["-fsanitize=address", "-fno-omit-frame-pointer"]) {
        Ok(o) if o.status.success() => Ok(o),
        _ => {
            println!("note: formats_check built without AddressSanitizer (not available)");
            compile(&[])
        }
    };
    match out {
        Err(e) => {
            println!("skipped: no C++ compiler ({cxx}: {e})");
            None
        }
        Ok(o) if !o.status.success() => {
            panic!(
                "{cxx} failed on {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            )
        }
        Ok(_) => Some(exe),
    }
}

fn name(ty: GgmlType) -> String {
    ty.name().to_ascii_lowercase()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs the checker on `rows × cols` weights `w` of `ty` and q8_1 activations `xq` (empty:
/// dequantize only), in `dir`; returns (dequantized W, y) (y empty for float formats).
pub fn run_host_checker(
    exe: &Path,
    dir: &Path,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: &[u8],
    xq: &[u8],
) -> (Vec<f32>, Vec<f32>) {
    let (wf, xf, df, yf) = (
        dir.join("w.bin"),
        dir.join("xq.bin"),
        dir.join("deq.bin"),
        dir.join("y.bin"),
    );
    std::fs::write(&wf, w).unwrap();
    std::fs::write(&xf, xq).unwrap();
    let _ = std::fs::remove_file(&yf);
    // "-": no activations, dequantize only.
    let xarg = if xq.is_empty() {
        PathBuf::from("-")
    } else {
        xf
    };
    let out = Command::new(exe)
        .arg(name(ty))
        .arg(rows.to_string())
        .arg(cols.to_string())
        .args([&wf, &xarg, &df, &yf])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "formats_check {ty}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = if yf.is_file() {
        read_f32(&yf)
    } else {
        Vec::new()
    };
    (read_f32(&df), y)
}

/// Random `rows × cols` weights in `ty` and a random vector in q8_1.
pub fn random_q8_1_case(
    r: &mut ChaCha8Rng,
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<u8>) {
    let f: Vec<f32> = (0..rows * cols).map(|_| r.random::<f32>() - 0.5).collect();
    let x: Vec<f32> = (0..cols).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    let mut w = vec![0u8; rows * cols / ty.block_size() * ty.type_size()];
    quantize(ty, &f, &mut w).unwrap();
    let mut xq = vec![0u8; cols / 32 * 36];
    quantize(GgmlType::Q8_1, &x, &mut xq).unwrap();
    (w, xq)
}

const ARCHS: [(&str, u32); 2] = [("sm_80", 80), ("sm_90", 90)];

/// ptxas from `.cuda/` (scripts/fetch-cuda.sh) or a CUDA toolkit.
fn ptxas() -> Option<PathBuf> {
    let cuda_dir = std::env::var_os("STRATA_CUDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".cuda"));
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
pub struct KernelInfo {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack: u32,
}

/// Parses ptxas's `-v` report: "Compiling entry function 'f' for 'sm_80'", then
/// "N bytes stack frame, N bytes spill stores, N bytes spill loads", then "Used N registers".
pub fn parse_ptxas_report(report: &str) -> Vec<KernelInfo> {
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

/// Every module of `modules` through `ptxas -v` for sm_80 and sm_90 (a module compiled for a
/// later virtual architecture only for those it runs on): panics on any ptxas error or
/// register spill, prints the register count of every kernel, and writes each module's PTX
/// (scripts/sass-loads.sh reads it) and the table `table_name` to `dir`. Skipped (after
/// saying so) without ptxas; needs no GPU.
pub fn ptxas_check(modules: &[PtxModule], dir: &Path, table_name: &str) {
    let Some(ptxas) = ptxas() else {
        println!("skipped: ptxas not installed (run scripts/fetch-cuda.sh)");
        return;
    };
    if let Some(why) = ptx::missing_kernels_reason() {
        panic!("ptxas is at {} but the crate was {why}", ptxas.display());
    }
    assert!(!modules.is_empty(), "no kernel modules embedded");
    std::fs::create_dir_all(dir).unwrap();

    let mut table =
        String::from("| module | kernel | sm_80 regs | sm_90 regs |\n|---|---|---|---|\n");
    let mut failures = Vec::new();
    for m in modules {
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
            let infos = parse_ptxas_report(&report);
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
    std::fs::write(dir.join(table_name), &table).unwrap();
    assert!(
        failures.is_empty(),
        "ptxas problems:\n{}",
        failures.join("\n")
    );
}
