//! Compiles every `kernels/*.cu` to PTX with NVRTC and embeds the PTX in the crate, deflated
//! (nvrtc_build.rs, shared with dev/cuda's build script, says where NVRTC comes from).
//!
//! Without NVRTC the crate builds CPU-only: one cargo warning here, and at run time
//! `strata_kernels_cuda::ptx::BUILT_WITH_KERNELS` is false.

#[path = "nvrtc_build.rs"]
mod nvrtc_build;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nvrtc_build::Job;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let kernels_dir = manifest.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=nvrtc_build.rs");
    println!("cargo:rerun-if-changed={}", kernels_dir.display());

    let arch = nvrtc_build::arch();
    let jobs: Vec<Job> = kernel_sources(&kernels_dir)
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
    let workspace = nvrtc_build::workspace(&manifest, 1);
    let nvrtc = nvrtc_build::find(&workspace, "strata-kernels-cuda");
    if let Some(nvrtc) = &nvrtc {
        nvrtc_build::compile_all(nvrtc, &[&kernels_dir], &jobs, &out);
    }

    let mut s = String::new();
    writeln!(
        s,
        "/// Whether NVRTC was found at build time and the kernels are embedded.\n\
         pub const BUILT_WITH_KERNELS: bool = {};\n\
         /// The virtual architecture of the PTX.\n\
         pub const ARCH: &str = {arch:?};\n\
         /// The first bytes of every module's `deflated` (scripts/gpu-bundle.sh greps \
         binaries for them).\n\
         pub const PTX_MARKER: &[u8] = b{:?};",
        nvrtc.is_some(),
        std::str::from_utf8(nvrtc_build::PTX_MARKER).expect("ASCII marker")
    )
    .unwrap();
    nvrtc_build::module_table(&mut s, if nvrtc.is_some() { &jobs } else { &[] });
    std::fs::write(out.join("modules.rs"), s).expect("writing modules.rs");
}

/// `dir/*.cu`, sorted by name (the `.cuh` headers are included by them, not compiled).
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    v.sort();
    v
}
