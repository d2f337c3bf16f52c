//! Compiles dev/cuda's trial modules to PTX, embedded deflated as kernels-cuda embeds its
//! own (the NVRTC discovery and compilation are kernels-cuda/nvrtc_build.rs, shared):
//!
//! - `matvec_<name>`: the product's kernels/matvec.cu in each shape of src/shapes.rs;
//! - `matvec_trial`: kernels/matvec_trial.cu (the product's bodies with an L2 prefetch and
//!   programmatic dependent launch), and `matvec_trial_sm90`, the same for compute_90, where
//!   the dependent-launch steps exist;
//! - `probe`: kernels/probe.cu, the reference kernels cuda-bench times matvecs against.

#[path = "../../kernels-cuda/nvrtc_build.rs"]
mod nvrtc_build;
// Only the macros of each variant are read here, not what the crate reads of them.
#[allow(dead_code)]
#[path = "src/shapes.rs"]
mod shapes;

use std::path::PathBuf;

use nvrtc_build::Job;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let workspace = nvrtc_build::workspace(&manifest, 2);
    let dev_kernels = manifest.join("kernels");
    let product_kernels = workspace.join("kernels-cuda/kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shapes.rs");
    println!("cargo:rerun-if-changed=../../kernels-cuda/nvrtc_build.rs");
    println!("cargo:rerun-if-changed={}", dev_kernels.display());
    println!("cargo:rerun-if-changed={}", product_kernels.display());

    let arch = nvrtc_build::arch();
    let job = |stem: String, src: PathBuf, arch: &str, defines: Vec<String>| Job {
        stem,
        src,
        arch: arch.to_string(),
        defines,
    };
    let mut jobs: Vec<Job> = shapes::VARIANTS
        .iter()
        .map(|v| {
            let src = product_kernels.join("matvec.cu");
            job(v.module(), src, &arch, v.defines())
        })
        .collect();
    let trial = dev_kernels.join("matvec_trial.cu");
    jobs.push(job("matvec_trial".into(), trial.clone(), &arch, Vec::new()));
    // griddepcontrol exists from sm_90 on: that module runs only there.
    let pdl_arch = if nvrtc_build::arch_number(&arch).is_some_and(|n| n >= 90) {
        arch.clone()
    } else {
        "compute_90".to_string()
    };
    jobs.push(job(
        "matvec_trial_sm90".into(),
        trial,
        &pdl_arch,
        Vec::new(),
    ));
    jobs.push(job(
        "probe".into(),
        dev_kernels.join("probe.cu"),
        &arch,
        Vec::new(),
    ));

    let nvrtc = nvrtc_build::find(&workspace, "strata-dev-cuda");
    if let Some(nvrtc) = &nvrtc {
        let includes = [dev_kernels.as_path(), product_kernels.as_path()];
        nvrtc_build::compile_all(nvrtc, &includes, &jobs, &out);
    }
    let mut s = String::new();
    nvrtc_build::module_table(&mut s, if nvrtc.is_some() { &jobs } else { &[] });
    std::fs::write(out.join("modules.rs"), s).expect("writing modules.rs");
}
