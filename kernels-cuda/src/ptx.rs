//! The PTX that `build.rs` compiled from `kernels/*.cu` and embedded in the crate, deflated.

use crate::error::CudaError;

/// One compiled kernel file.
#[derive(Debug, Clone, Copy)]
pub struct PtxModule {
    /// The `.cu` file's stem, e.g. `"matvec"`; `"matvec_sm90"` is matvec.cu compiled for
    /// sm_90 and later (programmatic dependent launch).
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

/// One shape of the quantized matvec kernels (kernels/matvec_lane.cuh's macros), compiled
/// as its own module by build.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatvecShape {
    /// "default", or the variant's name.
    pub name: &'static str,
    /// The module that holds it.
    pub module: &'static str,
    /// What it changes, and why it may be faster.
    pub why: &'static str,
    /// The `-D` macros (NAME=VALUE) build.rs compiled its module with.
    pub defines: &'static [&'static str],
    /// Warps per CTA.
    pub warps: u32,
    /// Rows per warp, for the 32-weight legacy blocks and for the K-quants.
    pub rows_per_warp_legacy: u32,
    pub rows_per_warp_k: u32,
    /// Iterations of a lane's loop in flight, likewise.
    pub unroll_legacy: u32,
    pub unroll_k: u32,
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
