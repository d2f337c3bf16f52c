//! GGUF: the model file format of ggml/llama.cpp, read and written.
//!
//! Layout (little-endian): magic `GGUF`, u32 version (2 or 3), u64 tensor count, u64
//! metadata count, the metadata key/value pairs, the tensor infos (name, dimensions, type,
//! data offset), padding to the alignment, then the data section. Strings are a u64 byte
//! length and UTF-8 bytes. Version 3 differs from 2 only in allowing big-endian files,
//! which Strata does not read; version 1 (u32 counts) is refused.
//!
//! [`GgufFile`] validates the whole header before anything can use it (see
//! [`GgufError`] for every check); [`GgufWriter`] writes files the reader accepts;
//! [`quantize_file`] converts a model's weight matrices to another format.

mod cursor;
mod error;
mod file;
mod metadata;
mod parse;
mod quantize;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use file::GgufFile;
pub use metadata::Metadata;
pub use parse::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
pub use quantize::{
    is_quantizable, quantize_file, quantize_model, QuantizeOptions, QuantizeReport,
    TensorConversion,
};
pub use strata_kernels_cpu::GgmlType;
pub use tensor::{tensor_size, TensorInfo, MAX_DIMS, MAX_NAME_LEN};
pub use value::{Value, ValueType};
pub use writer::GgufWriter;
