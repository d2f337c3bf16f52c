//! Strata's CPU side: every quant format, defined once (block layouts, scalar reference
//! dequantize/quantize), and the SIMD kernels that compute with them.
//!
//! This crate knows nothing of models or files: it takes bytes and shapes.

pub mod formats;

pub use formats::{dequantize, quantize, FormatError, GgmlType};
