//! Shared helpers of the integration tests: where the golden data and the model live.

use std::path::PathBuf;

pub mod cuda_check;
pub mod forward;
pub mod golden;
pub mod random_model;
pub mod split;

/// The workspace root. `STRATA_ROOT` overrides it, for test binaries run away from the
/// source tree
/// (scripts/gpu-check.sh runs them from a bundle that carries `golden/data`).
pub fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("STRATA_ROOT") {
        return PathBuf::from(r);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `golden/data/<name>`.
pub fn golden(name: &str) -> PathBuf {
    root().join("golden").join("data").join(name)
}

/// The default model, fetched by `scripts/fetch-model.sh`; `None` if it is absent.
pub fn smollm2() -> Option<PathBuf> {
    let p = root()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}
