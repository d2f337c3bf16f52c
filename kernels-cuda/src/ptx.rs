//! The PTX that `build.rs` compiled from `kernels/*.cu` and embedded in the crate.

/// One compiled kernel file.
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// The `.cu` file's stem, e.g. `"matvec"`; `"matvec_sm90"` is matvec.cu compiled for
    /// sm_90 and later (programmatic dependent launch).
    pub name: &'static str,
    /// The virtual architecture of its PTX, e.g. `"compute_80"`: it runs on devices of that
    /// compute capability and later.
    pub arch: &'static str,
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

impl PtxModule {
    /// The least compute capability (major × 10 + minor) that runs this module, from
    /// `arch` ("compute_90a" → 90).
    pub fn min_compute_capability(&self) -> Option<u32> {
        let digits: String = self
            .arch
            .strip_prefix("compute_")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}
