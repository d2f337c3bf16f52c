//! What the CUDA checks share (on the GPU, `cuda_kernels.rs`; as host C++,
//! `cuda_host_check.rs`; through ptxas, `cuda_ptx.rs`; and dev/cuda's tests of its trial
//! kernels): block facts to compare against the CPU reference, the host checker, the ptxas
//! check, and the GPU tests' inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_kernels_cpu::formats::k_scales;
use strata_kernels_cpu::ops::{
    self, mla_attention_ref, route_ref, Gating, KvType, LatentCache, MlaShape, Rope, Router, Yarn,
};
use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_kernels_cuda::ptx::{self, PtxModule};
use strata_kernels_cuda::{Gpu, MlaDims, RopeParams};

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
    build_host_program(dir, "formats_check.cpp", exe_name, defines)
}

/// Builds kernels-cuda/host-check/`source` as `exe_name` in `dir` (see
/// [`build_host_checker`]).
pub fn build_host_program(
    dir: &Path,
    source: &str,
    exe_name: &str,
    defines: &[String],
) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let src = crate::root().join("kernels-cuda/host-check").join(source);
    if !src.is_file() {
        println!("skipped: {} not found", src.display());
        return None;
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let exe = dir.join(exe_name);
    let compile = |extra: &[&str]| {
        Command::new(&cxx)
            .args([
                // C++20 for std::barrier (host_shim.hpp's grid).
                "-std=c++20",
                "-O1",
                "-ffp-contract=off",
                "-pthread",
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
            println!("note: {source} built without AddressSanitizer (not available)");
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

// ---- Mixture-of-experts and MLA: cases and references shared by the host check
// (cuda_host_check.rs, through kernels_check.cpp) and the GPU tests (cuda_kernels.rs) ----

/// kernels-cuda/host-check/kernels_check.cpp, built: whole kernels run on the host.
pub struct KernelsChecker {
    exe: PathBuf,
    dir: PathBuf,
}

impl KernelsChecker {
    /// Builds the checker in `dir`; `None` (after saying why) where it cannot be built.
    pub fn build(dir: &Path) -> Option<KernelsChecker> {
        let exe = build_host_program(dir, "kernels_check.cpp", "kernels_check", &[])?;
        Some(KernelsChecker {
            exe,
            dir: dir.to_path_buf(),
        })
    }

    /// Writes `inputs` (file name, bytes) to the checker's folder, runs `kernels_check DIR
    /// args…`, and returns the bytes of the files `outputs`.
    pub fn run(
        &self,
        args: &[String],
        inputs: &[(&str, Vec<u8>)],
        outputs: &[&str],
    ) -> Vec<Vec<u8>> {
        for (name, bytes) in inputs {
            std::fs::write(self.dir.join(name), bytes).unwrap();
        }
        for name in outputs {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        let out = Command::new(&self.exe)
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kernels_check {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        outputs
            .iter()
            .map(|name| std::fs::read(self.dir.join(name)).unwrap())
            .collect()
    }
}

/// Little-endian bytes of 32-bit values (what kernels_check reads).
pub fn le_bytes<T: Copy + Into<Le32>>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|&x| x.into().0.to_le_bytes()).collect()
}

/// A 32-bit value's bits, for [`le_bytes`].
pub struct Le32(pub u32);
impl From<f32> for Le32 {
    fn from(v: f32) -> Le32 {
        Le32(v.to_bits())
    }
}
impl From<u32> for Le32 {
    fn from(v: u32) -> Le32 {
        Le32(v)
    }
}
impl From<i32> for Le32 {
    fn from(v: i32) -> Le32 {
        Le32(v as u32)
    }
}

/// f32 values from little-endian bytes.
pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// u32 values from little-endian bytes.
pub fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One router and `ntok` tokens' logits (and the selection bias, if the router has one).
#[derive(Debug, Clone)]
pub struct RouteCase {
    pub router: Router,
    pub ntok: usize,
    pub logits: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// Routers as the supported models configure them (Qwen3-MoE: softmax, normalised;
/// DeepSeek-V2: softmax, groups, scaled; DeepSeek-V3: sigmoid, selection bias, groups,
/// normalised and scaled), and the edges: one-expert groups, 32 choices, the most experts,
/// weights whose sum is clamped. Each token's logits are distinct points of a grid spaced so
/// that a probability or selection score differs from its neighbours by far more than any
/// rounding (a grid step of 1/32 at most moves a softmax probability by 3%, a sigmoid by
/// 5·10⁻⁴, against errors of ~10⁻⁶), so that any routing within the rounding bound
/// chooses the same experts; the bias is a whole number (sigmoid scores lie in (b, b + 1)).
/// Then exact ties are planted: two experts with the same logit (and bias) in each token,
/// one of them the token's best, so that the lower index must win.
pub fn route_cases() -> Vec<RouteCase> {
    use Gating::{Sigmoid, Softmax};
    // (n_expert, n_used, gating, norm, scale, groups, bias, logits in lo..lo + 8)
    #[allow(clippy::type_complexity)]
    let configs: [(
        usize,
        usize,
        Gating,
        bool,
        f32,
        Option<(usize, usize)>,
        bool,
        f32,
    ); 9] = [
        (128, 8, Softmax, true, 1.0, None, false, -4.0),
        (60, 4, Softmax, false, 0.0, None, false, -4.0),
        (160, 6, Softmax, false, 16.0, Some((8, 3)), false, -4.0),
        (256, 8, Sigmoid, true, 2.5, Some((8, 4)), true, -4.0),
        (16, 3, Sigmoid, true, 1.0, Some((16, 5)), true, -4.0),
        (64, 32, Softmax, true, 1.0, None, false, -4.0),
        (256, 16, Softmax, false, 1.0, None, false, -4.0),
        (8, 2, Sigmoid, true, 1.0, None, false, -24.0),
        (40, 5, Sigmoid, false, 1.0, Some((4, 1)), false, -4.0),
    ];
    let mut r = rng(11);
    configs
        .iter()
        .map(|&(n, k, gating, norm, scale, groups, has_bias, lo)| {
            let ntok = 3;
            let bias: Option<Vec<f32>> =
                has_bias.then(|| (0..n).map(|e| ((e * 7) % 4) as f32).collect());
            let step = 8.0 / n as f32;
            let mut logits = Vec::with_capacity(ntok * n);
            for _ in 0..ntok {
                let mut grid: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    grid.swap(i, r.random_range(0..=i));
                }
                let mut x: Vec<f32> = grid.iter().map(|&g| lo + g as f32 * step).collect();
                // Ties: the best expert (by selection score) and a random partner of the same
                // bias, and a random pair.
                let sel = |e: usize, x: &[f32]| x[e] + bias.as_ref().map_or(0.0, |b| b[e]) * 100.0;
                let best = (0..n)
                    .max_by(|&a, &b| sel(a, &x).total_cmp(&sel(b, &x)))
                    .unwrap();
                for a in [best, r.random_range(0..n)] {
                    let same: Vec<usize> = (0..n)
                        .filter(|&e| e != a && bias.as_ref().is_none_or(|b| b[e] == b[a]))
                        .collect();
                    let b = same[r.random_range(0..same.len())];
                    x[b] = x[a];
                }
                logits.extend(x);
            }
            RouteCase {
                router: Router {
                    n_expert: n,
                    n_used: k,
                    gating,
                    norm,
                    scale,
                    groups,
                },
                ntok,
                logits,
                bias,
            }
        })
        .collect()
}

/// The bound on a routing weight's relative difference from `route_ref`'s. A probability:
/// softmax, exp within 2 ulp on the GPU and 1 on the CPU (6u), the sum in f32 over 8 terms a
/// lane and a 5-level shuffle (12u) against an f64 sum, a reciprocal and a product on each
/// side (4u): 22u, taken as 24u; sigmoid, exp (6u), 1 + e and the division on each side
/// (4u): 10u. Normalised, the ratio of one probability to a sum of k: twice that plus the
/// two sums' (k − 1)u each and the divisions' 2u. Scaled: 2u more.
pub fn route_weight_tolerance(r: &Router) -> f64 {
    let p = match r.gating {
        Gating::Softmax => 24.0,
        Gating::Sigmoid => 10.0,
    };
    let mut rel = if r.norm {
        2.0 * p + 2.0 * r.n_used as f64
    } else {
        p
    };
    if r.scale != 0.0 && r.scale != 1.0 {
        rel += 2.0;
    }
    rel * U
}

/// A routing result against `route_ref`'s on the same logits: the same experts in the same
/// order (see [`route_cases`]), the weights within [`route_weight_tolerance`], or equal bits
/// where `same_arithmetic` and the gating is sigmoid (the host check: the same expf, the
/// same operations in the same order).
pub fn check_route(
    case: &RouteCase,
    ids: &[u32],
    weights: &[f32],
    same_arithmetic: bool,
    what: &str,
) {
    let r = &case.router;
    let (n, k) = (r.n_expert, r.n_used);
    let tol = route_weight_tolerance(r);
    for t in 0..case.ntok {
        let mut logits = case.logits[t * n..(t + 1) * n].to_vec();
        let (mut want_ids, mut want_w) = (vec![0u32; k], vec![0.0f32; k]);
        route_ref(
            &mut logits,
            case.bias.as_deref(),
            r,
            &mut want_ids,
            &mut want_w,
        );
        let (got_ids, got_w) = (&ids[t * k..(t + 1) * k], &weights[t * k..(t + 1) * k]);
        assert_eq!(got_ids, want_ids, "{what} {r:?} token {t}: experts");
        for j in 0..k {
            let (g, w) = (got_w[j], want_w[j]);
            if same_arithmetic && r.gating == Gating::Sigmoid {
                assert!(
                    same_bits(g, w),
                    "{what} {r:?} token {t} weight {j}: {g:e} vs {w:e} (same arithmetic)"
                );
            }
            let diff = (f64::from(g) - f64::from(w)).abs();
            assert!(
                diff <= tol * f64::from(w).abs() + f64::from(f32::MIN_POSITIVE),
                "{what} {r:?} token {t} weight {j}: {g:e} vs {w:e} (|diff| {diff:e}, tol {:e})",
                tol * f64::from(w).abs()
            );
        }
    }
}

/// `k` distinct experts for each of `ntok` tokens (`ntok × k` ids below `n_expert`).
pub fn random_expert_ids(r: &mut ChaCha8Rng, ntok: usize, k: usize, n_expert: usize) -> Vec<u32> {
    let mut ids = Vec::with_capacity(ntok * k);
    for _ in 0..ntok {
        let mut all: Vec<u32> = (0..n_expert as u32).collect();
        for j in 0..k {
            let i = r.random_range(j..n_expert);
            all.swap(j, i);
        }
        ids.extend_from_slice(&all[..k]);
    }
    ids
}

/// moe_sort's result worked out here: (offsets, perm, inv), a stable sort of the slots by
/// expert, ids ≥ n_expert after every expert's run.
pub fn sort_ref(ids: &[u32], n_expert: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let bucket = |id: u32| (id as usize).min(n_expert);
    let mut offsets = vec![0u32; n_expert + 1];
    let mut perm = Vec::with_capacity(ids.len());
    for (b, off) in offsets.iter_mut().enumerate() {
        *off = perm.len() as u32;
        perm.extend((0..ids.len() as u32).filter(|&s| bucket(ids[s as usize]) == b));
    }
    let mut inv = vec![0u32; ids.len()];
    for (p, &s) in perm.iter().enumerate() {
        inv[s as usize] = p as u32;
    }
    (offsets, perm, inv)
}

/// moe_weighted_sum's sums worked out here, in its order: for each token, 0 plus each of
/// its k slots' weight times row, j in order (f32, a product and a sum each).
pub fn weighted_sum_ref(
    y: &[f32],
    rows: Option<&[u32]>,
    weights: &[f32],
    (ncols, k, ntok): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0.0f32; ntok * ncols];
    for (t, o) in out.chunks_exact_mut(ncols).enumerate() {
        for j in 0..k {
            let s = t * k + j;
            let row = rows.map_or(s, |r| r[s] as usize);
            for (c, o) in o.iter_mut().enumerate() {
                *o += weights[s] * y[row * ncols + c];
            }
        }
    }
    out
}

/// One MLA attention call: `ntok` tokens at positions `pos` (clamped to the cache's
/// `n_ctx` rows, which are all filled), `n_heads` heads, rows of `width` with the value from
/// `v_off`.
pub struct MlaCase {
    pub n_heads: usize,
    pub width: usize,
    pub v_off: usize,
    pub scale: f32,
    pub q: Vec<f32>,
    pub cache: LatentCache,
    pub pos: Vec<i32>,
}

impl MlaCase {
    /// Random queries and an f16 cache of random rows, values in [−1, 1).
    pub fn new(
        seed: u64,
        (n_heads, width, v_off): (usize, usize, usize),
        n_ctx: usize,
        pos: Vec<i32>,
    ) -> MlaCase {
        let mut r = rng(seed);
        let q = randn(&mut r, pos.len() * n_heads * width, 1.0);
        let mut cache = LatentCache::try_new(KvType::F16, n_ctx, width).unwrap();
        cache.append(0, &randn(&mut r, n_ctx * width, 1.0)).unwrap();
        MlaCase {
            n_heads,
            width,
            v_off,
            scale: 1.0 / (width as f32).sqrt(),
            q,
            cache,
            pos,
        }
    }

    pub fn shape(&self) -> MlaShape {
        MlaShape {
            n_tokens: self.pos.len(),
            n_heads: self.n_heads,
            v_off: self.v_off,
            scale: self.scale,
        }
    }

    /// The cache's rows as f16 bits.
    pub fn cache_bits(&self) -> Vec<u16> {
        f16_bits(&self.cache)
    }

    /// Each head's query cut as `mla_attention_f16` takes it: the rotary parts (`v_off`
    /// values a head), then the latent parts.
    pub fn split_q(&self) -> (Vec<f32>, Vec<f32>) {
        let (mut pe, mut lat) = (Vec::new(), Vec::new());
        for h in self.q.chunks_exact(self.width) {
            pe.extend_from_slice(&h[..self.v_off]);
            lat.extend_from_slice(&h[self.v_off..]);
        }
        (pe, lat)
    }

    /// `got` (ntok × n_heads × (width − v_off)) against `mla_attention_ref`, token by token
    /// at its clamped position. A score is a sum of `width` products, then scaled: the CPU's
    /// in order, within (width + 1)·u·scale·Σ|q·C| of exact; the kernel's, ⌈width/32⌉
    /// products a lane and a 5-level shuffle, within (⌈width/32⌉ + 7)·u·scale·Σ|q·C|. A
    /// probability's relative difference is then at most twice the largest score
    /// difference (its own, and the shift by the max and the sum). The online softmax adds
    /// per position a rescaling (exp within 2 ulp) and a product and a sum (8u with the
    /// CPU's sums), and the merge a few more: (8·n_pos + 32)·u. The output Σ p·v errs by
    /// that relative error times max|v|.
    pub fn check(&self, got: &[f32], what: &str) {
        let (nh, w, dv) = (self.n_heads, self.width, self.width - self.v_off);
        let n_ctx = self.cache.n_ctx();
        let rows: Vec<f32> = {
            let mut v = vec![0.0f32; n_ctx * w];
            dequantize(GgmlType::F16, self.cache.rows().as_bytes(), &mut v).unwrap();
            v
        };
        for (t, &p) in self.pos.iter().enumerate() {
            let sp = (p.max(0) as usize).min(n_ctx - 1);
            let qt = &self.q[t * nh * w..(t + 1) * nh * w];
            let mut want = vec![0.0f32; nh * dv];
            let one = MlaShape {
                n_tokens: 1,
                ..self.shape()
            };
            mla_attention_ref(qt, &self.cache, sp, one, &mut want);
            let n_pos = sp + 1;
            let vmax = (0..n_pos)
                .flat_map(|j| &rows[j * w + self.v_off..(j + 1) * w])
                .fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
            for h in 0..nh {
                let qh = &qt[h * w..(h + 1) * w];
                let s_max = (0..n_pos)
                    .map(|j| {
                        qh.iter()
                            .zip(&rows[j * w..(j + 1) * w])
                            .map(|(&a, &b)| f64::from(a * b).abs())
                            .sum::<f64>()
                    })
                    .fold(0.0f64, f64::max)
                    * f64::from(self.scale);
                let score = (w + 1 + w.div_ceil(32) + 7) as f64 * U * s_max;
                let tol = (2.0 * score + (8 * n_pos + 32) as f64 * U) * vmax;
                for c in 0..dv {
                    let i = (t * nh + h) * dv + c;
                    let (g, x) = (f64::from(got[i]), f64::from(want[h * dv + c]));
                    assert!(
                        (g - x).abs() <= tol,
                        "{what} token {t} (pos {p}) head {h} value {c}: {g} vs {x} (tol {tol:e})"
                    );
                }
            }
        }
    }
}

/// An f16 latent cache's rows as bits.
fn f16_bits(cache: &LatentCache) -> Vec<u16> {
    cache
        .rows()
        .as_bytes()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The spacing of f16 values around `v`: 2^(e − 10) for |v| in [2^e, 2^(e+1)), and the
/// subnormals' 2^−24 below 2^−14.
fn f16_ulp(v: f64) -> f64 {
    let e = v.abs().log2().floor().max(-14.0);
    2f64.powf(e - 10.0)
}

/// One call of the MLA kernels that prepare attention (mla_store_latent, mla_split_q):
/// `ntok` tokens at positions `pos` of an `n_ctx`-row latent cache, `dims`' widths, RoPE
/// `rope`, and random inputs: attn_kv_a_mqa's output `kv` with the latent's norm, and each
/// head's query `q` (values in [−1, 1), the norm's around 1).
pub struct MlaPrepCase {
    pub dims: MlaDims,
    pub rope: Rope,
    pub n_ctx: usize,
    pub pos: Vec<i32>,
    pub eps: f32,
    pub kv: Vec<f32>,
    pub norm: Vec<f32>,
    pub q: Vec<f32>,
}

impl MlaPrepCase {
    pub fn new(seed: u64, dims: MlaDims, rope: Rope, n_ctx: usize, pos: Vec<i32>) -> Self {
        let mut r = rng(seed);
        let n = pos.len();
        let kv = randn(&mut r, n * (dims.kvr + dims.pe), 1.0);
        let norm = randn(&mut r, dims.kvr, 0.5)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        let q = randn(&mut r, n * dims.n_heads * (dims.nope + dims.pe), 1.0);
        MlaPrepCase {
            dims,
            rope,
            n_ctx,
            pos,
            eps: 1e-6,
            kv,
            norm,
            q,
        }
    }

    /// The cases the host and GPU checks run, named: DeepSeek's widths (`heads` heads of
    /// 128 + 64, a latent of 512) at two positions, and narrow heads with n_rot short of
    /// the rotary part and a position past the cache; each with both pairings, with and
    /// without YaRN.
    pub fn cases(heads: usize) -> Vec<(String, MlaPrepCase)> {
        let wide = MlaDims {
            n_heads: heads,
            nope: 128,
            pe: 64,
            kvr: 512,
        };
        let narrow = MlaDims {
            n_heads: 2,
            nope: 32,
            pe: 16,
            kvr: 64,
        };
        let shapes = [(wide, 64, 40, vec![7, 39]), (narrow, 8, 10, vec![3, 12, 0])];
        let mut out = Vec::new();
        for (i, (dims, n_rot, n_ctx, pos)) in shapes.into_iter().enumerate() {
            for (j, rope) in Self::ropes(n_rot).into_iter().enumerate() {
                let seed = 100 + 10 * i as u64 + j as u64;
                let case = MlaPrepCase::new(seed, dims, rope, n_ctx, pos.clone());
                out.push((format!("mla case {i} rope {j}"), case));
            }
        }
        out
    }

    /// `n_rot` (normal and NeoX, with and without YaRN as DeepSeek-R1 sets it: factor 40 of
    /// a 4096 context, mscale from log_mul 0.1) over the rotary parts `dims.pe`.
    fn ropes(n_rot: usize) -> Vec<Rope> {
        let plain = |neox| Rope {
            n_rot,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox,
            yarn: None,
        };
        let yarn = |neox| Rope {
            freq_scale: 1.0 / 40.0,
            yarn: Some(Yarn::new(n_rot, 4096, 10000.0, 1.0 + 0.1 * 40f32.ln())),
            ..plain(neox)
        };
        vec![plain(false), plain(true), yarn(false), yarn(true)]
    }

    pub fn rope_params(&self) -> RopeParams {
        RopeParams {
            n_rot: self.rope.n_rot,
            freq_base: self.rope.freq_base,
            freq_scale: self.rope.freq_scale,
            neox: self.rope.neox,
            yarn: self.rope.yarn,
        }
    }

    /// The host checker's ROPE... arguments: n_rot, neox, the six ROPE_PARAMS.
    pub fn rope_args(&self) -> Vec<String> {
        let f = self
            .rope_params()
            .kernel_args("rope", self.dims.pe)
            .unwrap();
        let mut a = vec![
            self.rope.n_rot.to_string(),
            u8::from(self.rope.neox).to_string(),
        ];
        a.extend(f.iter().map(|v| v.to_string()));
        a
    }

    fn width(&self) -> usize {
        self.dims.pe + self.dims.kvr
    }

    /// `got` (the cache's `n_ctx` rows as f16 bits, zero before the call) against the CPU's
    /// forward pass: row `[k_pe | rms_norm(latent) · norm]`, RoPE over its first n_rot
    /// values, appended as f16 at the token's position; rows no token writes stay zero. The
    /// f32 values differ by the sum of squares' order (≤ kvr·u relative on the scale) and
    /// by sin/cos and the rotation's roundings (as in the RoPE checks, ≤ 32u of the pair's
    /// magnitude): far below an f16 step, so rounded they are at most one step apart.
    pub fn check_cache(&self, got: &[u16], what: &str) {
        let (pe, kvr, w) = (self.dims.pe, self.dims.kvr, self.width());
        let mut want = vec![0u8; 2 * self.n_ctx * w];
        let mut row = vec![0.0f32; w];
        for (t, &p) in self.pos.iter().enumerate() {
            let kv = &self.kv[t * (kvr + pe)..(t + 1) * (kvr + pe)];
            row[..pe].copy_from_slice(&kv[kvr..]);
            ops::rms_norm_ref(&kv[..kvr], &self.norm, self.eps, &mut row[pe..]);
            ops::rope_rows(&mut row, 1, 1, w, p as usize, &self.rope);
            if (0..self.n_ctx as i32).contains(&p) {
                let at = 2 * p as usize * w;
                quantize(GgmlType::F16, &row, &mut want[at..at + 2 * w]).unwrap();
            }
        }
        assert_eq!(2 * got.len(), want.len(), "{what}: cache size");
        for (i, (&g, x)) in got.iter().zip(want.chunks_exact(2)).enumerate() {
            let (g, x) = (
                f64::from(f16_value(&g.to_le_bytes())),
                f64::from(f16_value(x)),
            );
            assert!(
                (g - x).abs() <= f16_ulp(x),
                "{what}: cache row {} value {}: {g} vs {x}",
                i / w,
                i % w
            );
        }
    }

    /// `qn` (each head's first nope values, exactly) and `q_pe` (its rotary part, RoPE'd at
    /// its token's position) against the CPU's rope_rows. Angles are the same f32
    /// recurrence (and YaRN's mix the same roundings); sin/cos within 2 ulp, times mscale,
    /// two products and a sum: |err| ≤ 2·(2 + 1 + 1 + 1)·u·mscale·(|x0| + |x1|) for the
    /// two sides together, within 32u·mscale·2·max|x|.
    pub fn check_split(&self, qn: &[f32], q_pe: &[f32], what: &str) {
        let (nope, pe, nh) = (self.dims.nope, self.dims.pe, self.dims.n_heads);
        let mscale = f64::from(self.rope.yarn.map_or(1.0, |y| y.mscale));
        for (t, &p) in self.pos.iter().enumerate() {
            for h in 0..nh {
                let head = t * nh + h;
                let src = &self.q[head * (nope + pe)..(head + 1) * (nope + pe)];
                for c in 0..nope {
                    assert!(
                        same_bits(qn[head * nope + c], src[c]),
                        "{what}: token {t} head {h} nope value {c}"
                    );
                }
                let mut want = src[nope..].to_vec();
                ops::rope_rows(&mut want, 1, 1, pe, p as usize, &self.rope);
                let xmax = src[nope..]
                    .iter()
                    .fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
                let tol = 64.0 * U * mscale * xmax;
                for (c, &x) in want.iter().enumerate() {
                    let g = q_pe[head * pe + c];
                    assert!(
                        (f64::from(g) - f64::from(x)).abs() <= tol,
                        "{what}: token {t} (pos {p}) head {h} rotary value {c}: {g} vs {x}"
                    );
                }
            }
        }
    }
}

/// An older MLA file's absorption, `mla_absorb_t`: every head's `nope` k rows of `kvr`
/// values in format `ty` (random), and `n_slot` query parts.
pub struct AbsorbCase {
    pub ty: GgmlType,
    pub dims: MlaDims,
    pub n_slot: usize,
    pub w: Vec<u8>,
    pub x: Vec<f32>,
}

impl AbsorbCase {
    pub fn new(seed: u64, ty: GgmlType, dims: MlaDims, n_slot: usize) -> AbsorbCase {
        let mut r = rng(seed);
        let w = weights(&mut r, ty, dims.n_heads * dims.nope, dims.kvr);
        let x = randn(&mut r, n_slot * dims.nope, 1.0);
        AbsorbCase {
            ty,
            dims,
            n_slot,
            w,
            x,
        }
    }

    /// `lat` (`n_slot × kvr`) against Σ_r x[s][r]·W[h·nope + r][c] in f64 over the CPU's
    /// dequantized weights (exact): the kernel's f32 sum of nope products in order is
    /// within (nope + 1)·u·Σ|x·w| of it.
    pub fn check(&self, lat: &[f32], what: &str) {
        let MlaDims {
            n_heads, nope, kvr, ..
        } = self.dims;
        let mut wf = vec![0.0f32; n_heads * nope * kvr];
        dequantize(self.ty, &self.w, &mut wf).unwrap();
        for s in 0..self.n_slot {
            let h = s % n_heads;
            let x = &self.x[s * nope..(s + 1) * nope];
            for c in 0..kvr {
                let (mut want, mut abs) = (0.0f64, 0.0f64);
                for (r, &xr) in x.iter().enumerate() {
                    let t = f64::from(xr) * f64::from(wf[(h * nope + r) * kvr + c]);
                    want += t;
                    abs += t.abs();
                }
                let tol = (nope + 1) as f64 * U * abs;
                let g = f64::from(lat[s * kvr + c]);
                assert!(
                    (g - want).abs() <= tol,
                    "{what} {:?} slot {s} column {c}: {g} vs {want} (tol {tol:e})",
                    self.ty
                );
            }
        }
    }
}
