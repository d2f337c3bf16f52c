//! An opened GGUF file: the validated header, and the data section mapped in memory.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::parse::{parse_header, Header};
use super::{GgufError, Metadata, TensorInfo};

/// The file's bytes: mapped from disk, or owned (parsed from memory).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A GGUF file (version 2 or 3, little-endian) whose header has been fully validated.
///
/// The file may be header-only or have a short data section: it still opens (a plan needs
/// only the header), [`GgufFile::missing_data`] says which tensors lack data, and
/// [`GgufFile::tensor_data`] on one of them is a [`GgufError::TensorDataMissing`].
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    header: Header,
}

impl GgufFile {
    /// Opens and memory-maps `path`, then validates its header. Errors come wrapped in
    /// [`GgufError::File`] naming the path; [`GgufError::root`] gives the problem itself.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let in_file = |e: GgufError| GgufError::File {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let io = |source| in_file(GgufError::Io { source });
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(in_file(GgufError::NotAFile { what }));
        }
        let len = meta.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this value. As with every mapped
            // file, another process truncating or rewriting the file while it is mapped is
            // outside what Rust can guard against; model files are not modified in place.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        let header = parse_header(&bytes).map_err(in_file)?;
        Ok(GgufFile {
            path: path.to_owned(),
            bytes,
            header,
        })
    }

    /// Parses a GGUF image held in memory (used by tests and the fuzz target). Its
    /// [`GgufFile::path`] is `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = parse_header(&bytes)?;
        Ok(GgufFile {
            path: PathBuf::from("<memory>"),
            bytes: Bytes::Owned(bytes),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of the data section and of every tensor's data, in bytes.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .by_name
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// Length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Bytes of header, magic through the last tensor info (before the padding).
    pub fn header_len(&self) -> u64 {
        self.header.header_len
    }

    /// Absolute offset of the data section: the end of the header rounded up to the
    /// alignment. May lie past the end of a header-only file.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The whole file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Absolute byte range of a tensor's data. Both ends are below 2^64 because the parser
    /// keeps tensor ends and the data offset below 2^63.
    fn extent(&self, t: &TensorInfo) -> Option<(u64, u64)> {
        let start = self.data_offset().checked_add(t.offset)?;
        Some((start, start.checked_add(t.n_bytes)?))
    }

    /// Whether the file holds all of `t`'s data.
    pub fn has_data(&self, t: &TensorInfo) -> bool {
        self.extent(t)
            .is_some_and(|(_, end)| end <= self.file_len())
    }

    /// The tensor's data bytes, or a [`GgufError::TensorDataMissing`] naming it if the file
    /// ends before them. Mapped data starts at a multiple of [`GgufFile::alignment`] from
    /// the page-aligned start of the map; data parsed from memory has no such guarantee.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&[u8], GgufError> {
        match self.extent(t) {
            Some((start, end)) if end <= self.file_len() => {
                Ok(&self.bytes[start as usize..end as usize])
            }
            extent => {
                let (start, end) = extent.unwrap_or((u64::MAX, u64::MAX));
                Err(GgufError::TensorDataMissing {
                    name: t.name.clone(),
                    start,
                    end,
                    file_len: self.file_len(),
                })
            }
        }
    }

    /// Lets the operating system drop this process's pages of `t`'s data (a device copied
    /// them: keeping both would count the tensor twice in resident memory). Only whole pages
    /// inside the tensor are released; a later read maps them in again from the file, so
    /// nothing the map shows changes. Best effort: errors are ignored.
    pub fn release(&self, t: &TensorInfo) {
        let (Bytes::Mapped(map), Some((start, end))) = (&self.bytes, self.extent(t)) else {
            return;
        };
        let page = 4096u64;
        let (start, end) = (start.next_multiple_of(page), end / page * page);
        if end > start && end <= map.len() as u64 {
            // SAFETY: the map is private and read-only, so dropping its pages loses nothing:
            // they read back as the file's bytes, which references into the map still see.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start as usize,
                    (end - start) as usize,
                )
            };
        }
    }

    /// [`GgufFile::tensor_data`] by name.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8], GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
            name: name.to_owned(),
        })?;
        self.tensor_data(t)
    }

    /// Tensors whose data the file does not hold (all of them for a header-only file).
    pub fn missing_data(&self) -> Vec<&TensorInfo> {
        self.tensors()
            .iter()
            .filter(|t| !self.has_data(t))
            .collect()
    }

    /// Fails, naming the first such tensor in file order, unless every tensor's data is in
    /// the file: what a loader (as opposed to a planner) requires.
    pub fn require_all_data(&self) -> Result<(), GgufError> {
        match self.missing_data().first() {
            None => Ok(()),
            Some(t) => self.tensor_data(t).map(|_| ()),
        }
    }

    /// Total bytes of tensor data the header describes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.n_bytes).sum()
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version())
            .field("alignment", &self.alignment())
            .field("metadata", &self.metadata().len())
            .field("tensors", &self.tensors().len())
            .field("file_len", &self.file_len())
            .finish()
    }
}
