//! Strata's CPU side: every quant format, defined once (block layouts, scalar reference
//! dequantize/quantize), and the SIMD kernels that compute with them.
//!
//! This crate knows nothing of models or files: it takes bytes and shapes.

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
mod shape;

pub use act::{quantize_acts, QuantizedActs};
pub use formats::{dequantize, quantize, FormatError, GgmlType};
pub use isa::Isa;
pub use matmul::{matmul, matmul_quantized};
pub use matvec::{matvec, matvec_quantized};
pub use packed::{matmul_packed, matvec_packed, pack_in_place, Packed, PackedMatrix};
