//! The quant formats: one table row per type, one module per block layout.
//!
//! Every other crate takes its facts about a format (type id, block size, bytes per block,
//! which activation format its dot product pairs with) from [`GgmlType`], and its numbers
//! from the scalar reference code in the per-format modules. The golden tests hold that
//! reference code to `gguf.quants` bit for bit.

pub mod blocks;
mod table;

pub use table::GgmlType;

use thiserror::Error;

/// A request that does not fit the format: wrong lengths, misaligned bytes, or a type that
/// cannot do what was asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{ty}: {n} elements is not a multiple of the block size {block}")]
    NotWholeBlocks { ty: GgmlType, n: usize, block: usize },
    #[error("{ty}: expected {expected} bytes for {n} elements, got {got}")]
    ByteLength { ty: GgmlType, n: usize, expected: usize, got: usize },
    #[error("{ty}: {what}")]
    Unsupported { ty: GgmlType, what: &'static str },
}
