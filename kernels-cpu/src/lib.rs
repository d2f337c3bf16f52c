//! Strata's CPU side: every quant format, defined once (block layouts, scalar reference
//! dequantize/quantize), and the SIMD kernels that compute with them.
//!
//! This crate knows nothing of models or files: it takes bytes and shapes. Each format's
//! kernels are listed in one place, its row in [`registry`], which says how to walk a
//! format from its definition to its kernels, tests and benches.

pub mod act;
pub mod dot;
pub mod formats;
pub mod isa;
pub mod matmul;
pub mod matvec;
pub mod ops;
pub mod packed;
#[cfg(target_arch = "x86_64")]
mod prefetch;
pub mod registry;
mod shape;

pub use act::{quantize_acts, QuantizedActs};
pub use formats::{dequantize, quantize, FormatError, GgmlType};
pub use isa::Isa;
pub use matmul::{matmul, matmul_quantized};
pub use matvec::{matvec, matvec_quantized};
pub use packed::{matmul_packed, matvec_packed, pack_in_place, Packed, PackedMatrix};
