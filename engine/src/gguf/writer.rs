//! Writing GGUF files: metadata and tensors, laid out as llama.cpp lays them out (tensor
//! data in the order added, each starting at a multiple of the alignment and padded to it).
//!
//! Everything is checked when added, with the reader's rules, so that what the writer
//! writes the reader accepts.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use strata_kernels_cpu::GgmlType;

use super::parse::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
use super::tensor::{tensor_size, MAX_NAME_LEN};
use super::{GgufError, Metadata, Value};

/// A GGUF file being assembled in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Writes version 2 instead of 3 (the layouts are the same for little-endian files).
    pub fn set_version(&mut self, version: u32) -> Result<&mut Self, GgufError> {
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        self.version = version;
        Ok(self)
    }

    /// Sets `general.alignment` (a nonzero power of two).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufError> {
        if self.metadata.contains_key(ALIGNMENT_KEY) {
            self.metadata.remove(ALIGNMENT_KEY);
        }
        self.add_kv(ALIGNMENT_KEY, Value::U32(alignment))
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a metadata pair. The key must be new; arrays must hold items of their element
    /// type and nest at most [`MAX_ARRAY_DEPTH`] deep; `general.alignment` must be a u32
    /// nonzero power of two, and sets the alignment of the tensor data.
    pub fn add_kv(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<&mut Self, GgufError> {
        let key = key.into();
        let value = value.into();
        if self.metadata.contains_key(&key) {
            return Err(GgufError::InvalidValue {
                key,
                problem: "key already added".into(),
            });
        }
        if let Err(problem) = check_value(&value, 1) {
            return Err(GgufError::InvalidValue { key, problem });
        }
        if key == ALIGNMENT_KEY {
            self.alignment = match value {
                Value::U32(a) if a.is_power_of_two() => u64::from(a),
                Value::U32(a) => {
                    return Err(GgufError::BadAlignment {
                        problem: format!("{a} is not a nonzero power of two"),
                    })
                }
                ref other => {
                    return Err(GgufError::BadAlignment {
                        problem: format!("has type {}, must be u32", other.value_type()),
                    })
                }
            };
        }
        self.metadata.insert(key, value);
        Ok(self)
    }

    /// Adds every pair of `metadata` in order, with [`GgufWriter::add_kv`]'s checks.
    pub fn add_metadata(&mut self, metadata: &Metadata) -> Result<&mut Self, GgufError> {
        for (k, v) in metadata.iter() {
            self.add_kv(k, v.clone())?;
        }
        Ok(self)
    }

    /// Adds a tensor: `dims` in ggml order (row length first), `data` exactly the bytes
    /// that type and shape call for.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let invalid = |name: String, problem: String| GgufError::InvalidTensor { name, problem };
        if name.len() > MAX_NAME_LEN {
            let problem = format!(
                "name is {} bytes, at most {MAX_NAME_LEN} allowed",
                name.len()
            );
            return Err(invalid(name, problem));
        }
        if self.names.contains(&name) {
            return Err(invalid(
                name,
                "a tensor of this name was already added".into(),
            ));
        }
        let n_bytes = tensor_size(&name, 0, ty, dims)?;
        if data.len() as u64 != n_bytes {
            let problem = format!(
                "{ty} {dims:?} takes {n_bytes} bytes, {} were given",
                data.len()
            );
            return Err(invalid(name, problem));
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            ty,
            dims: dims.to_vec(),
            data,
        });
        Ok(self)
    }

    /// Writes the file to `w`; returns the bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> Result<u64, GgufError> {
        let mut out = Counter {
            inner: w,
            written: 0,
        };
        self.write_all(&mut out)
            .map_err(|source| GgufError::Io { source })?;
        Ok(out.written)
    }

    /// Writes the file to `path` (through `<path>.part`, renamed when complete, so a
    /// failed write leaves no partial file under the final name).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        let path = path.as_ref();
        let in_file = |e| GgufError::File {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let result = (|| {
            let mut w = BufWriter::new(File::create(&part)?);
            let mut out = Counter {
                inner: &mut w,
                written: 0,
            };
            self.write_all(&mut out)?;
            let written = out.written;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&part, path)?;
            Ok(written)
        })();
        result.map_err(|source| {
            let _ = std::fs::remove_file(&part);
            in_file(GgufError::Io { source })
        })
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_all(&mut v)
            .expect("writing to a Vec cannot fail");
        v
    }

    fn write_all(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&self.version.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            write_string(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            write_value(&mut header, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        w.write_all(&header)?;
        if self.tensors.is_empty() {
            // No data section, so nothing to align (and no padding of up to 2^31 bytes).
            return Ok(());
        }
        let mut pos = header.len() as u64;
        pos += write_padding(w, pos, self.alignment)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            pos += t.data.len() as u64;
            pos += write_padding(w, pos, self.alignment)?;
        }
        Ok(())
    }
}

/// Zeros up to the next multiple of `alignment`; returns how many were written.
fn write_padding(w: &mut impl Write, pos: u64, alignment: u64) -> std::io::Result<u64> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let n = pos.next_multiple_of(alignment) - pos;
    let mut left = n;
    while left > 0 {
        let chunk = left.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..chunk])?;
        left -= chunk as u64;
    }
    Ok(n)
}

/// Counts the bytes that pass through.
struct Counter<'a, W: Write> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Arrays must hold items of their element type and nest at most [`MAX_ARRAY_DEPTH`] deep.
fn check_value(value: &Value, depth: usize) -> Result<(), String> {
    let Value::Array(elem, items) = value else {
        return Ok(());
    };
    if depth > MAX_ARRAY_DEPTH {
        return Err(format!(
            "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if item.value_type() != *elem {
            return Err(format!(
                "item {i} of an array of {elem} has type {}",
                item.value_type()
            ));
        }
        check_value(item, depth + 1)?;
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => write_string(out, s),
        Value::Array(elem, items) => {
            out.extend_from_slice(&elem.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, ValueType};

    #[test]
    fn tensors_start_aligned_and_read_back() {
        let mut w = GgufWriter::new();
        w.set_alignment(64).unwrap();
        w.add_tensor("a", GgmlType::F32, &[3], vec![1; 12]).unwrap();
        w.add_tensor("b", GgmlType::F16, &[5], vec![2; 10]).unwrap();
        let bytes = w.to_bytes();
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensor("b").unwrap().offset, 64);
        assert_eq!(f.tensor_data_by_name("b").unwrap(), &[2; 10]);
        assert_eq!(f.file_len() % 64, 0);
    }

    #[test]
    fn no_tensors_means_no_padding() {
        let mut w = GgufWriter::new();
        w.set_alignment(1 << 31).unwrap();
        let bytes = w.to_bytes();
        assert!(bytes.len() < 100);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), 1 << 31);
        assert!(f.tensors().is_empty());
    }

    #[test]
    fn refuses_what_the_reader_would_refuse() {
        let mut w = GgufWriter::new();
        assert!(matches!(
            w.add_kv(ALIGNMENT_KEY, 48u32),
            Err(GgufError::BadAlignment { .. })
        ));
        assert!(matches!(
            w.add_kv(ALIGNMENT_KEY, 64u64),
            Err(GgufError::BadAlignment { .. })
        ));
        let mixed = Value::Array(ValueType::U8, vec![Value::U8(1), Value::I8(1)]);
        assert!(matches!(
            w.add_kv("k", mixed),
            Err(GgufError::InvalidValue { .. })
        ));
        w.add_kv("k", 1u8).unwrap();
        assert!(matches!(
            w.add_kv("k", 2u8),
            Err(GgufError::InvalidValue { .. })
        ));
        let e = w
            .add_tensor("t", GgmlType::Q4_0, &[32], vec![0; 17])
            .unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { .. }), "{e}");
        let e = w
            .add_tensor("t", GgmlType::Q4_0, &[16], vec![0; 9])
            .unwrap_err();
        assert!(matches!(e, GgufError::RowNotWholeBlocks { .. }), "{e}");
        w.add_tensor("t", GgmlType::Q4_0, &[32], vec![0; 18])
            .unwrap();
        let e = w
            .add_tensor("t", GgmlType::Q4_0, &[32], vec![0; 18])
            .unwrap_err();
        assert!(matches!(e, GgufError::InvalidTensor { .. }), "{e}");
    }
}
