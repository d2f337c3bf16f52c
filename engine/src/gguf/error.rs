//! Everything that can be wrong with a GGUF file, each naming the problem and where it is.

use std::path::PathBuf;

use strata_kernels_cpu::{FormatError, GgmlType};
use thiserror::Error;

/// A GGUF file that cannot be read or written, or a request it cannot answer.
///
/// Offsets are byte offsets from the start of the file. `what` fields say which part of the
/// file was being read ("key #3", "value of key 'general.name'", "name of tensor #12").
#[derive(Debug, Error)]
pub enum GgufError {
    /// Any other error, in the file at `path` (what [`super::GgufFile::open`] and
    /// [`super::GgufWriter::write`] return).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Box<GgufError>,
    },

    #[error("{source}")]
    Io { source: std::io::Error },

    /// A directory, device, pipe or socket where a GGUF file was expected.
    #[error("{what}, not a GGUF file")]
    NotAFile { what: &'static str },

    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    #[error("{}", version_message(*version))]
    UnsupportedVersion { version: u32 },

    #[error(
        "truncated file: {what} at offset {offset} needs {need} bytes, only {available} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        available: u64,
    },

    #[error(
        "{what} at offset {offset}: count {count} needs at least {min_bytes} bytes, \
         only {available} remain in the file"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        min_bytes: u128,
        available: u64,
    },

    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("{what} at offset {offset}: bool byte is {byte}, expected 0 or 1")]
    InvalidBool { what: String, offset: u64, byte: u8 },

    #[error("{what} at offset {offset}: unknown GGUF value type {type_id}")]
    UnknownValueType {
        what: String,
        offset: u64,
        type_id: u32,
    },

    #[error("{what} at offset {offset}: arrays nested deeper than {max} levels")]
    ArrayTooDeep {
        what: String,
        offset: u64,
        max: usize,
    },

    #[error("duplicate metadata key '{key}' at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },

    #[error("general.alignment: {problem}")]
    BadAlignment { problem: String },

    #[error("tensor #{index} at offset {offset}: name is {len} bytes long, at most {max} allowed")]
    TensorNameTooLong {
        index: u64,
        offset: u64,
        len: u64,
        max: usize,
    },

    #[error("duplicate tensor name '{name}' at offset {offset}")]
    DuplicateTensor { name: String, offset: u64 },

    #[error("tensor '{name}' at offset {offset}: {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        name: String,
        offset: u64,
        n_dims: u32,
        max: usize,
    },

    #[error(
        "tensor '{name}' at offset {offset}: shape {dims:?} overflows (element count or byte \
         size past 2^63)"
    )]
    DimensionOverflow {
        name: String,
        offset: u64,
        dims: Vec<u64>,
    },

    #[error("tensor '{name}' at offset {offset}: unknown or unsupported ggml type id {type_id}")]
    UnknownTensorType {
        name: String,
        offset: u64,
        type_id: u32,
    },

    #[error(
        "tensor '{name}' of type {ty}: row length {row} is not a multiple of the block size \
         {block}"
    )]
    RowNotWholeBlocks {
        name: String,
        ty: GgmlType,
        row: u64,
        block: usize,
    },

    #[error(
        "tensor '{name}': data offset {data_offset} is not a multiple of the alignment \
         {alignment}"
    )]
    MisalignedTensor {
        name: String,
        data_offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor '{name}': data offset {data_offset} + {n_bytes} bytes lies past any possible \
         file end"
    )]
    TensorExtentOverflow {
        name: String,
        data_offset: u64,
        n_bytes: u64,
    },

    #[error(
        "tensors '{first}' (data bytes {first_start}..{first_end}) and '{second}' \
         (data bytes {second_start}..{second_end}) overlap"
    )]
    TensorOverlap {
        first: String,
        first_start: u64,
        first_end: u64,
        second: String,
        second_start: u64,
        second_end: u64,
    },

    #[error(
        "tensor '{name}': its data (file bytes {start}..{end}) is missing, the file ends at \
         {file_len} (header-only or truncated file)"
    )]
    TensorDataMissing {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error("no tensor named '{name}'")]
    NoSuchTensor { name: String },

    #[error("metadata key '{key}': {problem}")]
    InvalidValue { key: String, problem: String },

    #[error("tensor '{name}': {problem}")]
    InvalidTensor { name: String, problem: String },

    #[error("tensor '{name}': {source}")]
    Format { name: String, source: FormatError },
}

impl GgufError {
    /// The problem itself, without the [`GgufError::File`] wrappers around it.
    pub fn root(&self) -> &GgufError {
        match self {
            GgufError::File { source, .. } => source.root(),
            e => e,
        }
    }
}

fn version_message(version: u32) -> String {
    match version {
        1 => "GGUF version 1 is not supported (only 2 and 3): re-convert the model with a \
              current llama.cpp"
            .to_string(),
        // A v2/v3 file written big-endian reads as 0x02000000 / 0x03000000 here.
        v if v != 0 && v & 0xFFFF == 0 => format!(
            "GGUF version {v:#010x} at offset 4: looks like a big-endian file, only \
             little-endian GGUF is supported"
        ),
        v => format!("unsupported GGUF version {v} at offset 4 (only 2 and 3)"),
    }
}
