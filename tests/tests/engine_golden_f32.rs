//! SmolLM2 with every matrix dequantized to F32 (so no activation is quantized anywhere)
//! against the numpy reference's float mode: the same computation up to f32 rounding, so
//! this checks the forward pass's structure (norms, rope, attention, SwiGLU, tied output)
//! tightly, apart from any quantization effect.

use strata_engine::gguf::{GgufFile, GgufWriter};
use strata_engine::model::Model;
use strata_engine::runner::{Runner, RunnerOptions};
use strata_kernels_cpu::{dequantize, GgmlType};
use strata_tests::forward::ids;

// Without activation quantization there are no rounding boundaries to cross, so f32 vs
// f64 only adds rounding: relative ~6e-8 per operation, growing like √N over sums of up to
// 1536 terms and ~10 chained operations per block over 30 blocks: ~1e-5 relative, i.e.
// ~3e-4 logit at logits of ~30. We allow 1e-3; a wrong formula anywhere moves logits by
// far more (whole units).
const TOL: f64 = 1e-3;

#[test]
fn smollm2_in_f32_matches_the_float_reference() {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    };
    let q = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata(q.metadata()).unwrap();
    for t in q.tensors() {
        let mut x = vec![0.0f32; t.n_elements() as usize];
        dequantize(t.ty, q.tensor_data(t).unwrap(), &mut x).unwrap();
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(t.name.clone(), GgmlType::F32, &t.dims, bytes)
            .unwrap();
    }
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n_vocab = model.cfg.n_vocab;
    let g = strata_tests::forward::smollm2();
    for case in g["cases"].as_array().unwrap() {
        let seq = ids(&case["teacher_forced_ids"]);
        let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 128);
        opts.all_logits = true;
        // The float reference keeps K and V in full precision.
        opts.kv_type = GgmlType::F32;
        let logits = Runner::new(&model, opts).unwrap().eval_all(&seq).unwrap();
        let mut worst = 0.0f64;
        for (t, pos) in case["top_float"].as_array().unwrap().iter().enumerate() {
            for (id, want) in ids(&pos["ids"])
                .iter()
                .zip(pos["logits"].as_array().unwrap())
            {
                let got = logits[t * n_vocab + *id as usize] as f64;
                worst = worst.max((got - want.as_f64().unwrap()).abs());
            }
        }
        eprintln!("{:?}: worst logit difference {worst:.6}", case["prompt"]);
        assert!(worst <= TOL, "{:?}: {worst}", case["prompt"]);
    }
}
