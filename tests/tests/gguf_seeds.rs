//! The fuzz target's seed files (`fuzz/corpus/seeds/`, written by `fuzz/make_seeds.py`
//! with plain Python `struct` packing, not by our writer): the reader must read each as
//! its name says. This checks the reader against a second, independent encoder.

use strata_engine::gguf::{GgmlType, GgufError, GgufFile, Value, ValueType};

fn seed(name: &str) -> Result<GgufFile, GgufError> {
    let path = strata_tests::root().join("fuzz/corpus/seeds").join(name);
    GgufFile::open(&path).map_err(|e| match e {
        GgufError::File { source, .. } => *source,
        e => e,
    })
}

#[test]
fn valid_seed_reads_as_written() {
    let f = seed("valid_v3.gguf").unwrap();
    let m = f.metadata();
    assert_eq!((f.version(), f.alignment()), (3, 32));
    assert_eq!(m.len(), 16);
    assert_eq!(m.get_str("general.architecture"), Some("llama"));
    assert_eq!(m.get("t.u8"), Some(&Value::U8(255)));
    assert_eq!(m.get("t.i8"), Some(&Value::I8(-3)));
    assert_eq!(m.get("t.u16"), Some(&Value::U16(65535)));
    assert_eq!(m.get("t.i16"), Some(&Value::I16(-7)));
    assert_eq!(m.get("t.i32"), Some(&Value::I32(-1)));
    assert_eq!(m.get("t.f32"), Some(&Value::F32(0.5)));
    assert_eq!(m.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(m.get("t.u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(m.get("t.i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(m.get("t.f64"), Some(&Value::F64(1e-300)));
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens"),
        Some(vec!["<s>", "a", "", "é"])
    );
    assert_eq!(
        m.get_f32_array("tokenizer.ggml.scores"),
        Some(vec![0.0, -1.0, 2.5, 3.0])
    );
    let nested = Value::Array(
        ValueType::Array,
        vec![
            Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)]),
            Value::strings(["x"]),
            Value::Array(
                ValueType::Array,
                vec![Value::Array(ValueType::I64, vec![Value::I64(5)])],
            ),
        ],
    );
    assert_eq!(m.get("t.nested"), Some(&nested));
    assert_eq!(
        m.get("t.empty"),
        Some(&Value::Array(ValueType::Bool, vec![]))
    );
    let shapes: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.ty, t.dims.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("token_embd.weight", GgmlType::Q8_0, vec![32, 4]),
            ("blk.0.attn_norm.weight", GgmlType::F32, vec![8]),
            ("blk.0.ffn_down.weight", GgmlType::Q4_0, vec![64, 2]),
            ("output.weight", GgmlType::F16, vec![3, 2, 1, 1]),
        ]
    );
    f.require_all_data().unwrap();
    assert_eq!(f.file_len(), f.data_offset() + 160 + 32 + 96 + 32);
}

#[test]
fn other_valid_seeds() {
    let f = seed("valid_v2_align64.gguf").unwrap();
    assert_eq!((f.version(), f.alignment()), (2, 64));
    assert_eq!(f.tensor("w.q4k").unwrap().n_bytes, 144);
    assert_eq!(f.tensor("b").unwrap().offset, 192);
    assert!(f.missing_data().is_empty());
    let f = seed("header_only.gguf").unwrap();
    assert_eq!(f.missing_data().len(), 4);
    let f = seed("truncated_data.gguf").unwrap();
    let missing: Vec<_> = f.missing_data().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(missing, ["output.weight"]);
    assert_eq!(seed("no_tensors.gguf").unwrap().metadata().len(), 5);
    let f = seed("deep_nesting.gguf").unwrap();
    assert_eq!(f.metadata().get_array("d").unwrap().len(), 1);
}

#[test]
fn invalid_seeds() {
    assert!(matches!(
        seed("bad_magic.gguf"),
        Err(GgufError::BadMagic { .. })
    ));
    assert!(matches!(
        seed("version1.gguf"),
        Err(GgufError::UnsupportedVersion { version: 1 })
    ));
    assert!(matches!(
        seed("huge_kv_count.gguf"),
        Err(GgufError::CountTooLarge { .. })
    ));
    assert!(matches!(
        seed("bad_alignment.gguf"),
        Err(GgufError::BadAlignment { .. })
    ));
}

/// The whole-model seeds of the gguf_model target: the good one binds and runs; each
/// crafted one is refused by name before anything is sized by its bad value.
#[test]
fn model_seeds_run_or_are_refused_by_name() {
    use strata_engine::model::Model;
    use strata_engine::runner::{Runner, RunnerOptions};

    let f = seed("tiny_llama.gguf").unwrap();
    let model = Model::bind(&f, |_| {}).unwrap();
    let mut r = Runner::new(&model, RunnerOptions::cpu(model.cfg.n_layer, 8)).unwrap();
    let logits = r.eval(&[1, 2, 3]).unwrap();
    assert_eq!(logits.len(), 16);
    assert!(logits.iter().all(|l| l.is_finite()));

    for (name, key) in [
        ("tiny_llama_block_count_4e9.gguf", "llama.block_count"),
        ("tiny_llama_heads_0.gguf", "llama.attention.head_count"),
        (
            "tiny_llama_kv_heads_3.gguf",
            "llama.attention.head_count_kv",
        ),
    ] {
        let f = seed(name).unwrap();
        let e = Model::bind(&f, |_| {}).err().expect(name).to_string();
        assert!(e.contains(key), "{name}: {e}");
    }
    // A training context of 4e9 positions binds (it is only a default); sizing a cache by
    // it is the host budget's to refuse (cli_generate's test of -c 0).
    let f = seed("tiny_llama_context_4e9.gguf").unwrap();
    assert_eq!(
        Model::bind(&f, |_| {}).unwrap().cfg.n_ctx_train,
        4_000_000_000
    );
}
