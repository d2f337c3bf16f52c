//! The PTX that `build.rs` compiled from `kernels/*.cu` and embedded in the crate.

/// One compiled kernel file.
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// The `.cu` file's stem, e.g. `"matvec"`.
    pub name: &'static str,
    /// PTX text, NUL-free.
    pub ptx: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The embedded module named `name`.
pub fn module(name: &str) -> Option<&'static PtxModule> {
    MODULES.iter().find(|m| m.name == name)
}

/// "built without CUDA kernels" when NVRTC was missing at build time, else `None`.
pub fn missing_kernels_reason() -> Option<&'static str> {
    (!BUILT_WITH_KERNELS).then_some(
        "built without CUDA kernels (NVRTC was not found at build time; run scripts/fetch-cuda.sh \
         or install a CUDA toolkit, then rebuild)",
    )
}
