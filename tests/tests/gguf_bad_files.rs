//! Malformed GGUF files: each must be refused with the named error for its problem (never
//! a panic), and header-only or truncated data sections must still open.

use strata_engine::gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

/// GGUF bytes built field by field, so a test can write what the writer refuses to.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw(b"GGUF".to_vec()).u32(version).u64(n_tensors).u64(n_kv)
    }
    fn u8(mut self, v: u8) -> Raw {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A key with a u32 value.
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key).u32(ValueType::U32.id()).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(type_id).u64(offset)
    }
    /// Zero padding to a multiple of 32, then `n` data bytes.
    fn data(mut self, n: usize) -> Raw {
        self.0.resize(self.0.len().next_multiple_of(32), 0);
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
    fn open(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0)
    }
}

fn f32_id() -> u32 {
    GgmlType::F32.id()
}

/// Unwraps the error of a result that must fail, showing the file if it did not.
fn err(r: Result<GgufFile, GgufError>) -> GgufError {
    match r {
        Ok(f) => panic!("expected an error, opened {f:?}"),
        Err(e) => e,
    }
}

/// A small valid file: metadata of several types, three tensors of different formats.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "llama").unwrap();
    w.add_kv("llama.block_count", 2u32).unwrap();
    w.add_kv("tokenizer.ggml.tokens", Value::strings(["a", "bc", ""]))
        .unwrap();
    w.add_kv("x.scores", Value::f32s([0.5, -1.0])).unwrap();
    w.add_tensor("norm.weight", GgmlType::F32, &[8], vec![1; 32])
        .unwrap();
    w.add_tensor("w.q4", GgmlType::Q4_0, &[64, 2], vec![2; 72])
        .unwrap();
    w.add_tensor("w.q8", GgmlType::Q8_0, &[32], vec![3; 34])
        .unwrap();
    w.to_bytes()
}

#[test]
fn truncated_at_every_byte_is_an_error_or_reports_missing_data() {
    let full = small_file();
    let whole = GgufFile::from_bytes(full.clone()).unwrap();
    let header_len = whole.header_len() as usize;
    for cut in 0..full.len() {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        if cut < header_len {
            let e = err(r);
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. } | GgufError::CountTooLarge { .. }
                ),
                "cut at {cut}: {e}"
            );
        } else {
            // The header is whole: the file opens and names exactly the tensors cut off.
            let f = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            for t in f.tensors() {
                let end = f.data_offset() + t.offset + t.n_bytes;
                let missing = end > cut as u64;
                assert_eq!(f.missing_data().iter().any(|m| m.name == t.name), missing);
                match f.tensor_data(t) {
                    Ok(d) => assert!(!missing && d == whole.tensor_data(t).unwrap()),
                    Err(GgufError::TensorDataMissing { name, .. }) => {
                        assert!(missing);
                        assert_eq!(name, t.name);
                    }
                    Err(e) => panic!("cut at {cut}: {e}"),
                }
            }
        }
    }
}

#[test]
fn truncated_at_section_boundaries_names_the_section() {
    let full = small_file();
    let at = |cut: usize| err(GgufFile::from_bytes(full[..cut].to_vec()));
    let what_of = |e: GgufError| match e {
        GgufError::Truncated { what, .. } | GgufError::CountTooLarge { what, .. } => what,
        e => panic!("{e}"),
    };
    assert!(matches!(at(0), GgufError::Truncated { ref what, offset: 0, .. } if what == "magic"));
    assert_eq!(what_of(at(4)), "version");
    assert_eq!(what_of(at(8)), "tensor count");
    assert_eq!(what_of(at(16)), "metadata count");
    // Four key/value pairs need at least 4 × 13 bytes: with only the counts, the count is
    // refused before any pair is read.
    assert_eq!(what_of(at(24)), "metadata count");

    // The end of the metadata: the tensor count no longer fits in what is left.
    let no_tensors = {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", "llama").unwrap();
        w.to_bytes()
    };
    let kv_end = 24 + 8 + "general.architecture".len() + 4 + 8 + "llama".len();
    let mut patched = no_tensors[..kv_end].to_vec();
    patched[8..16].copy_from_slice(&1u64.to_le_bytes());
    let e = err(GgufFile::from_bytes(patched));
    assert_eq!(what_of(e), "tensor count");

    // Inside the last tensor info: named by the field and the tensor.
    let whole = GgufFile::from_bytes(full.clone()).unwrap();
    let e = at(whole.header_len() as usize - 1);
    assert_eq!(what_of(e), "data offset of tensor 'w.q8'");
}

#[test]
fn empty_and_header_only_files() {
    assert!(matches!(
        Raw::default().open(),
        Err(GgufError::Truncated { .. })
    ));
    // No tensors, no metadata: a valid (if useless) file.
    let f = Raw::header(3, 0, 0).open().unwrap();
    assert!(f.tensors().is_empty() && f.metadata().is_empty());
    // Header only: no padding, no data.
    let f = Raw::header(3, 1, 0)
        .tensor("w", &[4], f32_id(), 0)
        .open()
        .unwrap();
    assert_eq!(f.missing_data().len(), 1);
    let e = f.require_all_data().unwrap_err();
    assert!(
        matches!(e, GgufError::TensorDataMissing { ref name, .. } if name == "w"),
        "{e}"
    );
}

#[test]
fn bad_magic() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGML");
    let e = err(GgufFile::from_bytes(bytes));
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
}

#[test]
fn unknown_versions() {
    for version in [0, 1, 4, 0x0300_0000, u32::MAX] {
        let e = err(Raw::header(version, 0, 0).open());
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version: v } if v == version),
            "{e}"
        );
    }
    let v1 = err(Raw::header(1, 0, 0).open()).to_string();
    assert!(v1.contains("version 1 is not supported"), "{v1}");
    let big_endian = err(Raw::header(0x0300_0000, 0, 0).open()).to_string();
    assert!(big_endian.contains("big-endian"), "{big_endian}");
    // Versions 2 and 3 share the layout.
    assert_eq!(Raw::header(2, 0, 0).open().unwrap().version(), 2);
}

#[test]
fn huge_counts_and_lengths_are_refused_before_allocating() {
    let e = err(Raw::header(3, 0, u64::MAX).open());
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, u64::MAX, 0).open());
    assert!(
        matches!(
            e,
            GgufError::CountTooLarge {
                count: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    // A key whose length is larger than the file.
    let e = err(Raw::header(3, 0, 1).u64(u64::MAX).bytes(&[0; 16]).open());
    assert!(
        matches!(e, GgufError::Truncated { need: u64::MAX, ref what, .. } if what == "key #0"),
        "{e}"
    );
    // A string value whose length is larger than the file.
    let r = Raw::header(3, 0, 1)
        .str("k")
        .u32(ValueType::String.id())
        .u64(1 << 40)
        .bytes(b"ab");
    let e = err(r.open());
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                need: 1099511627776,
                ..
            }
        ),
        "{e}"
    );
    // An array of 2^61 u64s (2^64 bytes: the byte count itself overflows u64).
    let r = Raw::header(3, 0, 1)
        .str("k")
        .u32(ValueType::Array.id())
        .u32(ValueType::U64.id())
        .u64(1 << 61)
        .bytes(&[0; 64]);
    let e = err(r.open());
    assert!(
        matches!(e, GgufError::CountTooLarge { ref what, count, .. } if count == 1 << 61 && what.contains("'k'")),
        "{e}"
    );
    // An array of strings: each needs at least its 8-byte length.
    let r = Raw::header(3, 0, 1)
        .str("k")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(3)
        .bytes(&[0; 23]);
    assert!(matches!(
        err(r.open()),
        GgufError::CountTooLarge { count: 3, .. }
    ));
    // A tensor name longer than the file.
    let e = err(Raw::header(3, 1, 0).u64(u64::MAX).bytes(&[0; 30]).open());
    assert!(
        matches!(e, GgufError::Truncated { ref what, .. } if what == "name of tensor #0"),
        "{e}"
    );
}

#[test]
fn offsets_past_the_end_are_missing_data_or_overflow() {
    // Offset 2^40 in a small file: the header is fine (a header-only file looks the same),
    // the tensor has no data, and asking for it names it.
    let f = Raw::header(3, 2, 0)
        .tensor("a", &[8], f32_id(), 0)
        .tensor("far", &[8], f32_id(), 1 << 40)
        .data(32)
        .open()
        .unwrap();
    let missing: Vec<_> = f.missing_data().iter().map(|t| t.name.clone()).collect();
    assert_eq!(missing, ["far"]);
    assert!(f.tensor_data_by_name("a").is_ok());
    let e = f.tensor_data_by_name("far").unwrap_err();
    assert!(
        matches!(e, GgufError::TensorDataMissing { ref name, file_len, .. } if name == "far" && file_len == f.file_len()),
        "{e}"
    );
    assert!(matches!(
        f.require_all_data(),
        Err(GgufError::TensorDataMissing { .. })
    ));

    // An extent no file could have.
    let e = err(Raw::header(3, 1, 0)
        .tensor("w", &[8], f32_id(), u64::MAX - 31)
        .open());
    assert!(
        matches!(e, GgufError::TensorExtentOverflow { ref name, .. } if name == "w"),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0)
        .tensor("w", &[8], f32_id(), 1 << 63)
        .open());
    assert!(matches!(e, GgufError::TensorExtentOverflow { .. }), "{e}");
}

#[test]
fn overlapping_tensors() {
    let e = err(Raw::header(3, 3, 0)
        .tensor("a", &[16], f32_id(), 0)
        .tensor("b", &[8], f32_id(), 96)
        .tensor("c", &[8], f32_id(), 32)
        .data(128)
        .open());
    assert!(
        matches!(e, GgufError::TensorOverlap { ref first, ref second, first_end: 64, second_start: 32, .. }
            if first == "a" && second == "c"),
        "{e}"
    );
    // Touching is not overlapping, and empty tensors occupy nothing.
    let f = Raw::header(3, 3, 0)
        .tensor("a", &[8], f32_id(), 0)
        .tensor("b", &[8], f32_id(), 32)
        .tensor("empty", &[0], f32_id(), 32)
        .data(64)
        .open()
        .unwrap();
    assert!(f.missing_data().is_empty());
    assert_eq!(f.tensor_data_by_name("empty").unwrap(), &[] as &[u8]);
}

#[test]
fn unknown_tensor_type() {
    // 4 was Q4_2 (removed from ggml); 39 is past every type ggml has.
    for type_id in [4, 39, u32::MAX] {
        let e = err(Raw::header(3, 1, 0).tensor("w", &[32], type_id, 0).open());
        assert!(
            matches!(e, GgufError::UnknownTensorType { ref name, type_id: t, .. } if name == "w" && t == type_id),
            "{e}"
        );
    }
}

#[test]
fn dimension_overflow_and_shape_rules() {
    for dims in [
        &[1u64 << 32, 1 << 32][..],
        &[u64::MAX],
        &[1 << 62, 2],
        &[2, 2, 1 << 61],
    ] {
        let e = err(Raw::header(3, 1, 0).tensor("w", dims, f32_id(), 0).open());
        assert!(
            matches!(e, GgufError::DimensionOverflow { ref name, .. } if name == "w"),
            "{dims:?}: {e}"
        );
    }
    let e = err(Raw::header(3, 1, 0)
        .tensor("w", &[1; 5], f32_id(), 0)
        .open());
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");
    // n_dims is checked before the dimensions are read, so a huge count cannot read far.
    let e = err(Raw::header(3, 1, 0)
        .str("w")
        .u32(u32::MAX)
        .bytes(&[0; 64])
        .open());
    assert!(
        matches!(
            e,
            GgufError::TooManyDims {
                n_dims: u32::MAX,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0)
        .tensor("w", &[16], GgmlType::Q4_0.id(), 0)
        .open());
    assert!(
        matches!(
            e,
            GgufError::RowNotWholeBlocks {
                row: 16,
                block: 32,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, 1, 0).tensor("w", &[8], f32_id(), 16).open());
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                data_offset: 16,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tensor_names_unique_and_short() {
    let e = err(Raw::header(3, 2, 0)
        .tensor("w", &[8], f32_id(), 0)
        .tensor("w", &[8], f32_id(), 32)
        .open());
    assert!(
        matches!(e, GgufError::DuplicateTensor { ref name, .. } if name == "w"),
        "{e}"
    );
    let long = "x".repeat(64);
    let e = err(Raw::header(3, 1, 0).tensor(&long, &[8], f32_id(), 0).open());
    assert!(
        matches!(
            e,
            GgufError::TensorNameTooLong {
                len: 64,
                max: 63,
                ..
            }
        ),
        "{e}"
    );
    assert!(Raw::header(3, 1, 0)
        .tensor(&long[..63], &[8], f32_id(), 0)
        .open()
        .is_ok());
}

#[test]
fn bad_metadata_values() {
    let e = err(Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).open());
    assert!(
        matches!(e, GgufError::DuplicateKey { ref key, .. } if key == "k"),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1).str("k").u32(13).u64(0).open());
    assert!(
        matches!(
            e,
            GgufError::UnknownValueType {
                type_id: 13,
                offset: 33,
                ..
            }
        ),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1).str("k").u32(9).u32(99).u64(0).open());
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 99, ref what, .. } if what.contains("elements")),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1)
        .str("k")
        .u32(ValueType::Bool.id())
        .u8(2)
        .open());
    assert!(matches!(e, GgufError::InvalidBool { byte: 2, .. }), "{e}");
    let e = err(Raw::header(3, 0, 1)
        .u64(2)
        .bytes(&[0xC3, 0x28])
        .u32(4)
        .u32(0)
        .open());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 32, .. }),
        "{e}"
    );
    let e = err(Raw::header(3, 0, 1)
        .str("k")
        .u32(ValueType::String.id())
        .u64(1)
        .u8(0xFF)
        .open());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { ref what, .. } if what.contains("'k'")),
        "{e}"
    );
}

/// `depth` arrays nested, the innermost holding one u8.
fn nested(depth: usize) -> Raw {
    let mut r = Raw::header(3, 0, 1).str("deep").u32(ValueType::Array.id());
    for _ in 1..depth {
        r = r.u32(ValueType::Array.id()).u64(1);
    }
    r.u32(ValueType::U8.id()).u64(1).u8(7)
}

#[test]
fn nesting_is_bounded() {
    let max = strata_engine::gguf::MAX_ARRAY_DEPTH;
    let f = nested(max).open().unwrap();
    let mut v = f.metadata().get("deep").unwrap();
    for _ in 0..max {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &Value::U8(7));
    let e = err(nested(max + 1).open());
    assert!(matches!(e, GgufError::ArrayTooDeep { .. }), "{e}");
}

#[test]
fn alignment_must_be_a_u32_power_of_two() {
    for a in [0u32, 3, 48] {
        let e = err(Raw::header(3, 0, 1).kv_u32("general.alignment", a).open());
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{a}: {e}");
    }
    let r = Raw::header(3, 0, 1)
        .str("general.alignment")
        .u32(ValueType::U64.id())
        .u64(32);
    assert!(matches!(err(r.open()), GgufError::BadAlignment { .. }));
    // Alignment 64: the data section and every offset follow it.
    let f = Raw::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("w", &[8], f32_id(), 0)
        .open()
        .unwrap();
    assert_eq!((f.alignment(), f.data_offset() % 64), (64, 0));
    let e = err(Raw::header(3, 1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("w", &[8], f32_id(), 32)
        .open());
    assert!(
        matches!(e, GgufError::MisalignedTensor { alignment: 64, .. }),
        "{e}"
    );
}

#[test]
fn errors_from_open_name_the_file() {
    let path = std::env::temp_dir().join(format!("strata-gguf-bad-{}.gguf", std::process::id()));
    std::fs::write(&path, b"GGML\x03\0\0\0").unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    assert!(matches!(e.root(), GgufError::BadMagic { .. }), "{e}");
    let e = GgufFile::open("/nonexistent/strata.gguf").unwrap_err();
    assert!(matches!(e.root(), GgufError::Io { .. }), "{e}");
}
