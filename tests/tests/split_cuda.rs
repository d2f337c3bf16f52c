//! Split equivalence on a real GPU (SmolLM2 here; the MoE files below): SmolLM2 loaded
//! with its first num_gpu layers on the first CUDA device, for every num_gpu from 0 (all
//! CPU) to n_layer + 1 (every block and the output layer on the GPU), gives the all-CPU
//! run's answer: teacher-forced logits within a derived tolerance at every position of the
//! golden sequences, and greedy tokens equal until a near tie. Skips (passes) without a
//! CUDA device or without the model.
//!
//! Tolerance. The GPU computes the same quantized formulas (q8_1 activations, as the CPU
//! pairs with Q4_1) with other kernels, so its f32 sums run in another order. How far order
//! alone moves SmolLM2's logits, through activations that cross an int8 rounding boundary
//! and travel through the later layers, is measured in `engine_golden.rs` between two of our
//! own CPU kernel levels: 0.6 to 0.9 logit, bounded there by S_MAX = 1.0. The GPU is one more
//! such implementation, within S of any other, so it lies within 2·S_MAX of the CPU. Batches
//! here are of 8 tokens, which the GPU runs through its matvec kernels on the same q8_1
//! activations (not the f32 matmul that larger prefill batches take).

use strata_engine::devices::{Accelerator, CudaAccel};
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::Ledger;
use strata_engine::load::load;
use strata_engine::model::Model;
use strata_engine::plan::{Device, NumGpu, Plan, RunSettings, TensorOverride};
use strata_engine::runner::Runner;
use strata_tests::forward::ids;
use strata_tests::split::{argmax, assert_ledger_matches_plan, settings};

const S_MAX: f32 = 1.0;
const TOL: f32 = 2.0 * S_MAX;
const HOST: u64 = 1 << 40;
/// Greedy tokens compared per prompt.
const N_GREEDY: usize = 16;

fn cuda() -> Option<CudaAccel> {
    match CudaAccel::discover() {
        Ok(d) if !d.is_empty() => Some(d[0].clone()),
        Ok(_) => {
            eprintln!("skipped: no CUDA device (the driver shows none)");
            None
        }
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn runner<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    accels: &[Accelerator],
    num_gpu: usize,
) -> Runner<'m> {
    let what = format!("num_gpu {num_gpu}");
    let s = settings(NumGpu::Layers(num_gpu));
    let (r, plan) = runner_with(file, model, accels, &s, &what);
    assert_eq!(plan.num_gpu, num_gpu.min(model.cfg.n_layer + 1), "{what}");
    r
}

/// Loads `file` with settings `s`, checking the allocation against the plan.
fn runner_with<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    accels: &[Accelerator],
    s: &RunSettings,
    what: &str,
) -> (Runner<'m>, Plan) {
    let ledger = Ledger::new();
    let loaded = load(file, model, Device::cpu(HOST), accels, s, &ledger)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        loaded.recoveries.is_empty(),
        "{what}: {:?}",
        loaded.recoveries
    );
    assert_ledger_matches_plan(&ledger, &loaded.plan, what);
    (loaded.runner, loaded.plan)
}

/// The ids among the 10 largest of `a` or of `b`.
fn top_ids(a: &[f32], b: &[f32]) -> Vec<usize> {
    let top = |l: &[f32]| {
        let mut i: Vec<usize> = (0..l.len()).collect();
        i.sort_by(|&x, &y| l[y].total_cmp(&l[x]));
        i.truncate(10);
        i
    };
    let mut ids = top(a);
    ids.extend(top(b));
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The all-CPU run of one case: teacher-forced logits, greedy tokens, the logits each
/// greedy step saw.
type CpuAnswer = (Vec<f32>, Vec<u32>, Vec<Vec<f32>>);

/// Greedy decoding of `n` tokens after `prompt`, with the logits each step saw.
fn greedy(r: &mut Runner, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let n_vocab = r.model().cfg.n_vocab;
    let all = r.eval_all(prompt).unwrap();
    let mut l = all[all.len() - n_vocab..].to_vec();
    let (mut toks, mut seen) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = argmax(&l);
        toks.push(t);
        seen.push(l);
        l = r.eval_all(&[t]).unwrap();
    }
    (toks, seen)
}

#[test]
fn smollm2_on_the_gpu_gives_the_cpu_answer_for_every_num_gpu() {
    let Some(gpu) = cuda() else { return };
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n_vocab = model.cfg.n_vocab;
    let golden = strata_tests::forward::smollm2();
    let cases = golden["cases"].as_array().unwrap();
    let accels = [Accelerator::from(gpu.clone())];
    eprintln!("device: {} ({})", gpu.name(), gpu.model);

    // The CPU's answers, once.
    let cpu: Vec<CpuAnswer> = cases
        .iter()
        .map(|c| {
            let seq = ids(&c["teacher_forced_ids"]);
            let forced = runner(&file, &model, &[], 0).eval_all(&seq).unwrap();
            let mut r = runner(&file, &model, &[], 0);
            let (toks, seen) = greedy(&mut r, &ids(&c["prompt_ids"]), N_GREEDY);
            (forced, toks, seen)
        })
        .collect();

    let mut worst = 0.0f32;
    for num_gpu in 0..=model.cfg.n_layer + 1 {
        let mut same_greedy = 0;
        for (c, (cpu_forced, cpu_toks, cpu_seen)) in cases.iter().zip(&cpu) {
            let prompt = c["prompt"].as_str().unwrap();
            let what = format!("num_gpu {num_gpu}, {prompt:?}");
            let seq = ids(&c["teacher_forced_ids"]);
            let forced = runner(&file, &model, &accels, num_gpu)
                .eval_all(&seq)
                .unwrap();
            for (t, (g, h)) in forced
                .chunks_exact(n_vocab)
                .zip(cpu_forced.chunks_exact(n_vocab))
                .enumerate()
            {
                for id in top_ids(g, h) {
                    let d = (g[id] - h[id]).abs();
                    worst = worst.max(d);
                    assert!(
                        d <= TOL,
                        "{what}: position {t}, token {id}: GPU {} vs CPU {}",
                        g[id],
                        h[id]
                    );
                }
            }

            // Greedy: the same tokens, until a step where the CPU rates the GPU's choice
            // within TOL of its own (a near tie that either side may break).
            let mut r = runner(&file, &model, &accels, num_gpu);
            let (toks, _) = greedy(&mut r, &ids(&c["prompt_ids"]), N_GREEDY);
            let k = toks
                .iter()
                .zip(cpu_toks)
                .take_while(|(a, b)| a == b)
                .count();
            if k < N_GREEDY {
                let l = &cpu_seen[k];
                let (ours, theirs) = (l[toks[k] as usize], l[cpu_toks[k] as usize]);
                assert!(
                    theirs - ours <= TOL,
                    "{what}: greedy step {k}: GPU chose {} ({ours}), CPU {} ({theirs})",
                    toks[k],
                    cpu_toks[k]
                );
            }
            same_greedy += k;
        }
        eprintln!(
            "num_gpu {num_gpu:2}: worst |GPU − CPU| logit so far {worst:.4}; greedy tokens equal: {same_greedy}/{}",
            N_GREEDY * cases.len()
        );
    }
}

// Mixture-of-experts on a real GPU: the tiny qwen3moe golden files (Q8_0, Q4_0 and Q4_K
// experts) and the deepseek2 ones (latent attention: with q_lora and split attn_k_b/attn_v_b
// under YaRN, the same weights as attn_kv_b, and a Lite file with attn_q and attn_kv_b) with
// their blocks on the first CUDA device, whole and split across it and the CPU, give the
// all-CPU run's answer: teacher-forced logits within a derived tolerance at
// every position, greedy tokens equal until a near tie. Skips (passes) without a CUDA
// device.
//
// Placements, each a path of the CUDA backend:
// - every block on the GPU, prompt batches of 8 (the experts' matvec over the ids the
//   GPU's router wrote) and of 32 (grouped by expert: sort, gather, grouped matmul, in two
//   passes of 16 tokens);
// - `--cpu-moe`: attention, router and shared parts on the GPU, the routed experts on the
//   CPU (the routing goes to the host, the CPU's share comes back and is added);
// - attention on the CPU (`-ot attn=CPU`), the FFN with every expert on the GPU;
// - `auto` on a GPU with room for part of the experts: blocks whose experts are split
//   between the GPU and the CPU, each computing the slots of its own.
//
// Tolerance. The GPU pairs every quantized format with q8_1 activations and sums in
// another order; how far order alone moves these models' logits is measured between our
// own CPU kernel levels in `engine_golden_moe.rs` and bounded there by S_MAX = 0.25. The
// GPU is one more such implementation, within S of any other: within 2·S_MAX of the CPU.

const MOE_S_MAX: f32 = 0.25;
const MOE_TOL: f32 = 2.0 * MOE_S_MAX;
const MOE_GREEDY: usize = 8;
const FILES: [&str; 6] = [
    "tiny-qwen3moe-q8_0",
    "tiny-qwen3moe-q4_0",
    "tiny-qwen3moe-q4_k",
    "tiny-deepseek2",
    "tiny-deepseek2-kvb",
    "tiny-deepseek2-lite",
];

/// Teacher-forced logits of `seq`, then greedy tokens after `prompt` with the logits each
/// step saw.
struct Answer {
    forced: Vec<f32>,
    tokens: Vec<u32>,
    seen: Vec<Vec<f32>>,
}

fn moe_answer(mk: &mut dyn FnMut() -> Runner<'static>, seq: &[u32], prompt: &[u32]) -> Answer {
    let forced = mk().eval_all(seq).unwrap();
    let (tokens, seen) = greedy(&mut mk(), prompt, MOE_GREEDY);
    Answer {
        forced,
        tokens,
        seen,
    }
}

/// `got` against the CPU's `cpu`: every logit within MOE_TOL, greedy tokens equal until a step
/// where the CPU rates the GPU's choice within MOE_TOL of its own. Returns the largest logit
/// difference.
fn moe_compare(cpu: &Answer, got: &Answer, what: &str) -> f32 {
    let mut worst = 0f32;
    for (i, (a, b)) in got.forced.iter().zip(&cpu.forced).enumerate() {
        let d = (a - b).abs();
        worst = worst.max(d);
        assert!(d <= MOE_TOL, "{what}: logit {i}: GPU {a} vs CPU {b}");
    }
    let k = got
        .tokens
        .iter()
        .zip(&cpu.tokens)
        .take_while(|(a, b)| a == b)
        .count();
    if k < MOE_GREEDY {
        let l = &cpu.seen[k];
        let (ours, theirs) = (l[got.tokens[k] as usize], l[cpu.tokens[k] as usize]);
        assert!(
            theirs - ours <= MOE_TOL,
            "{what}: greedy step {k}: GPU chose {} ({ours}), CPU {} ({theirs})",
            got.tokens[k],
            cpu.tokens[k]
        );
    }
    worst
}

#[test]
fn moe_and_mla_on_the_gpu_whole_and_split_give_the_cpu_answer() {
    let Some(gpu) = cuda() else { return };
    eprintln!("device: {} ({})", gpu.name(), gpu.model);
    for stem in FILES {
        let path = strata_tests::golden(&format!("moe/{stem}.gguf"));
        // Leaked so that runners made in closures may borrow them for the whole test.
        let file: &'static GgufFile = Box::leak(Box::new(GgufFile::open(&path).unwrap()));
        let model: &'static Model = Box::leak(Box::new(Model::bind(file, |_| {}).unwrap()));
        let n = model.cfg.n_layer;
        let g: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(strata_tests::golden(&format!("moe/{stem}.json"))).unwrap(),
        )
        .unwrap();
        let case = &g["cases"][0];
        let (seq, prompt) = (ids(&case["teacher_forced_ids"]), ids(&case["prompt_ids"]));

        let base = |num_gpu: NumGpu, n_batch: usize| RunSettings {
            n_batch,
            n_ubatch: n_batch,
            n_outputs: n_batch,
            ..settings(num_gpu)
        };
        let cpu = moe_answer(
            &mut || runner_with(file, model, &[], &base(NumGpu::Layers(0), 8), "cpu").0,
            &seq,
            &prompt,
        );

        let whole = vec![Accelerator::from(gpu.clone())];
        let mut cases: Vec<(String, RunSettings, Vec<Accelerator>)> = vec![
            (
                "every block, batches of 8".into(),
                base(NumGpu::Layers(n + 1), 8),
                whole.clone(),
            ),
            (
                "every block, batches of 32".into(),
                base(NumGpu::Layers(n + 1), 32),
                whole.clone(),
            ),
            (
                "--cpu-moe".into(),
                RunSettings {
                    overrides: vec![TensorOverride::cpu_moe()],
                    ..base(NumGpu::Layers(n + 1), 32)
                },
                whole.clone(),
            ),
            (
                "-ot attn=CPU".into(),
                RunSettings {
                    overrides: TensorOverride::parse_list(r"attn_=CPU").unwrap(),
                    ..base(NumGpu::Layers(n + 1), 8)
                },
                whole.clone(),
            ),
        ];
        // `auto` on a GPU with room for its scratch and half of the layers' bytes.
        let (_, probe) = runner_with(file, model, &whole, &base(NumGpu::Auto, 32), "probe");
        let layers: u64 = probe.block_weights.iter().sum::<u64>()
            + n as u64 * probe.block_kv_bytes
            + probe.output_gpu_bytes;
        let small = CudaAccel {
            free_bytes: probe.scratch_bytes + layers / 2,
            ..gpu.clone()
        };
        cases.push((
            "auto on half the room".into(),
            base(NumGpu::Auto, 32),
            vec![Accelerator::from(small)],
        ));

        for (name, s, accels) in &cases {
            let what = format!("{stem}: {name}");
            let (_, plan) = runner_with(file, model, accels, s, &what);
            if name.starts_with("auto") {
                let (on_gpu, all) = plan.expert_bytes_on_gpus();
                assert!(on_gpu > 0 && on_gpu < all, "{what}: {on_gpu} of {all}");
                assert!(plan.blocks.iter().any(|b| b.whole().is_none()), "{what}");
            }
            let got = moe_answer(
                &mut || runner_with(file, model, accels, s, &what).0,
                &seq,
                &prompt,
            );
            let worst = moe_compare(&cpu, &got, &what);
            eprintln!("{what}: worst |GPU − CPU| logit {worst:.4}");
        }
    }
}

// A timeline on a GPU: its spans come from events in its stream (nothing waits for them),
// so a traced run computes what an untraced one does, and every GPU span lies within the
// run, its end after its start. Placement: the tiny qwen3moe file with `--cpu-moe`, so a
// block's work alternates between the GPU (attention, router, shared experts) and the
// CPU (routed experts).
#[test]
fn a_traced_gpu_run_computes_the_same_and_times_its_spans_by_events() {
    let Some(gpu) = cuda() else { return };
    let path = strata_tests::golden("moe/tiny-qwen3moe-q4_k.gguf");
    let file = GgufFile::open(&path).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let s = RunSettings {
        overrides: vec![TensorOverride::cpu_moe()],
        ..settings(NumGpu::Layers(n + 1))
    };
    let accels = [Accelerator::from(gpu)];
    let prompt: Vec<u32> = (1..=12).collect();
    let (mut plain, _) = runner_with(&file, &model, &accels, &s, "untraced");
    let want = plain.eval_all(&prompt).unwrap();
    let (mut r, _) = runner_with(&file, &model, &accels, &s, "traced");
    r.set_tracing(true);
    let epoch = r.trace_epoch().unwrap();
    let got = r.eval_all(&prompt).unwrap();
    let window = epoch.elapsed();
    let spans = r.take_spans().unwrap();
    assert_eq!(got, want, "tracing changed the result");
    let on_gpu: Vec<_> = spans
        .iter()
        .filter(|s| s.device != strata_engine::ledger::DeviceId::Cpu)
        .collect();
    assert!(!on_gpu.is_empty(), "no GPU spans in {spans:?}");
    for s in &spans {
        assert!(
            s.start <= s.end && s.end <= window,
            "{s:?} (window {window:?})"
        );
    }
}

// Several sequences on a GPU: each block's cache holds every sequence's rows, each row of a
// batch finding its own through the scratch's positions and first cache rows. Two
// sequences fed as entries of one call, then decoded in lockstep, one batch of two rows a
// step, give each sequence's logits bit for bit as the same sequence alone on the GPU (a
// batch of up to 8 rows runs the matvec kernels a row at a time; attention is a CTA a
// row), and a sequence copied from another continues as it does. The tiny deepseek2 file:
// its latent caches, every block on the GPU.
#[test]
fn two_sequences_on_the_gpu_equal_each_alone() {
    let Some(gpu) = cuda() else { return };
    let path = strata_tests::golden("moe/tiny-deepseek2.gguf");
    let file = GgufFile::open(&path).unwrap();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let accels = [Accelerator::from(gpu)];
    let prompts: [Vec<u32>; 2] = [(1..=8).collect(), (20..=27).collect()];
    let steps = 4;
    let alone = |p: &[u32]| -> Vec<Vec<f32>> {
        let s = settings(NumGpu::Layers(n + 1));
        let (mut r, _) = runner_with(&file, &model, &accels, &s, "alone");
        let mut out = vec![r.eval(p).unwrap().to_vec()];
        for _ in 0..steps {
            let t = argmax(out.last().unwrap());
            out.push(r.eval(&[t]).unwrap().to_vec());
        }
        out
    };
    let want = [alone(&prompts[0]), alone(&prompts[1])];
    let s = RunSettings {
        n_seq: 2,
        ..settings(NumGpu::Layers(n + 1))
    };
    let (mut r, _) = runner_with(&file, &model, &accels, &s, "two sequences");
    let first = r
        .eval_seqs(&[(0, &prompts[0][..]), (1, &prompts[1][..])])
        .unwrap();
    let mut got = [vec![first[0].clone()], vec![first[1].clone()]];
    for _ in 0..steps {
        let t = [
            argmax(got[0].last().unwrap()),
            argmax(got[1].last().unwrap()),
        ];
        let l = r.eval_seqs(&[(0, &t[..1]), (1, &t[1..])]).unwrap();
        got[0].push(l[0].clone());
        got[1].push(l[1].clone());
    }
    for seq in 0..2 {
        for (c, (g, w)) in got[seq].iter().zip(&want[seq]).enumerate() {
            let same = g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "sequence {seq}, call {c}: the logits differ from it alone"
            );
        }
    }
    // Sequence 1 continues from a copy of sequence 0's caches (`copy_seq`, device to
    // device): the same token gives both the same logits.
    let len = r.pos_of(0).unwrap();
    r.copy_seq(0, 1, len).unwrap();
    let t = [argmax(got[0].last().unwrap()); 2];
    let l = r.eval_seqs(&[(0, &t[..1]), (1, &t[1..])]).unwrap();
    let same = l[0]
        .iter()
        .zip(&l[1])
        .all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same, "a copied sequence continues as its source does");
}
