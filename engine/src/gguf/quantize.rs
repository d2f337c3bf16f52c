//! Converting a model's weight matrices to another format (our quantizer), the way
//! llama.cpp's `llama-quantize` chooses what to convert:
//!
//! - converted: tensors whose name ends in `weight` with at least 2 dimensions of which
//!   one past the first is > 1 (matrices, and 3-D expert stacks), except MoE router
//!   weights (`ffn_gate_inp`), which llama.cpp keeps;
//! - kept as they are: everything else (1-D norms and biases stay F32);
//! - `token_embd.weight` and `output.weight` follow the same rule unless
//!   [`QuantizeOptions`] names a type for them;
//! - a matrix whose row length is not a whole number of the type's blocks falls back as
//!   llama.cpp falls back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0
//!   (llama.cpp uses IQ4_NL, which Strata does not have), then F16 if the row is still not
//!   whole blocks. SmolLM2's rows of 576 are not whole 256-blocks: its Q4_K variant has
//!   Q4_K only where the row length is 1536 (`ffn_down`).
//!
//! A tensor already in the target type is copied bit for bit; others are dequantized to
//! f32 and quantized with `strata_kernels_cpu`'s reference code, whole rows at a time.

use std::path::Path;

use rayon::prelude::*;
use strata_kernels_cpu::{dequantize, quantize, GgmlType};

use super::{GgufError, GgufFile, GgufWriter, TensorInfo, Value};

/// What [`quantize_file`] converts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// The type of the weight matrices.
    pub ty: GgmlType,
    /// The type of `token_embd.weight`, if not `ty`.
    pub token_embedding: Option<GgmlType>,
    /// The type of `output.weight`, if not `ty`.
    pub output: Option<GgmlType>,
    /// Fall back (see the module docs) when rows are not whole blocks; if false, such a
    /// matrix is an error.
    pub fallback: bool,
}

impl QuantizeOptions {
    pub fn new(ty: GgmlType) -> Self {
        QuantizeOptions {
            ty,
            token_embedding: None,
            output: None,
            fallback: true,
        }
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConversion {
    pub name: String,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The type asked for, when a fallback replaced it.
    pub fallback_from: Option<GgmlType>,
}

/// Every tensor's conversion, in file order, and the byte totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeReport {
    pub tensors: Vec<TensorConversion>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Reads `input`, converts its weight matrices as the module docs say, and writes
/// `output` with the same metadata (`general.file_type` updated).
pub fn quantize_file(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport, GgufError> {
    let file = GgufFile::open(input)?;
    let (writer, report) = quantize_model(&file, opts)?;
    writer.write(output)?;
    Ok(report)
}

/// [`quantize_file`] in memory: the converted model as a writer, ready to write.
pub fn quantize_model(
    file: &GgufFile,
    opts: &QuantizeOptions,
) -> Result<(GgufWriter, QuantizeReport), GgufError> {
    check_target(opts.ty)?;
    opts.token_embedding.map(check_target).transpose()?;
    opts.output.map(check_target).transpose()?;
    file.require_all_data()?;

    let mut writer = GgufWriter::new();
    writer.set_version(file.version())?;
    for (key, value) in file.metadata().iter() {
        let value = match key {
            "general.file_type" => continue,
            _ => value.clone(),
        };
        writer.add_kv(key, value)?;
    }
    writer.add_kv("general.file_type", Value::U32(opts.ty.file_type()))?;
    if !writer
        .metadata()
        .contains_key("general.quantization_version")
    {
        // The version of ggml's quantized layouts (2 since 2023); llama.cpp writes it.
        writer.add_kv("general.quantization_version", Value::U32(2))?;
    }

    let mut report = QuantizeReport {
        tensors: Vec::new(),
        bytes_in: 0,
        bytes_out: 0,
    };
    for t in file.tensors() {
        let (to, fallback_from) = target_type(t, opts)?;
        let data = file.tensor_data(t)?;
        let out = if to == t.ty {
            data.to_vec()
        } else {
            convert(t, data, to)?
        };
        report.bytes_in += t.n_bytes;
        report.bytes_out += out.len() as u64;
        writer.add_tensor(t.name.clone(), to, &t.dims, out)?;
        report.tensors.push(TensorConversion {
            name: t.name.clone(),
            from: t.ty,
            to,
            fallback_from,
        });
    }
    Ok((writer, report))
}

fn check_target(ty: GgmlType) -> Result<(), GgufError> {
    if ty.is_weight() {
        return Ok(());
    }
    Err(GgufError::InvalidValue {
        key: "quantize type".into(),
        problem: format!("{ty} is an activation format, not a weight format"),
    })
}

/// Whether llama.cpp's quantizer converts this tensor (see the module docs).
pub fn is_quantizable(t: &TensorInfo) -> bool {
    t.name.ends_with("weight") && t.n_rows() > 1 && !t.name.contains("ffn_gate_inp")
}

/// The type `t` gets, and the type asked for if a fallback replaced it.
fn target_type(
    t: &TensorInfo,
    opts: &QuantizeOptions,
) -> Result<(GgmlType, Option<GgmlType>), GgufError> {
    if !is_quantizable(t) {
        return Ok((t.ty, None));
    }
    let wanted = match t.name.as_str() {
        "token_embd.weight" => opts.token_embedding.unwrap_or(opts.ty),
        "output.weight" => opts.output.unwrap_or(opts.ty),
        _ => opts.ty,
    };
    let fits = |ty: GgmlType| t.row_len().is_multiple_of(ty.block_size() as u64);
    if fits(wanted) {
        return Ok((wanted, None));
    }
    if !opts.fallback {
        return Err(GgufError::InvalidTensor {
            name: t.name.clone(),
            problem: format!(
                "row length {} is not a multiple of {wanted}'s block size {} (fallback disabled)",
                t.row_len(),
                wanted.block_size()
            ),
        });
    }
    let fallback = wanted.k_fallback().unwrap_or(GgmlType::F16);
    Ok((
        if fits(fallback) {
            fallback
        } else {
            GgmlType::F16
        },
        Some(wanted),
    ))
}

/// Rows per unit of parallel work: about 1 Mi elements, whole rows.
const CHUNK_ELEMENTS: u64 = 1 << 20;

/// Dequantizes `data` (tensor `t`) and quantizes it to `to`, whole rows at a time.
fn convert(t: &TensorInfo, data: &[u8], to: GgmlType) -> Result<Vec<u8>, GgufError> {
    let row = t.row_len();
    let n_bytes = to
        .bytes_for(t.n_elements())
        .ok_or_else(|| GgufError::InvalidTensor {
            name: t.name.clone(),
            problem: format!("{} elements are not whole blocks of {to}", t.n_elements()),
        })?;
    let mut out = vec![0u8; n_bytes as usize];
    if row == 0 || t.n_elements() == 0 {
        return Ok(out);
    }
    let rows_per_chunk = (CHUNK_ELEMENTS / row).max(1);
    // Rows are whole blocks in both types (checked by the reader and by target_type), so
    // each chunk of rows is a whole number of blocks on both sides.
    let in_chunk = (t.ty.bytes_for(row).expect("row is whole blocks") * rows_per_chunk) as usize;
    let out_chunk = (to.bytes_for(row).expect("row is whole blocks") * rows_per_chunk) as usize;
    let format_err = |source| GgufError::Format {
        name: t.name.clone(),
        source,
    };
    data.par_chunks(in_chunk)
        .zip(out.par_chunks_mut(out_chunk))
        .try_for_each(|(src, dst)| {
            let n = src.len() / t.ty.type_size() * t.ty.block_size();
            let mut x = vec![0f32; n];
            dequantize(t.ty, src, &mut x).map_err(format_err)?;
            quantize(to, &x, dst).map_err(format_err)
        })?;
    Ok(out)
}
