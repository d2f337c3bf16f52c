//! Parsing and validating the header: magic, version, metadata, tensor infos.
//!
//! Every count and length is checked against the bytes left before anything is allocated
//! for it, and every tensor is checked (shape, type, alignment, extent, overlap) before the
//! caller can ask for its data.

use std::collections::HashMap;

use strata_kernels_cpu::GgmlType;

use super::cursor::Cursor;
use super::tensor::{tensor_size, MAX_DIMS, MAX_NAME_LEN};
use super::{GgufError, Metadata, TensorInfo, Value, ValueType};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Deepest nesting of arrays accepted (an array of arrays is 2). The limit keeps a hostile
/// file from exhausting the stack; real files nest at most 2 deep.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// Fewest bytes a key/value pair takes: key length (8), value type (4), a 1-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;

/// Everything the header says, validated.
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub by_name: HashMap<String, usize>,
    /// Bytes of header: magic through the last tensor info, before the padding.
    pub header_len: u64,
    /// Absolute offset of the data section (may lie past the end of a header-only file).
    pub data_offset: u64,
}

pub(crate) fn parse_header(buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor::new(buf);
    let magic = c.take(4, || "magic".into())?;
    if magic != GGUF_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = c.u32(|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors = c.u64(|| "tensor count".into())?;
    let n_kv = c.u64(|| "metadata count".into())?;

    let metadata = read_metadata(&mut c, n_kv)?;
    let alignment = alignment_of(&metadata)?;
    let (tensors, by_name) = read_tensor_infos(&mut c, n_tensors, alignment)?;
    check_overlaps(&tensors)?;

    // The position is at most the buffer length (< 2^63) and the alignment at most 2^31,
    // so rounding up cannot overflow.
    let header_len = c.pos();
    let data_offset = header_len.next_multiple_of(alignment);
    Ok(Header {
        version,
        alignment,
        metadata,
        tensors,
        by_name,
        header_len,
        data_offset,
    })
}

fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata, GgufError> {
    c.check_count(n_kv, MIN_KV_SIZE, || "metadata count".into())?;
    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key_offset = c.pos();
        let key = c.string(|| format!("key #{i}"))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_offset,
            });
        }
        let what = || format!("value of key '{key}'");
        let ty = read_value_type(c, &what)?;
        let value = read_value(c, ty, &what, 1)?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

fn read_value_type(c: &mut Cursor, what: &dyn Fn() -> String) -> Result<ValueType, GgufError> {
    let offset = c.pos();
    let type_id = c.u32(|| format!("type of {}", what()))?;
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        what: what(),
        offset,
        type_id,
    })
}

/// One value of type `ty`; `depth` counts the arrays it is in, plus one.
fn read_value(
    c: &mut Cursor,
    ty: ValueType,
    what: &dyn Fn() -> String,
    depth: usize,
) -> Result<Value, GgufError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8(what)?),
        ValueType::I8 => Value::I8(c.u8(what)? as i8),
        ValueType::U16 => Value::U16(c.u16(what)?),
        ValueType::I16 => Value::I16(c.u16(what)? as i16),
        ValueType::U32 => Value::U32(c.u32(what)?),
        ValueType::I32 => Value::I32(c.u32(what)? as i32),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32(what)?)),
        ValueType::U64 => Value::U64(c.u64(what)?),
        ValueType::I64 => Value::I64(c.u64(what)? as i64),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64(what)?)),
        ValueType::Bool => {
            let offset = c.pos();
            match c.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        what: what(),
                        offset,
                        byte,
                    })
                }
            }
        }
        ValueType::String => Value::String(c.string(what)?),
        ValueType::Array => {
            if depth > MAX_ARRAY_DEPTH {
                return Err(GgufError::ArrayTooDeep {
                    what: what(),
                    offset: c.pos(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            let elem = read_value_type(c, &|| format!("elements of {}", what()))?;
            let count = c.u64(|| format!("length of {}", what()))?;
            c.check_count(count, elem.min_size(), || format!("length of {}", what()))?;
            // The check bounds `count` by the bytes left; start smaller anyway, since an
            // in-memory Value is larger than its smallest encoding.
            let mut items = Vec::with_capacity(count.min(1 << 16) as usize);
            for j in 0..count {
                let item_what = || format!("item {j} of {}", what());
                items.push(read_value(c, elem, &item_what, depth + 1)?);
            }
            Value::Array(elem, items)
        }
    })
}

/// `general.alignment` must be a u32 and a nonzero power of two, as llama.cpp requires
/// (it reads the key with `gguf_get_val_u32`, which refuses other types).
fn alignment_of(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(Value::U32(a)) => Err(GgufError::BadAlignment {
            problem: format!("{a} is not a nonzero power of two"),
        }),
        Some(other) => Err(GgufError::BadAlignment {
            problem: format!("has type {}, must be u32", other.value_type()),
        }),
    }
}

fn read_tensor_infos(
    c: &mut Cursor,
    n_tensors: u64,
    alignment: u64,
) -> Result<(Vec<TensorInfo>, HashMap<String, usize>), GgufError> {
    c.check_count(n_tensors, MIN_TENSOR_INFO_SIZE, || "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut by_name = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info_offset = c.pos();
        let name = c.string(|| format!("name of tensor #{i}"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                index: i,
                offset: info_offset,
                len: name.len() as u64,
                max: MAX_NAME_LEN,
            });
        }
        if by_name.contains_key(&name) {
            return Err(GgufError::DuplicateTensor {
                name,
                offset: info_offset,
            });
        }
        let n_dims = c.u32(|| format!("dimension count of tensor '{name}'"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                offset: info_offset,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_id = c.u32(|| format!("type of tensor '{name}'"))?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownTensorType {
                name,
                offset: info_offset,
                type_id,
            });
        };
        let n_bytes = tensor_size(&name, info_offset, ty, &dims)?;
        let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;
        if offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name,
                data_offset: offset,
                alignment,
            });
        }
        // Keep ends below 2^63 so that adding the data section's offset (also below 2^63)
        // cannot overflow later.
        if offset
            .checked_add(n_bytes)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(GgufError::TensorExtentOverflow {
                name,
                data_offset: offset,
                n_bytes,
            });
        }
        by_name.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo {
            name,
            ty,
            dims,
            offset,
            n_bytes,
        });
    }
    Ok((tensors, by_name))
}

/// No two tensors may share data bytes. Empty tensors occupy nothing.
fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| (t.offset, t.end()));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.offset < a.end() {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                first_start: a.offset,
                first_end: a.end(),
                second: b.name.clone(),
                second_start: b.offset,
                second_end: b.end(),
            });
        }
    }
    Ok(())
}
