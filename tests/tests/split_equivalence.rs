//! Split equivalence without a GPU: the planner and the layer-split runner, with CPU devices
//! posing as accelerators, for num_gpu ∈ {0, 1, n/2, n, n+1, auto} over one and several
//! such devices. Logits of a batched prefill and of greedy decoding, and the greedy tokens,
//! must equal the all-CPU run's.
//!
//! A model with routed experts gets, under `auto` on small accelerators, blocks whose experts
//! are split between devices; their shares of the FFN are summed in another order than on
//! the CPU alone (see the tolerance below), and must be bit-identical with the devices
//! computing at the same time and one after the other.
//!
//! Tolerance (whole blocks): none — the logits must be bit-identical. A posing device runs the same CPU
//! kernels, on byte-identical copies of the weights, with the same batch sizes, in the same
//! thread pool; the split only moves the residual stream between scratch buffers with exact
//! f32 copies. Nothing in a forward call depends on which device (buffer) holds what, so
//! every floating-point operation happens with the same operands in the same order. (On a
//! real GPU, with other kernels, the same test needs a derived tolerance.)

use strata_engine::devices::PseudoAccel;
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::Ledger;
use strata_engine::load::load;
use strata_engine::model::Model;
use strata_engine::plan::{Device, NumGpu, Plan, RunSettings};
use strata_engine::runner::Runner;
use strata_kernels_cpu::GgmlType;
use strata_tests::random_model::{RandomModel, RandomMoe};
use strata_tests::split::{argmax, assert_ledger_matches_plan, posing, settings};

/// What a run produced: the prompt's logits (every row), then the logits after each
/// greedily chosen token, and the tokens.
#[derive(PartialEq)]
struct Output {
    prompt_logits: Vec<f32>,
    decode_logits: Vec<Vec<f32>>,
    tokens: Vec<u32>,
}

const HOST: u64 = 1 << 40;

/// Loads `file` onto the CPU and `accels` with `num_gpu`, checks the allocation against the
/// plan, and runs the prompt and `n_gen` greedy steps. Returns the output and num_gpu.
fn run(
    file: &GgufFile,
    model: &Model,
    accels: &[PseudoAccel],
    num_gpu: NumGpu,
    prompt: &[u32],
    n_gen: usize,
) -> (Output, usize) {
    let (out, plan) = run_with(file, model, accels, &settings(num_gpu), prompt, n_gen);
    (out, plan.num_gpu)
}

/// [`run`] with any settings, returning the plan.
fn run_with(
    file: &GgufFile,
    model: &Model,
    accels: &[PseudoAccel],
    s: &RunSettings,
    prompt: &[u32],
    n_gen: usize,
) -> (Output, Plan) {
    let ledger = Ledger::new();
    let what = format!(
        "{} on {} accelerators (overlap {})",
        s.num_gpu,
        accels.len(),
        s.overlap
    );
    let loaded = load(file, model, Device::cpu(HOST), &posing(accels), s, &ledger)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        loaded.recoveries.is_empty(),
        "{what}: {:?}",
        loaded.recoveries
    );
    assert_ledger_matches_plan(&ledger, &loaded.plan, &what);
    let mut r = loaded.runner;
    let prompt_logits = r.eval_all(prompt).unwrap();
    let n_vocab = model.cfg.n_vocab;
    let mut last = prompt_logits[prompt_logits.len() - n_vocab..].to_vec();
    let (mut decode_logits, mut tokens) = (Vec::new(), Vec::new());
    for _ in 0..n_gen {
        let t = argmax(&last);
        tokens.push(t);
        last = r.eval(&[t]).unwrap().to_vec();
        decode_logits.push(last.clone());
    }
    let out = Output {
        prompt_logits,
        decode_logits,
        tokens,
    };
    (out, loaded.plan)
}

/// Shares of a split FFN summed in another order: each MoE block's output differs from
/// the CPU's by f32 reassociation of at most `expert_used_count + 1` terms (a few units of
/// 2⁻²⁴ relative), carried through a few small blocks. Greedy tokens must be equal and
/// every logit within 1e-4 of the largest logit's magnitude, orders above that rounding
/// and far below the random models' logit spread.
fn assert_close(reference: &Output, got: &Output, what: &str) {
    assert_eq!(reference.tokens, got.tokens, "{what}: greedy tokens");
    let rows = std::iter::once((&reference.prompt_logits, &got.prompt_logits))
        .chain(reference.decode_logits.iter().zip(&got.decode_logits));
    for (a, b) in rows {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{what}: a logit differs by {worst} (largest magnitude {scale})"
        );
    }
}

fn assert_same(reference: &Output, got: &Output, what: &str) {
    assert_eq!(reference.tokens, got.tokens, "{what}: greedy tokens");
    let first_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x.to_bits() != y.to_bits())
    };
    if let Some(i) = first_diff(&reference.prompt_logits, &got.prompt_logits) {
        panic!(
            "{what}: prompt logit {i}: {} (CPU) vs {}",
            reference.prompt_logits[i], got.prompt_logits[i]
        );
    }
    for (s, (a, b)) in reference
        .decode_logits
        .iter()
        .zip(&got.decode_logits)
        .enumerate()
    {
        if let Some(i) = first_diff(a, b) {
            panic!(
                "{what}: decode step {s}, logit {i}: {} (CPU) vs {}",
                a[i], b[i]
            );
        }
    }
}

/// Every num_gpu of the issue on one, two and three roomy accelerators, then `auto` on
/// accelerators that hold only part of the model.
fn check_all_splits(file: &GgufFile, prompt: &[u32], n_gen: usize, name: &str) {
    let model = Model::bind(file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let (reference, k0) = run(file, &model, &[], NumGpu::Layers(0), prompt, n_gen);
    assert_eq!(k0, 0);

    let roomy = |count: usize| -> Vec<PseudoAccel> {
        (0..count)
            .map(|i| PseudoAccel::new(format!("ACCEL{i}"), (64 + 32 * i as u64) << 20))
            .collect()
    };
    for count in [1, 2, 3] {
        let accels = roomy(count);
        for (num_gpu, expect) in [
            (NumGpu::Layers(0), 0),
            (NumGpu::Layers(1), 1),
            (NumGpu::Layers(n / 2), n / 2),
            (NumGpu::Layers(n), n),
            (NumGpu::Layers(n + 1), n + 1),
            (NumGpu::Auto, n + 1),
        ] {
            let what = format!("{name}: num_gpu {num_gpu} on {count} accelerators");
            let (got, k) = run(file, &model, &accels, num_gpu, prompt, n_gen);
            assert_eq!(k, expect, "{what}");
            assert_same(&reference, &got, &what);
        }
    }

    // Prefill as a pipeline: accelerators with threads of their own take a micro-batch
    // while the CPU takes the next (here micro-batches are the runner's batches of 8, so
    // the arithmetic is the CPU's alone); the same with overlap off.
    for count in [1, 2] {
        let accels: Vec<PseudoAccel> = roomy(count)
            .into_iter()
            .map(|a| PseudoAccel {
                threads: Some(1),
                ..a
            })
            .collect();
        for overlap in [true, false] {
            let mut s = settings(NumGpu::Layers(n / 2 + 1));
            s.overlap = overlap;
            let (got, _) = run_with(file, &model, &accels, &s, prompt, n_gen);
            let what = format!("{name}: pipelined over {count} (overlap {overlap})");
            assert_same(&reference, &got, &what);
        }
    }

    // `auto` where the accelerators hold only some layers: room for their scratch and half
    // of the bytes of all layers (blocks with their KV caches, and the output layer).
    let ledger = Ledger::new();
    let probe = load(
        file,
        &model,
        Device::cpu(HOST),
        &posing(&roomy(1)),
        &settings(NumGpu::Auto),
        &ledger,
    )
    .unwrap()
    .plan;
    let layers: u64 = probe.block_weights.iter().sum::<u64>()
        + n as u64 * probe.block_kv_bytes
        + probe.output_gpu_bytes;
    let s = probe.scratch_bytes;
    for accels in [
        vec![PseudoAccel::new("ACCEL0", s + layers / 2)],
        vec![
            PseudoAccel::new("ACCEL0", s + layers / 4),
            PseudoAccel::new("ACCEL1", s + layers / 4),
        ],
    ] {
        let what = format!("{name}: auto on {} small accelerators", accels.len());
        let mut s = settings(NumGpu::Auto);
        let (got, plan) = run_with(file, &model, &accels, &s, prompt, n_gen);
        let (on_gpus, all) = plan.expert_bytes_on_gpus();
        if all == 0 {
            let k = plan.num_gpu;
            assert!(k > 0 && k <= n, "{what}: num_gpu {k}");
            assert_same(&reference, &got, &what);
            continue;
        }
        // Attention and FFNs first, then routed experts fill what is left, so some blocks'
        // experts are split between an accelerator and the CPU.
        assert!(plan.num_gpu > 0, "{what}");
        assert!(
            on_gpus > 0 && on_gpus < all,
            "{what}: {on_gpus} of {all} on GPUs"
        );
        assert!(plan.blocks.iter().any(|b| b.whole().is_none()), "{what}");
        assert_close(&reference, &got, &what);
        // With threads of their own, the accelerators compute their shares while the CPU
        // computes its own: the same sums, in the same order, as one after the other.
        let threaded: Vec<PseudoAccel> = accels
            .iter()
            .map(|a| PseudoAccel {
                threads: Some(1),
                ..a.clone()
            })
            .collect();
        let (side_by_side, _) = run_with(file, &model, &threaded, &s, prompt, n_gen);
        assert_same(&got, &side_by_side, &format!("{what}: side by side"));
        s.overlap = false;
        let (one_at_a_time, _) = run_with(file, &model, &threaded, &s, prompt, n_gen);
        assert_same(&got, &one_at_a_time, &format!("{what}: overlap on vs off"));
    }
}

fn prompt(n: usize, n_vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % n_vocab).collect()
}

#[test]
fn llama_legacy_formats_tied_output() {
    let m = RandomModel::small(
        5,
        &[
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::F16,
            GgmlType::Q5_1,
        ],
    );
    // 13 prompt tokens: a full batch of 8 and a partial one.
    check_all_splits(&m.build(), &prompt(13, 96), 4, "llama 5 blocks");
}

#[test]
fn qwen3_float_and_q5_formats_separate_output() {
    let m = RandomModel {
        arch: "qwen3",
        formats: vec![
            GgmlType::BF16,
            GgmlType::Q5_0,
            GgmlType::F32,
            GgmlType::Q8_0,
        ],
        separate_output: true,
        embd_format: GgmlType::F16,
        seed: 11,
        ..RandomModel::small(4, &[])
    };
    check_all_splits(&m.build(), &prompt(9, 96), 3, "qwen3 4 blocks");
}

#[test]
fn qwen2_k_quants() {
    let m = RandomModel {
        arch: "qwen2",
        n_embd: 256,
        n_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        formats: vec![
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q5_K,
            GgmlType::Q3_K,
        ],
        embd_format: GgmlType::Q6_K,
        separate_output: true,
        seed: 3,
        ..RandomModel::small(4, &[])
    };
    check_all_splits(&m.build(), &prompt(10, 96), 3, "qwen2 K-quants");
}

#[test]
fn qwen3moe_and_deepseek2_split_by_layers() {
    // Experts and latent attention on posing devices: each device holds its blocks' expert
    // stacks (packed expert by expert) and latent caches, as the plan sizes them.
    check_all_splits(
        &RandomMoe::qwen3moe(GgmlType::Q4_0).build(),
        &prompt(13, 96),
        4,
        "qwen3moe",
    );
    check_all_splits(
        &RandomMoe::deepseek2(GgmlType::Q8_0, true).build(),
        &prompt(11, 96),
        3,
        "deepseek2",
    );
}

/// The real model, two splits: 16 layers on one accelerator, and `auto` over two that hold
/// about two thirds of it.
#[test]
fn smollm2_splits_equal_the_cpu() {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let prompt = prompt(10, 49152);
    let (reference, _) = run(&file, &model, &[], NumGpu::Layers(0), &prompt, 3);
    let one = [PseudoAccel::new("ACCEL0", 1 << 30)];
    let (got, k) = run(&file, &model, &one, NumGpu::Layers(16), &prompt, 3);
    assert_eq!(k, 16);
    assert_same(&reference, &got, "SmolLM2 num_gpu 16");
    let two = [
        PseudoAccel::new("ACCEL0", 30 << 20),
        PseudoAccel::new("ACCEL1", 50 << 20),
    ];
    let (got, k) = run(&file, &model, &two, NumGpu::Auto, &prompt, 3);
    assert!(k > 1 && k < 31, "num_gpu {k}");
    assert_same(&reference, &got, "SmolLM2 auto on two accelerators");

    // A device that reports 1 GiB but allows only what num_gpu 28 needs: three failed
    // loads, each moving one block to the CPU, then the same answer.
    let probe = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&one),
        &settings(NumGpu::Layers(28)),
        &Ledger::new(),
    )
    .unwrap()
    .plan;
    let capped = [PseudoAccel::capped(
        "ACCEL0",
        1 << 30,
        probe.devices[1].total_bytes(),
    )];
    let ledger = Ledger::new();
    let loaded = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&capped),
        &settings(NumGpu::Auto),
        &ledger,
    )
    .unwrap();
    assert_eq!(loaded.recoveries.len(), 3, "{:#?}", loaded.recoveries);
    assert_eq!(loaded.plan.num_gpu, 28);
    assert_ledger_matches_plan(&ledger, &loaded.plan, "SmolLM2 after recovery");
    let mut r = loaded.runner;
    let logits = r.eval_all(&prompt).unwrap();
    assert!(
        logits == reference.prompt_logits,
        "SmolLM2 after recovery: prompt logits"
    );
}

/// Several sequences in one runner: two prompts as entries of one call, then greedy decoding
/// of both in lockstep (one entry each per call), each sequence's logits bit-identical to the
/// same sequence run alone in batches of the same size. On the CPU alone, and across a layer
/// split whose accelerator has a thread of its own, where the entries flow through the
/// devices as a pipeline (overlap on) or one device at a time (off). The plan's KV bytes
/// (one cache a sequence) equal what is allocated.
fn check_sequences(file: &GgufFile, prompts: [&[u32]; 2], n_gen: usize, name: &str) {
    let model = Model::bind(file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let n_vocab = model.cfg.n_vocab;
    // Alone: each prompt in batches of 8 (the settings' batch, as the entries are cut),
    // then its greedy tokens one at a time; the last-row logits of each call.
    let alone = |prompt: &[u32]| -> Vec<Vec<f32>> {
        let s = settings(NumGpu::Layers(0));
        let loaded = load(file, &model, Device::cpu(HOST), &[], &s, &Ledger::new()).unwrap();
        let mut r = loaded.runner;
        let mut out = Vec::new();
        for chunk in prompt.chunks(s.n_ubatch) {
            let all = r.eval_all(chunk).unwrap();
            out.push(all[all.len() - n_vocab..].to_vec());
        }
        for _ in 0..n_gen {
            let t = argmax(out.last().unwrap());
            out.push(r.eval(&[t]).unwrap().to_vec());
        }
        out
    };
    let want = [alone(prompts[0]), alone(prompts[1])];
    let accel = PseudoAccel {
        threads: Some(1),
        ..PseudoAccel::new("ACCEL0", 64 << 20)
    };
    for (accels, num_gpu, overlap) in [
        (vec![], NumGpu::Layers(0), true),
        (vec![accel.clone()], NumGpu::Layers(n / 2 + 1), true),
        (vec![accel.clone()], NumGpu::Layers(n / 2 + 1), false),
    ] {
        let what = format!("{name}: 2 sequences, num_gpu {num_gpu}, overlap {overlap}");
        let s = RunSettings {
            n_seq: 2,
            overlap,
            ..settings(num_gpu)
        };
        let mut r = checked_runner(file, &model, &accels, &s, &what);
        // The prompts as entries of at most a batch each, the two sequences interleaved.
        let a: Vec<&[u32]> = prompts[0].chunks(s.n_ubatch).collect();
        let b: Vec<&[u32]> = prompts[1].chunks(s.n_ubatch).collect();
        let mut entries = Vec::new();
        for k in 0..a.len().max(b.len()) {
            entries.extend(a.get(k).map(|&c| (0, c)));
            entries.extend(b.get(k).map(|&c| (1, c)));
        }
        let logits = r.eval_seqs(&entries).unwrap();
        let mut got: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
        for (&(seq, _), l) in entries.iter().zip(logits) {
            got[seq].push(l);
        }
        for _ in 0..n_gen {
            let t = [
                argmax(got[0].last().unwrap()),
                argmax(got[1].last().unwrap()),
            ];
            let step = r.eval_seqs(&[(0, &t[..1]), (1, &t[1..])]).unwrap();
            for (seq, l) in step.into_iter().enumerate() {
                got[seq].push(l);
            }
        }
        for seq in 0..2 {
            assert_eq!(
                got[seq].len(),
                want[seq].len(),
                "{what}: sequence {seq} calls"
            );
            for (c, (g, w)) in got[seq].iter().zip(&want[seq]).enumerate() {
                let same = g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what}: sequence {seq}, call {c}: logits differ");
            }
        }
        assert_eq!(r.pos_of(0), Some(prompts[0].len() + n_gen), "{what}");
        assert_eq!(r.pos_of(1), Some(prompts[1].len() + n_gen), "{what}");
        // A sequence the runner does not have is an error, not a panic.
        let e = r.eval_seqs(&[(2, &[1])]).unwrap_err().to_string();
        assert!(e.contains("sequence 2"), "{what}: {e}");
    }
}

#[test]
fn two_sequences_equal_each_alone() {
    let m = RandomModel::small(4, &[GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16]);
    check_sequences(
        &m.build(),
        [&prompt(13, 96)[..], &prompt(6, 96)[..]],
        3,
        "llama 4 blocks",
    );
    check_sequences(
        &RandomMoe::deepseek2(GgmlType::Q8_0, true).build(),
        [&prompt(9, 96)[..], &prompt(11, 96)[..]],
        2,
        "deepseek2",
    );
}

/// A runner of `s` on the CPU and the posing `accels`, whose allocations equal its plan.
fn checked_runner<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    accels: &[PseudoAccel],
    s: &RunSettings,
    what: &str,
) -> Runner<'m> {
    let ledger = Ledger::new();
    let loaded = load(file, model, Device::cpu(HOST), &posing(accels), s, &ledger)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_ledger_matches_plan(&ledger, &loaded.plan, what);
    loaded.runner
}

/// A prompt evaluated once in sequence 0 and copied to sequences 1 and 2 (2 a shorter
/// prefix, the rest of the prompt fed to it), then all three decoded greedily in lockstep,
/// one batch a step: each call's logits are those of the prompt run alone, bit for bit —
/// on the CPU, and over a split whose posing device holds half the blocks (and so half
/// of every sequence's caches).
fn check_copied_prompt(file: &GgufFile, prompt: &[u32], n_gen: usize, name: &str) {
    let model = Model::bind(file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let s = settings(NumGpu::Layers(0));
    let loaded = load(file, &model, Device::cpu(HOST), &[], &s, &Ledger::new()).unwrap();
    let mut r = loaded.runner;
    let mut want = Vec::new();
    for chunk in prompt.chunks(s.n_ubatch) {
        want = vec![r.eval(chunk).unwrap().to_vec()];
    }
    for _ in 0..n_gen {
        let t = argmax(want.last().unwrap());
        want.push(r.eval(&[t]).unwrap().to_vec());
    }
    let accel = PseudoAccel {
        threads: Some(1),
        ..PseudoAccel::new("ACCEL0", 64 << 20)
    };
    for (accels, num_gpu) in [
        (vec![], NumGpu::Layers(0)),
        (vec![accel], NumGpu::Layers(n / 2 + 1)),
    ] {
        let what = format!("{name}: copied prompt, num_gpu {num_gpu}");
        let s = RunSettings {
            n_seq: 3,
            ..settings(num_gpu)
        };
        let mut r = checked_runner(file, &model, &accels, &s, &what);
        let mut first = Vec::new();
        for chunk in prompt.chunks(s.n_ubatch) {
            first = r.eval(chunk).unwrap().to_vec();
        }
        let len = prompt.len();
        r.copy_seq(0, 1, len).unwrap();
        r.copy_seq(0, 2, len - 3).unwrap();
        assert_eq!(r.pos_of(2), Some(len - 3), "{what}");
        let rest = r.eval_seqs(&[(2, &prompt[len - 3..])]).unwrap();
        let mut got = [vec![first.clone()], vec![first], rest];
        for _ in 0..n_gen {
            let t: Vec<u32> = got.iter().map(|g| argmax(g.last().unwrap())).collect();
            let entries: Vec<(usize, &[u32])> =
                (0..3).map(|q| (q, std::slice::from_ref(&t[q]))).collect();
            for (q, l) in r.eval_seqs(&entries).unwrap().into_iter().enumerate() {
                got[q].push(l);
            }
        }
        for (q, g) in got.iter().enumerate() {
            assert_eq!(g.len(), want.len(), "{what}: sequence {q} calls");
            for (c, (g, w)) in g.iter().zip(&want).enumerate() {
                let same = g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{what}: sequence {q}, call {c}: logits differ");
            }
            assert_eq!(r.pos_of(q), Some(len + n_gen), "{what}");
        }
        // A sequence the runner lacks, or more positions than the source holds: errors.
        let e = r.copy_seq(0, 3, 1).unwrap_err().to_string();
        assert!(e.contains("sequence 3"), "{what}: {e}");
        let e = r.copy_seq(1, 2, len + n_gen + 1).unwrap_err().to_string();
        assert!(e.contains("sequence 1 holds"), "{what}: {e}");
    }
}

#[test]
fn a_prompt_copied_to_other_sequences_continues_as_alone() {
    let m = RandomModel::small(4, &[GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16]);
    check_copied_prompt(&m.build(), &prompt(13, 96), 3, "llama 4 blocks");
    let moe = RandomMoe::deepseek2(GgmlType::Q8_0, true).build();
    check_copied_prompt(&moe, &prompt(11, 96), 2, "deepseek2");
}
