//! What both build scripts that compile CUDA C to PTX share (kernels-cuda/build.rs for the
//! product's kernels, dev/cuda/build.rs for the trial variants): finding NVRTC, compiling
//! each module, embedding its PTX deflated, and the table of modules (`PtxModule`s).
//!
//! NVRTC comes from, in order: `STRATA_NVRTC` (path to a libnvrtc), a CUDA toolkit
//! (`CUDA_PATH`, `CUDA_HOME`, `/usr/local/cuda`), or the PyPI wheels that
//! `scripts/fetch-cuda.sh` unpacks into `.cuda/` at the workspace root (`STRATA_CUDA_DIR`
//! overrides that folder). cudarc opens libnvrtc by file name only, so the library found here
//! is loaded by its full path first; the dynamic loader then hands cudarc that same library
//! when it asks for its soname (`libnvrtc.so.12`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The first bytes of every embedded module (written into the table as `PTX_MARKER` by
/// kernels-cuda): scripts/gpu-bundle.sh looks for them to tell a binary with kernels from
/// one built without NVRTC.
pub const PTX_MARKER: &[u8] = b"STRATA-PTX-DEFLATE\0";

/// Where the PTX comes from: a libnvrtc and the folder of CUDA headers beside it.
pub struct Nvrtc {
    lib: PathBuf,
    include: Option<PathBuf>,
}

/// One PTX module to make: `src` compiled for virtual architecture `arch` into
/// `OUT_DIR/<stem>.ptx`.
pub struct Job {
    pub stem: String,
    pub src: PathBuf,
    pub arch: String,
    /// `-D` macros, as "NAME=VALUE".
    pub defines: Vec<String>,
}

/// The workspace root, `depth` folders above a crate's manifest folder (1 for kernels-cuda,
/// 2 for dev/cuda).
pub fn workspace(manifest: &Path, depth: usize) -> PathBuf {
    manifest
        .ancestors()
        .nth(depth)
        .expect("the crate lies inside the workspace")
        .to_path_buf()
}

/// The virtual architecture of the PTX: `STRATA_CUDA_ARCH`, else compute_80.
pub fn arch() -> String {
    std::env::var("STRATA_CUDA_ARCH").unwrap_or_else(|_| "compute_80".to_string())
}

/// 80 for "compute_80", 90 for "compute_90a".
pub fn arch_number(arch: &str) -> Option<u32> {
    let digits: String = arch
        .strip_prefix("compute_")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// NVRTC, with the cargo lines that rerun the build script when it changes; `None` (after a
/// cargo warning in `crate_name`'s name) when there is none: the crate then builds without
/// kernels.
pub fn find(workspace: &Path, crate_name: &str) -> Option<Nvrtc> {
    for var in [
        "STRATA_NVRTC",
        "STRATA_CUDA_DIR",
        "STRATA_CUDA_ARCH",
        "CUDA_PATH",
        "CUDA_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let cuda_dir = std::env::var_os("STRATA_CUDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".cuda"));
    // The stamp appears when fetch-cuda.sh finishes. A missing path is not watched: cargo
    // would rerun this script (and rebuild every crate above) on every build. Instead
    // fetch-cuda.sh touches the build scripts after a fetch, which reruns them.
    let stamp = cuda_dir.join(".fetched");
    if stamp.exists() {
        println!("cargo:rerun-if-changed={}", stamp.display());
    } else if cuda_dir.exists() {
        println!("cargo:rerun-if-changed={}", cuda_dir.display());
    }
    let found = locate(&cuda_dir);
    match &found {
        Some((nvrtc, watch)) => {
            println!("cargo:rerun-if-changed={}", watch.display());
            load(nvrtc, crate_name);
        }
        None => println!(
            "cargo:warning={crate_name}: NVRTC not found (no CUDA toolkit, no .cuda/ from \
             scripts/fetch-cuda.sh): building CPU-only, without CUDA kernels"
        ),
    }
    found.map(|(nvrtc, _)| nvrtc)
}

/// NVRTC and the file whose change means "NVRTC changed" (the fetch script's stamp, or the
/// library).
fn locate(cuda_dir: &Path) -> Option<(Nvrtc, PathBuf)> {
    if let Some(lib) = std::env::var_os("STRATA_NVRTC").map(PathBuf::from) {
        if lib.is_file() {
            let include = lib
                .parent()
                .and_then(Path::parent)
                .map(|p| p.join("include"));
            let nvrtc = Nvrtc {
                include: include.filter(|p| p.is_dir()),
                lib: lib.clone(),
            };
            return Some((nvrtc, lib));
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
                let nvrtc = Nvrtc {
                    include: Some(root.join("include")),
                    lib: lib.clone(),
                };
                return Some((nvrtc, lib));
            }
        }
    }
    let lib = cuda_dir.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    if lib.is_file() {
        let include = cuda_dir.join("nvidia/cuda_runtime/include");
        let nvrtc = Nvrtc {
            include: include.is_dir().then_some(include),
            lib,
        };
        return Some((nvrtc, cuda_dir.join(".fetched")));
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

/// Loads libnvrtc by its path, so that cudarc's lookup by soname finds it.
fn load(nvrtc: &Nvrtc, crate_name: &str) {
    // SAFETY: loading libnvrtc runs its initialisers, which have no preconditions. The
    // handle is leaked on purpose: cudarc looks the library up by soname for the rest of
    // this process and must find this one.
    match unsafe { libloading::Library::new(&nvrtc.lib) } {
        Ok(lib) => std::mem::forget(lib),
        Err(e) => panic!(
            "{crate_name}: cannot load NVRTC {}: {e}",
            nvrtc.lib.display()
        ),
    }
    // SAFETY: only probes for the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        panic!(
            "{crate_name}: loaded {} but cudarc cannot open libnvrtc by name",
            nvrtc.lib.display()
        );
    }
}

/// Compiles each job to `OUT_DIR/<stem>.ptx` and, deflated behind [`PTX_MARKER`], to
/// `<stem>.ptx.z` (what the crate embeds). `#include`s are looked up in `include_dirs`, then
/// in NVRTC's CUDA headers. A kernel that does not compile fails the build: a kernel bug
/// must never turn into a silently CPU-only binary.
pub fn compile_all(nvrtc: &Nvrtc, include_dirs: &[&Path], jobs: &[Job], out: &Path) {
    for job in jobs {
        let src = std::fs::read_to_string(&job.src)
            .unwrap_or_else(|e| panic!("reading {}: {e}", job.src.display()));
        let mut include_paths: Vec<String> = include_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        if let Some(inc) = &nvrtc.include {
            include_paths.push(inc.display().to_string());
        }
        let opts = cudarc::nvrtc::CompileOptions {
            include_paths,
            name: Some(format!("{}.cu", job.stem)),
            options: vec![
                format!("--gpu-architecture={}", job.arch),
                "--std=c++17".to_string(),
                // Kernels are compiled for exactness first: no flush-to-zero, IEEE division
                // and square root (ops that may use fast paths ask for them by intrinsic).
                "--ftz=false".to_string(),
                "--prec-div=true".to_string(),
                "--prec-sqrt=true".to_string(),
            ]
            .into_iter()
            .chain(job.defines.iter().map(|d| format!("-D{d}")))
            .collect(),
            ..Default::default()
        };
        let ptx = match cudarc::nvrtc::compile_ptx_with_opts(&src, opts) {
            Ok(p) => p.to_src(),
            Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => panic!(
                "NVRTC failed on {} (module {}):\n{}",
                job.src.display(),
                job.stem,
                log.to_string_lossy()
            ),
            Err(e) => panic!("NVRTC failed on {}: {e:?}", job.src.display()),
        };
        let dst = out.join(format!("{}.ptx", job.stem));
        std::fs::write(&dst, &ptx).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
        // What the crate embeds: the marker, then the PTX deflated (ptx.rs inflates it).
        let mut z = PTX_MARKER.to_vec();
        z.extend(miniz_oxide::deflate::compress_to_vec(ptx.as_bytes(), 9));
        let dst = out.join(format!("{}.ptx.z", job.stem));
        std::fs::write(&dst, z).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
    }
}

/// Appends `pub const MODULES: &[PtxModule]` to `s`: each compiled job's name, virtual
/// architecture and its number, and deflated PTX (embedded with `include_bytes!`); empty
/// when nothing was compiled. `PtxModule` must be in scope where the table is included.
pub fn module_table(s: &mut String, compiled: &[Job]) {
    writeln!(
        s,
        "/// Every kernel module: name, virtual architecture and its number, deflated PTX."
    )
    .unwrap();
    writeln!(s, "pub const MODULES: &[PtxModule] = &[").unwrap();
    for Job { stem, arch, .. } in compiled {
        let min_cc = arch_number(arch);
        writeln!(
            s,
            "    PtxModule {{ name: {stem:?}, arch: {arch:?}, min_compute_capability: {min_cc:?}, \
             deflated: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx.z\")) }},"
        )
        .unwrap();
    }
    writeln!(s, "];").unwrap();
}
