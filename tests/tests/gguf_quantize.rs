//! The quantize-a-file path: which tensors convert, the fallbacks, exact bytes for a
//! synthetic model, and the real model converted to Q8_0 within Q8_0's error bound.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_engine::gguf::{
    quantize_file, quantize_model, GgmlType, GgufError, GgufFile, GgufWriter, QuantizeOptions,
};
use strata_kernels_cpu::{dequantize, quantize};

fn random_f32(rng: &mut ChaCha8Rng, n: u64) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small llama-like model in F32: norms, matrices with rows of 576 and 1536 (like
/// SmolLM2), a one-row matrix and an MoE router.
fn synthetic_model() -> GgufFile {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "llama").unwrap();
    w.add_kv("general.file_type", 0u32).unwrap();
    let tensors: [(&str, &[u64]); 6] = [
        ("token_embd.weight", &[576, 4]),
        ("blk.0.attn_norm.weight", &[576]),
        ("blk.0.attn_q.weight", &[576, 3]),
        ("blk.0.ffn_down.weight", &[1536, 2]),
        ("blk.0.ffn_gate_inp.weight", &[576, 2]),
        ("blk.0.one_row.weight", &[576, 1]),
    ];
    for (name, dims) in tensors {
        let x = random_f32(&mut rng, dims.iter().product());
        w.add_tensor(name, GgmlType::F32, dims, f32_bytes(&x))
            .unwrap();
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn types_after(f: &GgufFile, opts: &QuantizeOptions) -> Vec<(String, GgmlType, Option<GgmlType>)> {
    let (_, report) = quantize_model(f, opts).unwrap();
    report
        .tensors
        .into_iter()
        .map(|t| (t.name, t.to, t.fallback_from))
        .collect()
}

#[test]
fn converts_matrices_and_keeps_the_rest() {
    let f = synthetic_model();
    let opts = QuantizeOptions::new(GgmlType::Q8_0);
    let (w, report) = quantize_model(&f, &opts).unwrap();
    let out = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let expected = [
        ("token_embd.weight", GgmlType::Q8_0),
        ("blk.0.attn_norm.weight", GgmlType::F32),
        ("blk.0.attn_q.weight", GgmlType::Q8_0),
        ("blk.0.ffn_down.weight", GgmlType::Q8_0),
        ("blk.0.ffn_gate_inp.weight", GgmlType::F32),
        ("blk.0.one_row.weight", GgmlType::F32),
    ];
    for ((name, ty), t) in expected.iter().zip(out.tensors()) {
        assert_eq!((t.name.as_str(), t.ty), (*name, *ty));
        let src = f.tensor(name).unwrap();
        assert_eq!(t.dims, src.dims);
        let x: Vec<f32> = f
            .tensor_data(src)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        // Exactly what the format's quantizer makes of the same f32 values.
        let mut direct = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
        quantize(*ty, &x, &mut direct).unwrap();
        assert_eq!(out.tensor_data(t).unwrap(), direct, "{name}");
    }
    assert_eq!(out.metadata().get_u32("general.file_type"), Some(7));
    assert_eq!(
        out.metadata().get_u32("general.quantization_version"),
        Some(2)
    );
    assert_eq!(
        out.metadata().get_str("general.architecture"),
        Some("llama")
    );
    assert_eq!(report.bytes_in, f.tensor_bytes());
    assert_eq!(report.bytes_out, out.tensor_bytes());
}

#[test]
fn k_quants_fall_back_on_rows_that_are_not_whole_super_blocks() {
    let f = synthetic_model();
    let got = types_after(&f, &QuantizeOptions::new(GgmlType::Q4_K));
    let q = |n: &str| got.iter().find(|t| t.0 == n).unwrap().clone();
    assert_eq!(
        q("blk.0.ffn_down.weight"),
        ("blk.0.ffn_down.weight".into(), GgmlType::Q4_K, None)
    );
    assert_eq!(
        q("blk.0.attn_q.weight"),
        (
            "blk.0.attn_q.weight".into(),
            GgmlType::Q5_0,
            Some(GgmlType::Q4_K)
        )
    );
    for (wanted, fallback) in [
        (GgmlType::Q5_K, GgmlType::Q5_1),
        (GgmlType::Q6_K, GgmlType::Q8_0),
        (GgmlType::Q2_K, GgmlType::Q4_0),
        (GgmlType::Q3_K, GgmlType::Q4_0),
    ] {
        let got = types_after(&f, &QuantizeOptions::new(wanted));
        assert!(got.contains(&("blk.0.attn_q.weight".into(), fallback, Some(wanted))));
    }
    let strict = QuantizeOptions {
        fallback: false,
        ..QuantizeOptions::new(GgmlType::Q4_K)
    };
    let e = quantize_model(&f, &strict).map(|_| ()).unwrap_err();
    assert!(
        matches!(e, GgufError::InvalidTensor { ref name, .. } if name == "token_embd.weight"),
        "{e}"
    );
}

#[test]
fn embedding_and_output_types_can_differ() {
    let f = synthetic_model();
    let opts = QuantizeOptions {
        token_embedding: Some(GgmlType::Q8_0),
        ..QuantizeOptions::new(GgmlType::Q4_0)
    };
    let got = types_after(&f, &opts);
    assert_eq!(got[0], ("token_embd.weight".into(), GgmlType::Q8_0, None));
    assert_eq!(got[2], ("blk.0.attn_q.weight".into(), GgmlType::Q4_0, None));
    let bad = QuantizeOptions::new(GgmlType::Q8_K);
    assert!(matches!(
        quantize_model(&f, &bad).map(|_| ()),
        Err(GgufError::InvalidValue { .. })
    ));
}

#[test]
fn header_only_input_is_refused_naming_a_tensor() {
    let f = synthetic_model();
    let header = GgufFile::from_bytes(f.as_bytes()[..f.data_offset() as usize].to_vec()).unwrap();
    let e = quantize_model(&header, &QuantizeOptions::new(GgmlType::Q8_0))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(e, GgufError::TensorDataMissing { ref name, .. } if name == "token_embd.weight"),
        "{e}"
    );
}

/// SmolLM2 (Q4_1 matrices, Q8_0 embedding) to Q8_0, through files. The embedding is copied
/// bit for bit; each Q4_1 matrix, dequantized, is requantized to Q8_0, whose error per
/// element is at most half a step plus the f16 rounding of the scale:
/// |x − q·f16(d)| ≤ d/2 + 127·|d − f16(d)|, with d = amax/127 of the 32-element block
/// (ggml's Q8_0: d = amax/127, q = round(x/d), d stored as f16). |d − f16(d)| is at most
/// d·2⁻¹¹ for a normal f16 and 2⁻²⁵ (half the spacing) for a subnormal one; the f32
/// products x/d and q·f16(d) add at most 127·d·2⁻²³ between them.
#[test]
fn real_model_to_q8_0_within_the_format_bound() {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent, run scripts/fetch-model.sh");
        return;
    };
    let out_path = std::env::temp_dir().join(format!("strata-q8-{}.gguf", std::process::id()));
    let report = quantize_file(&path, &out_path, &QuantizeOptions::new(GgmlType::Q8_0)).unwrap();
    let src = GgufFile::open(&path).unwrap();
    let out = GgufFile::open(&out_path).unwrap();
    std::fs::remove_file(&out_path).unwrap();
    assert_eq!(report.tensors.len(), 272);
    assert_eq!(out.metadata().get_u32("general.file_type"), Some(7));
    assert_eq!(out.metadata().len(), src.metadata().len());
    let mut q8 = 0;
    for (s, o) in src.tensors().iter().zip(out.tensors()) {
        assert_eq!((&s.name, &s.dims), (&o.name, &o.dims));
        if s.ty == GgmlType::F32 {
            assert_eq!(o.ty, GgmlType::F32, "{}", s.name);
            assert_eq!(src.tensor_data(s).unwrap(), out.tensor_data(o).unwrap());
            continue;
        }
        assert_eq!(o.ty, GgmlType::Q8_0, "{}", s.name);
        q8 += 1;
        if s.ty == GgmlType::Q8_0 {
            assert_eq!(src.tensor_data(s).unwrap(), out.tensor_data(o).unwrap());
            continue;
        }
        let n = s.n_elements() as usize;
        let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
        dequantize(s.ty, src.tensor_data(s).unwrap(), &mut x).unwrap();
        dequantize(o.ty, out.tensor_data(o).unwrap(), &mut y).unwrap();
        for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact(32)) {
            let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let f16_err = (d / 2048.0).max(2f32.powi(-25));
            let bound = d / 2.0 + 127.0 * f16_err + 127.0 * d * f32::EPSILON;
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= bound,
                    "{}: {a} vs {b}, bound {bound}",
                    s.name
                );
            }
        }
    }
    assert_eq!(q8, 211);
}
