//! Compiles every `kernels/*.cu` to PTX with NVRTC and embeds the PTX in the crate.
//!
//! NVRTC comes from, in order: `STRATA_NVRTC` (path to a libnvrtc), a CUDA toolkit
//! (`CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda`), or the PyPI wheels that
//! `scripts/fetch-cuda.sh` unpacks into `.cuda/` at the workspace root (`STRATA_CUDA_DIR`
//! overrides that folder). cudarc opens libnvrtc by file name only, so the library found here
//! is loaded by its full path first; the dynamic loader then hands cudarc that same library
//! when it asks for its soname (`libnvrtc.so.12`).
//!
//! Without NVRTC the crate builds CPU-only: one cargo warning here, and at run time
//! `strata_kernels_cuda::ptx::BUILT_WITH_KERNELS` is false. A kernel that does not compile
//! fails the build: a kernel bug must never turn into a silently CPU-only binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the kernels' PTX comes from: a libnvrtc and the folder of CUDA headers beside it.
struct Nvrtc {
    lib: PathBuf,
    include: Option<PathBuf>,
    /// Files whose change means "NVRTC changed" (the fetch script's stamp, the library).
    watch: PathBuf,
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let kernels_dir = manifest.join("kernels");
    let workspace = manifest
        .parent()
        .expect("kernels-cuda/ has a parent")
        .to_path_buf();
    let cuda_dir = std::env::var_os("STRATA_CUDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".cuda"));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", kernels_dir.display());
    for var in [
        "STRATA_NVRTC",
        "STRATA_CUDA_DIR",
        "STRATA_CUDA_ARCH",
        "CUDA_PATH",
        "CUDA_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The stamp appears when fetch-cuda.sh finishes; while .cuda/ is absent, watching the
    // missing path makes cargo rerun this script until it appears (cheap: nothing compiles).
    let stamp = cuda_dir.join(".fetched");
    println!(
        "cargo:rerun-if-changed={}",
        if stamp.exists() {
            stamp.display().to_string()
        } else {
            cuda_dir.display().to_string()
        }
    );

    let arch = std::env::var("STRATA_CUDA_ARCH").unwrap_or_else(|_| "compute_80".to_string());
    let mut jobs: Vec<Job> = kernel_sources(&kernels_dir)
        .into_iter()
        .map(|src| Job {
            stem: src
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 kernel file name")
                .to_string(),
            src,
            arch: arch.clone(),
            defines: Vec::new(),
        })
        .collect();
    // Every matvec module gets its shape from MATVEC_VARIANTS (the header's defaults are only
    // for the host check), so the launch geometry written below matches by construction.
    if let Some(matvec) = jobs.iter_mut().find(|j| j.stem == "matvec") {
        let default = &MATVEC_VARIANTS[0];
        matvec.defines = default.defines();
        let src = matvec.src.clone();
        // matvec.cu again for sm_90 and later: its programmatic-dependent-launch steps
        // (griddepcontrol) exist only there; `Gpu::set_matvec_pdl` loads this module.
        let pdl_arch = if arch_number(&arch).is_some_and(|n| n >= 90) {
            arch.clone()
        } else {
            "compute_90".to_string()
        };
        jobs.push(Job {
            stem: MATVEC_PDL_MODULE.to_string(),
            src: src.clone(),
            arch: pdl_arch,
            defines: default.defines(),
        });
        // And once per shape variant of the quantized kernels, for cuda-bench to compare.
        for v in &MATVEC_VARIANTS[1..] {
            jobs.push(Job {
                stem: v.module(),
                src: src.clone(),
                arch: arch.clone(),
                defines: v.defines(),
            });
        }
    }

    let compiled = match find_nvrtc(&cuda_dir) {
        Some(nvrtc) => {
            println!("cargo:rerun-if-changed={}", nvrtc.watch.display());
            compile_all(&nvrtc, &kernels_dir, &jobs, &out);
            true
        }
        None => {
            println!(
                "cargo:warning=strata-kernels-cuda: NVRTC not found (no CUDA toolkit, no .cuda/ \
                 from scripts/fetch-cuda.sh): building CPU-only, without CUDA kernels"
            );
            false
        }
    };
    write_module_table(&out, compiled.then_some(&jobs[..]), &arch);
}

/// The first bytes of every embedded module (written into modules.rs as `ptx::PTX_MARKER`):
/// scripts/gpu-bundle.sh looks for them to tell a binary with kernels from one built
/// without NVRTC.
const PTX_MARKER: &[u8] = b"STRATA-PTX-DEFLATE\0";
/// The module of matvec.cu compiled for sm_90 and later (modules.rs: `MATVEC_PDL_MODULE`).
const MATVEC_PDL_MODULE: &str = "matvec_sm90";

/// One PTX module to make: `src` compiled for virtual architecture `arch` into
/// `OUT_DIR/<stem>.ptx`.
struct Job {
    stem: String,
    src: PathBuf,
    arch: String,
    /// `-D` macros, as "NAME=VALUE".
    defines: Vec<String>,
}

/// A shape of matvec.cu's quantized kernels (matvec_lane.cuh's macros).
struct MatvecShape {
    /// "default" for modules `matvec` and `matvec_sm90`, else module `matvec_<name>`.
    name: &'static str,
    /// Why this variant is worth timing (goes into the generated table's docs).
    why: &'static str,
    warps: u32,
    rows_per_warp_legacy: u32,
    rows_per_warp_k: u32,
    unroll_legacy: u32,
    unroll_k: u32,
}

impl MatvecShape {
    /// The module that holds this shape's kernels.
    fn module(&self) -> String {
        if self.name == "default" {
            "matvec".to_string()
        } else {
            format!("matvec_{}", self.name)
        }
    }

    fn defines(&self) -> Vec<String> {
        vec![
            format!("MV_WARPS={}", self.warps),
            format!("MV_RPW_LEGACY={}", self.rows_per_warp_legacy),
            format!("MV_RPW_K={}", self.rows_per_warp_k),
            format!("MV_UNROLL_LEGACY={}", self.unroll_legacy),
            format!("MV_UNROLL_K={}", self.unroll_k),
        ]
    }
}

/// The default shape first, then the variants cuda-bench times beside it (none has run on a
/// GPU yet; each must compile without spills, which tests/tests/cuda_ptx.rs checks).
const MATVEC_VARIANTS: &[MatvecShape] = &[
    MatvecShape {
        name: "default",
        why:
            "8 warps a CTA; legacy formats 2 rows a warp, 2 iterations in flight; K-quants 1 and 1",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 2,
        unroll_k: 1,
    },
    MatvecShape {
        name: "w4",
        why: "4 warps a CTA: twice the CTAs, so a finer last wave",
        warps: 4,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 2,
        unroll_k: 1,
    },
    MatvecShape {
        name: "r4",
        why: "legacy formats 4 rows a warp: each x read from shared memory serves 4 rows",
        warps: 8,
        rows_per_warp_legacy: 4,
        rows_per_warp_k: 1,
        unroll_legacy: 1,
        unroll_k: 1,
    },
    MatvecShape {
        name: "u4",
        why: "legacy formats 4 iterations in flight: more bytes requested per lane",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 4,
        unroll_k: 1,
    },
    MatvecShape {
        name: "k2",
        why: "K-quants 2 units in flight (more registers, fewer warps an SM)",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 2,
        unroll_k: 2,
    },
    MatvecShape {
        name: "kr2",
        why: "K-quants 2 rows a warp: each x read serves 2 rows",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 2,
        unroll_legacy: 2,
        unroll_k: 1,
    },
];

/// 80 for "compute_80", 90 for "compute_90a".
fn arch_number(arch: &str) -> Option<u32> {
    let digits: String = arch
        .strip_prefix("compute_")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `kernels/*.cu`, sorted by name (the `.cuh` headers are included by them, not compiled).
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    v
}

fn find_nvrtc(cuda_dir: &Path) -> Option<Nvrtc> {
    if let Some(lib) = std::env::var_os("STRATA_NVRTC").map(PathBuf::from) {
        if lib.is_file() {
            let include = lib
                .parent()
                .and_then(Path::parent)
                .map(|p| p.join("include"));
            return Some(Nvrtc {
                watch: lib.clone(),
                include: include.filter(|p| p.is_dir()),
                lib,
            });
        }
        println!(
            "cargo:warning=STRATA_NVRTC={} is not a file; looking elsewhere",
            lib.display()
        );
    }
    let toolkits = ["CUDA_PATH", "CUDA_HOME"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda")));
    for root in toolkits {
        for libdir in [
            "lib64",
            "lib",
            "targets/x86_64-linux/lib",
            "targets/sbsa-linux/lib",
        ] {
            if let Some(lib) = find_lib(&root.join(libdir)) {
                let include = root.join("include");
                return Some(Nvrtc {
                    watch: lib.clone(),
                    include: Some(include),
                    lib,
                });
            }
        }
    }
    let lib = cuda_dir.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    if lib.is_file() {
        let include = cuda_dir.join("nvidia/cuda_runtime/include");
        return Some(Nvrtc {
            watch: cuda_dir.join(".fetched"),
            include: include.is_dir().then_some(include),
            lib,
        });
    }
    None
}

/// `libnvrtc.so.<major>` (or the unversioned name) in `dir`.
fn find_lib(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libnvrtc.so") && !n.contains("builtins") && !n.contains("alt")
            })
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Compiles each job to `OUT_DIR/<stem>.ptx`.
fn compile_all(nvrtc: &Nvrtc, kernels_dir: &Path, jobs: &[Job], out: &Path) {
    // SAFETY: loading libnvrtc runs its initialisers, which have no preconditions. The
    // handle is leaked on purpose: cudarc looks the library up by soname for the rest of
    // this process and must find this one.
    match unsafe { libloading::Library::new(&nvrtc.lib) } {
        Ok(lib) => std::mem::forget(lib),
        Err(e) => panic!(
            "strata-kernels-cuda: cannot load NVRTC {}: {e}",
            nvrtc.lib.display()
        ),
    }
    // SAFETY: only probes for the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        panic!(
            "strata-kernels-cuda: loaded {} but cudarc cannot open libnvrtc by name",
            nvrtc.lib.display()
        );
    }
    for Job {
        stem,
        src: src_path,
        arch,
        defines,
    } in jobs
    {
        let src = std::fs::read_to_string(src_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", src_path.display()));
        let mut include_paths = vec![kernels_dir.display().to_string()];
        if let Some(inc) = &nvrtc.include {
            include_paths.push(inc.display().to_string());
        }
        let opts = cudarc::nvrtc::CompileOptions {
            include_paths,
            name: Some(format!("{stem}.cu")),
            options: vec![
                format!("--gpu-architecture={arch}"),
                "--std=c++17".to_string(),
                // Kernels are compiled for exactness first: no flush-to-zero, IEEE division
                // and square root (ops that may use fast paths ask for them by intrinsic).
                "--ftz=false".to_string(),
                "--prec-div=true".to_string(),
                "--prec-sqrt=true".to_string(),
            ]
            .into_iter()
            .chain(defines.iter().map(|d| format!("-D{d}")))
            .collect(),
            ..Default::default()
        };
        let ptx = match cudarc::nvrtc::compile_ptx_with_opts(&src, opts) {
            Ok(p) => p.to_src(),
            Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => panic!(
                "strata-kernels-cuda: NVRTC failed on {}:\n{}",
                src_path.display(),
                log.to_string_lossy()
            ),
            Err(e) => panic!(
                "strata-kernels-cuda: NVRTC failed on {}: {e:?}",
                src_path.display()
            ),
        };
        let dst = out.join(format!("{stem}.ptx"));
        std::fs::write(&dst, &ptx).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
        // What the crate embeds: the marker, then the PTX deflated (ptx.rs inflates it).
        let mut z = PTX_MARKER.to_vec();
        z.extend(miniz_oxide::deflate::compress_to_vec(ptx.as_bytes(), 9));
        let dst = out.join(format!("{stem}.ptx.z"));
        std::fs::write(&dst, z).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
    }
}

/// `OUT_DIR/modules.rs`: the PTX of every module, embedded with `include_str!`.
fn write_module_table(out: &Path, compiled: Option<&[Job]>, arch: &str) {
    let mut s = String::new();
    let jobs = compiled.unwrap_or(&[]);
    writeln!(
        s,
        "/// Whether NVRTC was found at build time and the kernels are embedded."
    )
    .unwrap();
    writeln!(
        s,
        "pub const BUILT_WITH_KERNELS: bool = {};",
        compiled.is_some()
    )
    .unwrap();
    writeln!(
        s,
        "/// The virtual architecture of the PTX (`matvec_sm90`'s is in its `PtxModule::arch`)."
    )
    .unwrap();
    writeln!(s, "pub const ARCH: &str = {arch:?};").unwrap();
    writeln!(
        s,
        "/// The first bytes of every module's `deflated` (scripts/gpu-bundle.sh greps \
         binaries for them)."
    )
    .unwrap();
    writeln!(
        s,
        "pub const PTX_MARKER: &[u8] = b{:?};",
        std::str::from_utf8(PTX_MARKER).expect("ASCII marker")
    )
    .unwrap();
    writeln!(
        s,
        "/// matvec.cu compiled for sm_90 and later, the kernels `Gpu::set_matvec_pdl` launches."
    )
    .unwrap();
    writeln!(
        s,
        "pub const MATVEC_PDL_MODULE: &str = {MATVEC_PDL_MODULE:?};"
    )
    .unwrap();
    writeln!(
        s,
        "/// Every kernel module: name, virtual architecture and its number, deflated PTX."
    )
    .unwrap();
    writeln!(s, "pub const MODULES: &[PtxModule] = &[").unwrap();
    for Job { stem, arch, .. } in jobs {
        let min_cc = arch_number(arch);
        writeln!(
            s,
            "    PtxModule {{ name: {stem:?}, arch: {arch:?}, min_compute_capability: {min_cc:?}, \
             deflated: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx.z\")) }},"
        )
        .unwrap();
    }
    writeln!(s, "];").unwrap();
    writeln!(
        s,
        "/// The shapes of the quantized matvec kernels: the default (module `matvec`, and \
         `matvec_sm90`) first, then the variants (module `matvec_<name>`)."
    )
    .unwrap();
    writeln!(s, "pub const MATVEC_SHAPES: &[MatvecShape] = &[").unwrap();
    for v in MATVEC_VARIANTS {
        writeln!(
            s,
            "    MatvecShape {{ name: {:?}, module: {:?}, why: {:?}, defines: &{:?}, warps: {}, \
             rows_per_warp_legacy: {}, rows_per_warp_k: {}, unroll_legacy: {}, unroll_k: {} }},",
            v.name,
            v.module(),
            v.why,
            v.defines(),
            v.warps,
            v.rows_per_warp_legacy,
            v.rows_per_warp_k,
            v.unroll_legacy,
            v.unroll_k
        )
        .unwrap();
    }
    writeln!(s, "];").unwrap();
    std::fs::write(out.join("modules.rs"), s).expect("writing modules.rs");
}
