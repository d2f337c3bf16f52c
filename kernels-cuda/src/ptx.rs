//! The PTX that `build.rs` compiled from `kernels/*.cu` and embedded in the crate, deflated.
//! dev/cuda's build script embeds its trial modules the same way, as `PtxModule`s that
//! [`Gpu::kernel`](crate::Gpu::kernel) loads.

use crate::error::CudaError;

/// One compiled kernel file.
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// The `.cu` file's stem, e.g. `"matvec"` (dev/cuda's trial modules have their own
    /// names).
    pub name: &'static str,
    /// The virtual architecture of its PTX, e.g. `"compute_80"`: it runs on devices of that
    /// compute capability and later.
    pub arch: &'static str,
    /// That compute capability as major × 10 + minor ("compute_90a" → 90), if `arch` reads
    /// as one.
    pub min_compute_capability: Option<u32>,
    /// [`PTX_MARKER`], then the PTX text deflated ([`PtxModule::ptx`] gives the text).
    pub deflated: &'static [u8],
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
    /// The PTX text (inflated from the embedded bytes; NUL-free).
    pub fn ptx(&self) -> Result<String, CudaError> {
        let corrupt = |why: String| {
            CudaError::Unavailable(format!(
                "embedded PTX of module {} is corrupt: {why}",
                self.name
            ))
        };
        let z = self
            .deflated
            .strip_prefix(PTX_MARKER)
            .ok_or_else(|| corrupt("no marker".to_string()))?;
        let bytes =
            miniz_oxide::inflate::decompress_to_vec(z).map_err(|e| corrupt(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))
    }
}
