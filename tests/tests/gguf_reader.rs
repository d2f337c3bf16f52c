//! The GGUF reader on the real model (SmolLM2-135M-Instruct, Q4_1 with a Q8_0 embedding).
//! Skipped, with a message, when `scripts/fetch-model.sh` has not fetched it.

use std::collections::BTreeMap;

use strata_engine::gguf::{GgmlType, GgufFile};

fn open_model() -> Option<GgufFile> {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent, run scripts/fetch-model.sh");
        return None;
    };
    Some(GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn model_header_matches_smollm2() {
    let Some(f) = open_model() else { return };
    let m = f.metadata();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(m.get_str("general.architecture"), Some("llama"));
    assert_eq!(m.get_u32("llama.block_count"), Some(30));
    assert_eq!(m.get_u32("llama.embedding_length"), Some(576));
    assert_eq!(m.get_u32("llama.attention.head_count"), Some(9));
    assert_eq!(m.get_u32("llama.attention.head_count_kv"), Some(3));
    let tokens = m
        .get_str_array("tokenizer.ggml.tokens")
        .expect("token list");
    assert_eq!(tokens.len(), 49152);
    assert_eq!(m.get_str("tokenizer.ggml.model"), Some("gpt2"));
}

#[test]
fn model_tensor_types_and_counts() {
    let Some(f) = open_model() else { return };
    assert_eq!(f.tensors().len(), 272);
    let mut by_type: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for t in f.tensors() {
        *by_type.entry(t.ty).or_default() += 1;
    }
    let expected = BTreeMap::from([
        (GgmlType::F32, 61),
        (GgmlType::Q4_1, 210),
        (GgmlType::Q8_0, 1),
    ]);
    assert_eq!(by_type, expected);
    let embd = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(embd.ty, GgmlType::Q8_0);
    assert_eq!(embd.dims, [576, 49152]);
    assert!(f.missing_data().is_empty());
    f.require_all_data().unwrap();
}

#[test]
fn model_tensor_bytes_match_type_and_shape() {
    let Some(f) = open_model() else { return };
    for t in f.tensors() {
        let data = f.tensor_data(t).unwrap();
        let n: u64 = t.dims.iter().product();
        let expected = n / t.ty.block_size() as u64 * t.ty.type_size() as u64;
        assert_eq!(data.len() as u64, expected, "{}", t.name);
        assert_eq!(t.n_bytes, expected, "{}", t.name);
    }
    // A norm weight is F32 [576]: its values are finite and not all zero.
    let norm = f.tensor("blk.0.attn_norm.weight").expect("attn_norm");
    assert_eq!(
        (norm.ty, norm.dims.as_slice()),
        (GgmlType::F32, &[576u64][..])
    );
    let bytes = f.tensor_data(norm).unwrap();
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(vals.iter().all(|v| v.is_finite()));
    assert!(vals.iter().any(|&v| v != 0.0));
}

#[test]
fn model_header_alone_opens_and_names_missing_tensors() {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent, run scripts/fetch-model.sh");
        return;
    };
    let full = std::fs::read(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    // Cut in the middle of the data section: the tensors before the cut keep their data.
    let cut = f.data_offset() + f.tensor_bytes() / 2;
    let short = GgufFile::from_bytes(full[..cut as usize].to_vec()).unwrap();
    let missing = short.missing_data();
    assert!(!missing.is_empty() && missing.len() < f.tensors().len());
    for t in short.tensors() {
        let end = short.data_offset() + t.offset + t.n_bytes;
        assert_eq!(short.has_data(t), end <= cut, "{}", t.name);
    }
    let err = short.require_all_data().unwrap_err();
    assert!(err.to_string().contains(&missing[0].name), "{err}");
    // Header only: every tensor is missing, planning data (shapes, types) is intact.
    let header = GgufFile::from_bytes(full[..f.data_offset() as usize].to_vec()).unwrap();
    assert_eq!(header.missing_data().len(), 272);
    assert_eq!(header.tensors(), f.tensors());
    assert_eq!(header.metadata(), f.metadata());
}
