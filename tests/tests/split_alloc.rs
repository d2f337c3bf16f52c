//! Allocation that matches the plan, recovery from failed allocations, and the copies at
//! device boundaries, on CPU devices posing as accelerators.

use strata_engine::devices::PseudoAccel;
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::DeviceId;
use strata_engine::ledger::Ledger;
use strata_engine::load::{load, LoadError};
use strata_engine::model::{Matrix, Model};
use strata_engine::plan::{Device, NumGpu, Plan, RunSettings};
use strata_engine::runner::Placement;
use strata_engine::runner::{Runner, RunnerOptions};
use strata_kernels_cpu::{isa, packed, GgmlType};
use strata_tests::random_model::{RandomModel, RandomMoe};
use strata_tests::split::{argmax, assert_ledger_matches_plan, boundaries, posing, settings};

const HOST: u64 = 1 << 40;

fn model_file() -> GgufFile {
    RandomModel::small(
        5,
        &[
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::F16,
            GgmlType::Q5_1,
        ],
    )
    .build()
}

fn accels(sizes_mib: &[u64]) -> Vec<PseudoAccel> {
    sizes_mib
        .iter()
        .enumerate()
        .map(|(i, s)| PseudoAccel::new(format!("ACCEL{i}"), s << 20))
        .collect()
}

/// The layers each accelerator holds copies of are the ones the plan gives it; the CPU
/// holds copies (repacked) of its blocks that have a matrix its kernels read packed, and of
/// the output layer if that is packed, and reads the rest from the mapped file.
fn assert_copies_follow_plan(model: &Model, runner: &Runner, plan: &Plan) {
    let packs = |m: &Matrix| packed::supports(m.ty, isa::active());
    for d in runner.devices() {
        let held = d.backend.holdings();
        let DeviceId::Accel(i) = d.id else {
            let b = &model.blocks;
            let want: Vec<usize> = plan.devices[0]
                .blocks
                .iter()
                .copied()
                .filter(|&i| {
                    let mut any = false;
                    b[i].each_matrix(|_, m| any |= packs(m));
                    any
                })
                .collect();
            assert_eq!(held.blocks, want, "CPU copies");
            let output = plan.devices[0].output && packs(&model.output);
            assert_eq!(held.output, output, "CPU output copy");
            continue;
        };
        let planned = &plan.devices[i as usize + 1];
        assert_eq!(held.blocks, planned.blocks, "{}", d.id);
        assert_eq!(held.output, planned.output, "{}", d.id);
    }
}

#[test]
fn allocated_bytes_equal_planned_bytes_on_every_device() {
    allocated_equals_planned(&model_file());
    // Experts, shared experts, a dense lead block and latent caches (ledger == plan).
    allocated_equals_planned(&RandomMoe::qwen3moe(GgmlType::Q4_0).build());
    allocated_equals_planned(&RandomMoe::deepseek2(GgmlType::Q8_0, true).build());
    allocated_equals_planned(&RandomMoe::deepseek2(GgmlType::Q4_0, false).build());
}

fn allocated_equals_planned(file: &GgufFile) {
    let model = Model::bind(file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let decode_only = RunSettings {
        n_outputs: 1,
        n_ubatch: 4,
        n_batch: 4,
        kv_type: GgmlType::F32,
        n_ctx: 100,
        ..settings(NumGpu::Auto)
    };
    let split = RunSettings {
        tensor_split: Some(vec![1.0, 3.0]),
        ..settings(NumGpu::Layers(n))
    };
    for (sizes, s) in [
        (vec![], settings(NumGpu::Layers(0))),
        (vec![64], settings(NumGpu::Layers(1))),
        (vec![64], settings(NumGpu::Layers(3))),
        (vec![64], settings(NumGpu::Layers(n + 1))),
        (vec![64, 64], settings(NumGpu::Auto)),
        (vec![64, 64], split),
        (vec![8, 16, 32], decode_only),
    ] {
        let what = format!("{} on {sizes:?} MiB", s.num_gpu);
        let ledger = Ledger::new();
        let loaded = load(
            file,
            &model,
            Device::cpu(HOST),
            &posing(&accels(&sizes)),
            &s,
            &ledger,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_ledger_matches_plan(&ledger, &loaded.plan, &what);
        assert_copies_follow_plan(&model, &loaded.runner, &loaded.plan);
        drop(loaded);
        // Dropping the runner frees every buffer.
        for (id, name, u) in ledger.all() {
            assert_eq!(u.total(), 0, "{what}: {name} ({id}) still holds {u:?}");
        }
    }
}

#[test]
fn a_split_with_k_boundaries_makes_k_copies_per_forward_call() {
    let file = model_file();
    let model = Model::bind(&file, |_| {}).unwrap();
    let (n, e, nv) = (
        model.cfg.n_layer,
        model.cfg.n_embd as u64,
        model.cfg.n_vocab as u64,
    );
    for (sizes, num_gpu) in [
        (vec![], NumGpu::Layers(0)),
        (vec![64], NumGpu::Layers(1)),
        (vec![64], NumGpu::Layers(3)),
        (vec![64], NumGpu::Layers(n + 1)),
        (vec![64, 64], NumGpu::Layers(n + 1)),
        (vec![64, 64, 64], NumGpu::Layers(4)),
    ] {
        let ledger = Ledger::new();
        let s = settings(num_gpu);
        let mut loaded = load(
            &file,
            &model,
            Device::cpu(HOST),
            &posing(&accels(&sizes)),
            &s,
            &ledger,
        )
        .unwrap();
        let plan = &loaded.plan;
        let k = boundaries(plan);
        let logits_move = plan.output_device != 0;
        for tokens in [&[3u32, 4, 5][..], &[7]] {
            ledger.reset_copies();
            loaded.runner.eval_all(tokens).unwrap();
            let all = ledger.all();
            let copies: u64 = all.iter().map(|(_, _, u)| u.copies_in).sum();
            let bytes: u64 = all.iter().map(|(_, _, u)| u.bytes_in).sum();
            let rows = tokens.len() as u64;
            // Every crossing moves the residual stream, except the last one when the output
            // layer is off the CPU: that one brings the logits home.
            let expect_bytes = if logits_move {
                (k as u64 - 1) * rows * e * 4 + rows * nv * 4
            } else {
                k as u64 * rows * e * 4
            };
            assert_eq!(copies, k as u64, "{num_gpu} on {sizes:?}: copies");
            assert_eq!(bytes, expect_bytes, "{num_gpu} on {sizes:?}: bytes copied");
        }
    }
}

/// Runs the prompt and a few greedy steps; returns the logits of every step.
fn logits_of(runner: &mut Runner, prompt: &[u32]) -> Vec<f32> {
    let mut out = runner.eval_all(prompt).unwrap();
    for _ in 0..3 {
        let t = argmax(&out[out.len() - runner.model().cfg.n_vocab..]);
        out.extend_from_slice(runner.eval(&[t]).unwrap());
    }
    out
}

#[test]
fn a_device_that_allows_less_than_it_reports_loses_layers_with_one_line_each() {
    let file = model_file();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let prompt = [1u32, 9, 17, 25, 33];
    let ledger = Ledger::new();
    let cpu = load(
        &file,
        &model,
        Device::cpu(HOST),
        &[],
        &settings(NumGpu::Layers(0)),
        &ledger,
    )
    .unwrap();
    let reference = logits_of(&mut { cpu.runner }, &prompt);

    // What the device holds with num_gpu = n − 1: its real budget. It reports 64 MiB, so
    // the planner first puts all n + 1 layers there; two allocations fail, each moving one
    // block to the CPU.
    let fits = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&accels(&[64])),
        &settings(NumGpu::Layers(n - 1)),
        &Ledger::new(),
    )
    .unwrap()
    .plan
    .devices[1]
        .total_bytes();
    for num_gpu in [NumGpu::Auto, NumGpu::Layers(n + 1)] {
        let ledger = Ledger::new();
        let capped = [PseudoAccel::capped("ACCEL0", 64 << 20, fits)];
        let loaded = load(
            &file,
            &model,
            Device::cpu(HOST),
            &posing(&capped),
            &settings(num_gpu),
            &ledger,
        )
        .unwrap_or_else(|e| panic!("{num_gpu}: {e}"));
        let lines = &loaded.recoveries;
        assert_eq!(lines.len(), 2, "{num_gpu}: {lines:#?}");
        for (line, (block, from, to)) in lines.iter().zip([(0, n + 1, n), (1, n, n - 1)]) {
            assert!(line.starts_with("strata: allocation of "), "{line}");
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains("on ACCEL0 failed"), "{line}");
            assert!(
                line.contains(&format!("moved block {block} (1) to CPU")),
                "{line}"
            );
            assert!(line.contains(&format!("(num_gpu {from} → {to})")), "{line}");
        }
        assert_eq!(loaded.plan.num_gpu, n - 1);
        assert_ledger_matches_plan(&ledger, &loaded.plan, "after recovery");
        assert!(ledger.usage(DeviceId::Accel(0)).total() <= fits);
        let mut runner = loaded.runner;
        assert_eq!(
            logits_of(&mut runner, &prompt),
            reference,
            "{num_gpu}: logits"
        );
    }
}

#[test]
fn recovery_over_several_accelerators_and_the_output_layer() {
    let file = model_file();
    let model = Model::bind(&file, |_| {}).unwrap();
    let n = model.cfg.n_layer;
    let prompt = [2u32, 4, 8, 16];
    let cpu = load(
        &file,
        &model,
        Device::cpu(HOST),
        &[],
        &settings(NumGpu::Layers(0)),
        &Ledger::new(),
    )
    .unwrap();
    let reference = logits_of(&mut { cpu.runner }, &prompt);

    // Two devices; the second (which holds the output layer) allows only its scratch and
    // half of what it is planned: blocks leave it, to ACCEL0 or the CPU.
    let two = accels(&[64, 64]);
    let planned = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&two),
        &settings(NumGpu::Layers(n + 1)),
        &Ledger::new(),
    )
    .unwrap()
    .plan;
    let d1 = &planned.devices[2];
    let budget = d1.scratch_bytes + (d1.total_bytes() - d1.scratch_bytes) / 2;
    let capped = [
        two[0].clone(),
        PseudoAccel::capped("ACCEL1", 64 << 20, budget),
    ];
    let ledger = Ledger::new();
    let loaded = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&capped),
        &settings(NumGpu::Layers(n + 1)),
        &ledger,
    )
    .unwrap();
    assert!(!loaded.recoveries.is_empty());
    assert!(loaded
        .recoveries
        .iter()
        .all(|l| l.contains("on ACCEL1 failed")));
    assert!(ledger.usage(DeviceId::Accel(1)).total() <= budget);
    assert_ledger_matches_plan(&ledger, &loaded.plan, "two devices after recovery");
    let mut runner = loaded.runner;
    assert_eq!(logits_of(&mut runner, &prompt), reference);

    // A device that cannot even hold its scratch: everything ends on the CPU.
    let ledger = Ledger::new();
    let tiny = [PseudoAccel::capped("ACCEL0", 64 << 20, 1024)];
    let loaded = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&tiny),
        &settings(NumGpu::Auto),
        &ledger,
    )
    .unwrap();
    assert_eq!(loaded.plan.num_gpu, 0);
    assert_eq!(loaded.recoveries.len(), n + 1, "{:#?}", loaded.recoveries);
    assert!(
        loaded.recoveries[n].contains("moved output to CPU"),
        "{}",
        loaded.recoveries[n]
    );
    assert_eq!(ledger.usage(DeviceId::from_plan_index(1)).total(), 0);
    let mut runner = loaded.runner;
    assert_eq!(logits_of(&mut runner, &prompt), reference);
}

#[test]
fn accelerator_placements_need_the_loader() {
    let file = model_file();
    let model = Model::bind(&file, |_| {}).unwrap();
    let mut opts = RunnerOptions::cpu(model.cfg.n_layer, 16);
    opts.placement = Placement {
        output: DeviceId::Accel(0),
        ..Placement::all_cpu(model.cfg.n_layer)
    };
    let e = Runner::new(&model, opts).err().expect("refused");
    assert!(e.to_string().contains("ACCEL0"), "{e}");

    // An unsupported plan is refused by the loader with a reason, not a panic: logits for
    // 3 rows of a batch (the runner keeps 1 or all).
    let s = RunSettings {
        n_outputs: 3,
        ..settings(NumGpu::Layers(0))
    };
    let e = load(&file, &model, Device::cpu(HOST), &[], &s, &Ledger::new())
        .err()
        .expect("refused");
    assert!(matches!(e, LoadError::Unsupported(_)), "{e}");
}

/// With tracing on, one forward call leaves a span per unit and per copy, on the device
/// that did it, in the order they ran and without overlapping (the runner takes turns);
/// with tracing off, none.
#[test]
fn tracing_records_each_unit_and_copy_in_order() {
    use strata_engine::runner::SpanKind::{Compute, Transfer};
    let file = model_file();
    let model = Model::bind(&file, |_| {}).unwrap();
    let ledger = Ledger::new();
    // 5 blocks: num_gpu 3 puts blocks 3-4 and the output layer on ACCEL0.
    let mut loaded = load(
        &file,
        &model,
        Device::cpu(HOST),
        &posing(&accels(&[64])),
        &settings(NumGpu::Layers(3)),
        &ledger,
    )
    .unwrap();
    let r = &mut loaded.runner;
    r.eval(&[3, 4]).unwrap();
    assert!(r.take_spans().unwrap().is_empty() && r.trace_epoch().is_none());

    r.set_tracing(true);
    r.eval(&[5]).unwrap();
    let spans = r.take_spans().unwrap();
    let (cpu, acc) = (DeviceId::Cpu, DeviceId::Accel(0));
    let got: Vec<_> = spans
        .iter()
        .map(|s| (s.device, s.kind, s.what.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (cpu, Compute, "embed"),
            (cpu, Compute, "blocks 0-2"),
            (acc, Transfer, "copy x → ACCEL0"),
            // Units in a row on one device go to it in one call: one span.
            (acc, Compute, "blocks 3-4, output"),
            (cpu, Transfer, "logits → CPU"),
        ]
    );
    for w in spans.windows(2) {
        assert!(w[0].start <= w[0].end && w[0].end <= w[1].start, "{w:?}");
    }
    // Taken spans are gone; the busy accounting goes on beside the trace.
    assert!(r.take_spans().unwrap().is_empty());
    assert!(r.devices().iter().all(|d| !d.busy.is_zero()));
    r.set_tracing(false);
    r.eval(&[6]).unwrap();
    assert!(r.take_spans().unwrap().is_empty());
}
