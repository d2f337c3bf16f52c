//! Strata's GPU side: CUDA C kernels (`kernels/*.cu`) compiled to PTX at build time by
//! NVRTC, embedded in the crate, and launched with cudarc. Same op list as the CPU crate:
//! q8_1 activation quantization, matvec and matmul for every weight format, dequantize and
//! get_rows, RMSNorm, RoPE, softmax, SwiGLU, add, attention over an f16 KV cache, and for
//! mixture-of-experts and MLA models (not yet run on a GPU; the engine's CUDA backend runs
//! qwen3moe and deepseek2 blocks with them) the router, the experts' matvec and grouped
//! matmul with their sort, gather and weighted sum, and absorbed latent attention over an
//! f16 latent cache with the steps before it (the cache rows, the query split, an older
//! file's transposed absorption). RoPE has YaRN.
//! Trial variants of these kernels, and cuBLAS to measure `matmul` against, are dev/cuda's.
//!
//! Nothing here panics for want of a GPU: [`unavailable_reason`] and [`Gpu::new`] say why
//! CUDA cannot be used (no driver, no device, or "built without CUDA kernels").

mod buffer;
mod device;
mod error;
mod graph;
mod ops;
pub mod ptx;
mod timer;

pub use buffer::DeviceBuffer;
/// The element types a [`DeviceBuffer`] can hold (and be zeroed as).
pub use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
pub use device::{device_count, devices, driver_present, unavailable_reason, DeviceInfo, Gpu};
pub use error::CudaError;
pub use graph::GpuGraph;
pub use ops::matvec::{matvec_config, MatvecShape, MATVEC_MAX_COLS};
pub use ops::mla::{MlaDims, MLA_MAX_LATENT, MLA_MAX_NOPE, MLA_MAX_WIDTH};
pub use ops::moe::{ExpertSlots, ExpertStack, MOE_MAX_EXPERTS, MOE_MAX_USED};
pub use ops::{attention::AttentionShape, attention::MAX_HEAD_DIM, rope::RopeParams};
pub use ops::{q8_1_bytes, CacheRows};
pub use timer::{GpuEvent, GpuTimer};
