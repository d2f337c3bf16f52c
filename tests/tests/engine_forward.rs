//! The runner end to end: batched prefill agrees with token-by-token decoding, SmolLM2
//! greedily says " Paris.", every architecture runs on random weights, and the runner
//! allocates exactly what `buffers` says.

use strata_engine::buffers::{kv_cache_bytes, scratch_bytes, ScratchLayout};
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::DeviceId;
use strata_engine::model::Model;
use strata_engine::runner::{RunError, Runner, RunnerOptions};
use strata_engine::tokenizer::Tokenizer;
use strata_kernels_cpu::GgmlType;
use strata_tests::random_model::{RandomModel, RandomMoe};

fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap()
}

/// A random-weight model of `arch` in memory: 2 blocks, n_embd 64, 4 heads of 16 (2 KV
/// heads), n_ff 96, vocab 80, all matrices (embedding included) in `ty`, tied output unless
/// `separate_output`.
fn tiny_model(arch: &'static str, ty: GgmlType, separate_output: bool, seed: u64) -> GgufFile {
    RandomModel {
        arch,
        n_vocab: 80,
        embd_format: ty,
        separate_output,
        seed,
        ..RandomModel::small(2, &[ty])
    }
    .build()
}

/// Logits of every position, once as batches of `n_batch` and once one token at a time;
/// returns the largest difference relative to each row's logit range.
fn prefill_vs_decode(model: &Model, tokens: &[u32], n_batch: usize) -> f32 {
    let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 128);
    opts.all_logits = true;
    opts.n_batch = n_batch;
    let batched = Runner::new(model, opts.clone())
        .unwrap()
        .eval_all(tokens)
        .unwrap();
    let mut one = Runner::new(
        model,
        RunnerOptions {
            all_logits: false,
            ..opts
        },
    )
    .unwrap();
    let n_vocab = model.cfg.n_vocab;
    let mut worst = 0.0f32;
    for (t, &tok) in tokens.iter().enumerate() {
        let l = one.eval(&[tok]).unwrap();
        let b = &batched[t * n_vocab..(t + 1) * n_vocab];
        let range =
            l.iter().fold(f32::MIN, |m, &v| m.max(v)) - l.iter().fold(f32::MAX, |m, &v| m.min(v));
        let d = l
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        worst = worst.max(d / range);
    }
    worst
}

// Tolerance for batched vs one-token logits. Both paths quantize each activation row the
// same way (quantization is per row), so the only source of difference is the order of
// f32 additions inside the matmul/matvec kernels (relative ~1e-6 per dot product). A
// difference that small can still flip the rounding of one int8 activation (an error of
// one step, d = max|x|/127, in one element of 32) somewhere in the next layer; across the
// layers that perturbs the logits by at most a few per cent of their range. 5% of the
// range bounds that, while a wrong mask, position or cache slot moves logits by a sizeable
// fraction of their range.
const BATCH_VS_DECODE_REL: f32 = 0.05;

#[test]
fn every_arch_runs_and_prefill_matches_decode_on_random_weights() {
    for (arch, ty, sep) in [
        ("llama", GgmlType::Q4_1, false),
        ("llama", GgmlType::Q8_0, true),
        ("qwen2", GgmlType::Q4_0, false),
        ("qwen3", GgmlType::Q8_0, true),
        ("llama", GgmlType::F16, false),
    ] {
        let file = tiny_model(arch, ty, sep, 7);
        let model = Model::bind(&file, |_| {}).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 80) as u32).collect();
        let worst = prefill_vs_decode(&model, &tokens, 8);
        eprintln!("{arch} {ty}: batched vs one-token logits differ by {worst} of their range");
        assert!(
            worst <= BATCH_VS_DECODE_REL,
            "{arch} {ty}: relative difference {worst}"
        );
    }
}

#[test]
fn experts_and_latent_attention_prefill_matches_decode_on_random_weights() {
    // A batch groups its tokens by expert (each expert's weights read once per batch) and
    // attends in the latent space for every token at once; one token at a time runs its
    // own experts. Same routing, same arithmetic per row: within the same bound.
    for (name, m) in [
        ("qwen3moe Q8_0", RandomMoe::qwen3moe(GgmlType::Q8_0)),
        ("qwen3moe Q4_0", RandomMoe::qwen3moe(GgmlType::Q4_0)),
        (
            "deepseek2 kv_b Q8_0",
            RandomMoe::deepseek2(GgmlType::Q8_0, false),
        ),
        (
            "deepseek2 k_b/v_b Q8_0",
            RandomMoe::deepseek2(GgmlType::Q8_0, true),
        ),
        (
            "deepseek2 k_b/v_b F16",
            RandomMoe::deepseek2(GgmlType::F16, true),
        ),
    ] {
        let file = m.build();
        let model = Model::bind(&file, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 96) as u32).collect();
        let worst = prefill_vs_decode(&model, &tokens, 8);
        eprintln!("{name}: batched vs one-token logits differ by {worst} of their range");
        assert!(
            worst <= BATCH_VS_DECODE_REL,
            "{name}: relative difference {worst}"
        );
    }
}

#[test]
fn runner_allocates_what_buffers_says() {
    let file = tiny_model("llama", GgmlType::Q8_0, false, 1);
    allocates_what_buffers_says(&file);
    allocates_what_buffers_says(&RandomMoe::qwen3moe(GgmlType::Q4_0).build());
    allocates_what_buffers_says(&RandomMoe::deepseek2(GgmlType::Q8_0, true).build());
}

fn allocates_what_buffers_says(file: &GgufFile) {
    let model = Model::bind(file, |_| {}).unwrap();
    let cfg = &model.cfg;
    for (n_ctx, n_batch, all) in [(128, 16, false), (64, 4, true)] {
        let opts = RunnerOptions {
            n_batch,
            all_logits: all,
            ..RunnerOptions::cpu(cfg.n_layer, n_ctx)
        };
        let r = Runner::new(&model, opts.clone()).unwrap();
        let n_out = if all { n_batch } else { 1 };
        assert_eq!(
            r.kv_bytes(DeviceId::Cpu),
            cfg.n_layer as u64 * kv_cache_bytes(cfg, n_ctx, opts.kv_type)
        );
        let layout = ScratchLayout::new(cfg, n_batch, n_out);
        assert_eq!(r.devices().len(), 1);
        let held = r.devices()[0].backend.holdings();
        assert_eq!(held.scratch, Some(layout));
        assert_eq!(held.kv, (0..cfg.n_layer).collect::<Vec<_>>());
        assert_eq!(scratch_bytes(cfg, n_batch, n_ctx, n_out), layout.bytes());
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let file = tiny_model("llama", GgmlType::Q8_0, false, 2);
    let model = Model::bind(&file, |_| {}).unwrap();
    let mut r = Runner::new(&model, RunnerOptions::cpu(2, 8)).unwrap();
    assert!(matches!(
        r.eval(&[1; 9]),
        Err(RunError::ContextFull { need: 9, n_ctx: 8 })
    ));
    assert!(matches!(
        r.eval(&[80]),
        Err(RunError::BadToken {
            id: 80,
            n_vocab: 80
        })
    ));
    r.eval(&[1; 8]).unwrap();
    assert!(matches!(r.eval(&[1]), Err(RunError::ContextFull { .. })));
    r.reset();
    r.eval(&[1]).unwrap();
}

#[test]
fn smollm2_prefill_matches_decode_and_says_paris() {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    let prompt = tok.encode("The capital of France is").unwrap();

    // Greedy, 12 tokens: the continuation ggml's way of computing gives (issue 4).
    let mut r = Runner::new(&model, RunnerOptions::cpu(model.cfg.n_layer, 64)).unwrap();
    let mut l = r.eval(&prompt).unwrap().to_vec();
    let mut out = Vec::new();
    for _ in 0..12 {
        let t = argmax(&l);
        out.push(t);
        l = r.eval(&[t]).unwrap().to_vec();
    }
    let text = tok.decode(&out);
    assert!(
        text.starts_with(" Paris.\n\nThe United States has a"),
        "{text:?}"
    );

    let mut seq = prompt.clone();
    seq.extend(&out);
    let worst = prefill_vs_decode(&model, &seq, 64);
    eprintln!("SmolLM2: batched vs one-token logits differ by {worst} of their range");
    assert!(worst <= BATCH_VS_DECODE_REL, "relative difference {worst}");
}

#[test]
fn the_last_blocks_skipped_rows_do_not_change_the_logits() {
    // With only the last position's logits wanted, the last block computes its FFN (and the
    // output layer its product) for that row alone, by matvec where a full batch multiplies
    // all rows: the same per-row arithmetic with f32 sums in another order, held to the
    // batch-vs-decode bound (BATCH_VS_DECODE_REL of the logit range).
    let files = [
        tiny_model("llama", GgmlType::Q4_1, false, 3),
        tiny_model("qwen3", GgmlType::Q8_0, true, 4),
        RandomMoe::qwen3moe(GgmlType::Q4_0).build(),
        RandomMoe::deepseek2(GgmlType::Q8_0, true).build(),
    ];
    for file in &files {
        let model = Model::bind(file, |_| {}).unwrap();
        let n_vocab = model.cfg.n_vocab;
        let tokens: Vec<u32> = (0..13).map(|i| (i * 29 % 80) as u32).collect();
        let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 64);
        opts.n_batch = 16;
        let last = Runner::new(&model, opts.clone())
            .unwrap()
            .eval(&tokens)
            .unwrap()
            .to_vec();
        opts.all_logits = true;
        let all = Runner::new(&model, opts)
            .unwrap()
            .eval_all(&tokens)
            .unwrap();
        let row = &all[(tokens.len() - 1) * n_vocab..];
        let range = row.iter().fold(f32::MIN, |m, &v| m.max(v))
            - row.iter().fold(f32::MAX, |m, &v| m.min(v));
        let d = last
            .iter()
            .zip(row)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!(
            "{}: last row alone vs in a full batch: {d} of {range}",
            model.cfg.arch
        );
        assert!(d <= BATCH_VS_DECODE_REL * range, "{}: {d}", model.cfg.arch);
    }
}
