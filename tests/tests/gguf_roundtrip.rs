//! Writer → reader round trips: every value type (nested and empty arrays too), tensors of
//! several formats, alignments 32 and 64, versions 2 and 3, through memory and a file.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_engine::gguf::{GgmlType, GgufFile, GgufWriter, Metadata, Value, ValueType};

fn every_value_type() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(255)),
        ("t.i8", Value::I8(-128)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::from("héllo, ✓")),
        ("t.empty_string", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        (
            "t.array.u8",
            Value::Array(ValueType::U8, vec![Value::U8(0), Value::U8(9)]),
        ),
        (
            "t.array.bool",
            Value::Array(ValueType::Bool, vec![Value::Bool(false), Value::Bool(true)]),
        ),
        (
            "t.array.f64",
            Value::Array(ValueType::F64, vec![Value::F64(-0.25)]),
        ),
        (
            "t.array.i64",
            Value::Array(ValueType::I64, vec![Value::I64(-1), Value::I64(7)]),
        ),
        ("t.array.strings", Value::strings(["a", "", "三"])),
        ("t.array.empty", Value::Array(ValueType::String, vec![])),
        (
            "t.array.nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::i32s([1, 2, 3]),
                    Value::Array(ValueType::F32, vec![]),
                    Value::Array(ValueType::Array, vec![Value::strings(["deep"])]),
                ],
            ),
        ),
    ]
}

/// Random bytes for a tensor of `ty` and `dims`: quantized from random f32 so the blocks
/// are well formed.
fn tensor_bytes(rng: &mut ChaCha8Rng, ty: GgmlType, dims: &[u64]) -> Vec<u8> {
    let n: u64 = dims.iter().product();
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut out = vec![0u8; ty.bytes_for(n).unwrap() as usize];
    strata_kernels_cpu::quantize(ty, &x, &mut out).unwrap();
    out
}

fn build(version: u32, alignment: Option<u32>) -> GgufWriter {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut w = GgufWriter::new();
    w.set_version(version).unwrap();
    if let Some(a) = alignment {
        w.set_alignment(a).unwrap();
    }
    for (k, v) in every_value_type() {
        w.add_kv(k, v).unwrap();
    }
    let shapes: [(&str, GgmlType, &[u64]); 7] = [
        ("norm.weight", GgmlType::F32, &[7]),
        ("scalar", GgmlType::F32, &[]),
        ("emb.weight", GgmlType::F16, &[5, 3]),
        ("a.weight", GgmlType::Q4_1, &[64, 3]),
        ("b.weight", GgmlType::Q8_0, &[32, 2, 2]),
        ("c.weight", GgmlType::Q6_K, &[256, 1, 1, 2]),
        ("d.weight", GgmlType::BF16, &[3, 1]),
    ];
    for (name, ty, dims) in shapes {
        w.add_tensor(name, ty, dims, tensor_bytes(&mut rng, ty, dims))
            .unwrap();
    }
    w
}

fn check_round_trip(w: &GgufWriter, f: &GgufFile, version: u32, alignment: u64) {
    assert_eq!(f.version(), version);
    assert_eq!(f.alignment(), alignment);
    assert_eq!(f.metadata(), w.metadata());
    assert_eq!(f.data_offset() % alignment, 0);
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "norm.weight",
            "scalar",
            "emb.weight",
            "a.weight",
            "b.weight",
            "c.weight",
            "d.weight"
        ]
    );
    for t in f.tensors() {
        assert_eq!(t.offset % alignment, 0, "{}", t.name);
        assert_eq!(f.tensor_data(t).unwrap().len() as u64, t.n_bytes);
    }
    assert_eq!(f.tensor("c.weight").unwrap().dims, [256, 1, 1, 2]);
    assert_eq!(f.tensor("scalar").unwrap().n_bytes, 4);
    assert!(f.missing_data().is_empty());
    // Writing what was read gives the same bytes: every value and tensor survived exactly
    // (float bit patterns included, which PartialEq alone would not show for -0.0).
    let mut again = GgufWriter::new();
    again.set_version(version).unwrap();
    again.add_metadata(f.metadata()).unwrap();
    for t in f.tensors() {
        again
            .add_tensor(&t.name, t.ty, &t.dims, f.tensor_data(t).unwrap().to_vec())
            .unwrap();
    }
    assert_eq!(again.to_bytes(), f.as_bytes());
}

#[test]
fn round_trip_in_memory_every_version_and_alignment() {
    for version in [2, 3] {
        for (alignment, expected) in [(None, 32), (Some(32), 32), (Some(64), 64), (Some(1), 1)] {
            let w = build(version, alignment);
            let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
            check_round_trip(&w, &f, version, expected);
        }
    }
}

#[test]
fn round_trip_through_a_mapped_file() {
    let path = std::env::temp_dir().join(format!("strata-gguf-rt-{}.gguf", std::process::id()));
    let w = build(3, Some(64));
    let written = w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(written, f.file_len());
    check_round_trip(&w, &f, 3, 64);
    // Mapped data is aligned in memory too (the map starts on a page).
    for t in f.tensors() {
        assert_eq!(
            f.tensor_data(t).unwrap().as_ptr() as u64 % 64,
            0,
            "{}",
            t.name
        );
    }
    drop(f);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn typed_getters_read_written_values() {
    let f = GgufFile::from_bytes(build(3, None).to_bytes()).unwrap();
    let m: &Metadata = f.metadata();
    assert_eq!(m.get_u32("t.u16"), Some(65535));
    assert_eq!(m.get_u32("t.u64"), None, "u64::MAX does not fit a u32");
    assert_eq!(m.get_u64("t.u64"), Some(u64::MAX));
    assert_eq!(m.get_str("t.string"), Some("héllo, ✓"));
    assert_eq!(m.get_bool("t.bool"), Some(true));
    assert_eq!(m.get_f32("t.f32"), Some(-1.5e-7));
    assert_eq!(
        m.get_str_array("t.array.strings"),
        Some(vec!["a", "", "三"])
    );
    assert_eq!(m.get_str_array("t.array.empty"), Some(vec![]));
    let nested = m.get_array("t.array.nested").unwrap();
    assert_eq!(nested[0].as_array().unwrap().len(), 3);
    assert_eq!(m.iter().next().map(|(k, _)| k), Some("t.u8"));
}
