//! Placement by tensor and by expert: `-ot` rules, `--cpu-moe`, `--n-cpu-moe`, and `auto`
//! filling the GPUs with routed experts after every block's attention and FFN. On the
//! DeepSeek-R1 671B Q8_0 header (8 × 80 GiB + 1 TiB) and, scaled down, on a random
//! deepseek2 loaded onto eight posing devices with the ledger checked against the plan.

use strata_engine::devices::PseudoAccel;
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::Ledger;
use strata_engine::load::load;
use strata_engine::model::Model;
use strata_engine::plan::{
    self, parse_bytes, parse_gpus, AutoFill, Device, DeviceKind, NumGpu, Part, Plan, PlanError,
    PlanModel, RunSettings, TensorOverride,
};
use strata_kernels_cpu::GgmlType;
use strata_tests::random_model::RandomMoe;
use strata_tests::split::{argmax, assert_ledger_matches_plan, posing, settings};

fn r1() -> PlanModel {
    let file = GgufFile::open(strata_tests::golden("deepseek-r1-671b-q8_0.header.gguf")).unwrap();
    PlanModel::from_gguf(&file).unwrap()
}

fn r1_devices() -> Vec<Device> {
    let mut d = vec![Device::cpu(parse_bytes("1TiB").unwrap())];
    d.extend(parse_gpus("8x80GiB").unwrap());
    d
}

fn r1_plan(num_gpu: NumGpu, fill: AutoFill, rules: &str) -> Result<Plan, PlanError> {
    let overrides = if rules.is_empty() {
        Vec::new()
    } else {
        TensorOverride::parse_list(rules)?
    };
    r1_with(num_gpu, fill, overrides)
}

/// The R1 plan with the `-ot` rules `overrides`.
fn r1_with(
    num_gpu: NumGpu,
    fill: AutoFill,
    overrides: Vec<TensorOverride>,
) -> Result<Plan, PlanError> {
    plan::plan(
        &r1(),
        &r1_devices(),
        &RunSettings {
            num_gpu,
            fill,
            overrides,
            ..RunSettings::default()
        },
    )
}

/// The error of a plan that must be refused.
fn refused(r: Result<Plan, PlanError>) -> String {
    match r {
        Ok(p) => panic!("planned:\n{}", plan::table::render(&p)),
        Err(e) => e.to_string(),
    }
}

/// Every GPU within its budget, every tensor's bytes counted once on its device.
fn check_budgets(p: &Plan) {
    for (d, dev) in p.devices.iter().enumerate() {
        if dev.device.kind == DeviceKind::Gpu {
            assert!(dev.fits(), "{} over budget", dev.device.name);
        }
        let placed: u64 = p
            .tensors
            .iter()
            .filter(|t| t.device == d)
            .map(|t| t.bytes)
            .sum();
        assert_eq!(dev.weights_bytes, placed, "{}", dev.device.name);
        assert_eq!(dev.kv_bytes, dev.blocks.len() as u64 * p.block_kv_bytes);
    }
}

#[test]
fn r1_experts_fill_the_gpus_after_every_blocks_attention() {
    let p = r1_plan(NumGpu::Auto, AutoFill::Experts, "").unwrap();
    check_budgets(&p);
    // Attention, norms, router and shared experts of all 61 blocks and the output on GPUs.
    assert_eq!(p.num_gpu, 62);
    for (i, b) in p.blocks.iter().enumerate() {
        assert_ne!(b.attention, 0, "block {i}'s attention on the CPU");
        assert_ne!(b.ffn, 0, "block {i}'s FFN on the CPU");
    }
    // ≥ 93% of the routed experts' bytes on GPUs (the layer plan: 48 blocks' worth, 82%).
    let (on, all) = p.expert_bytes_on_gpus();
    assert!(on as f64 >= 0.93 * all as f64, "{on} of {all}");
    // Each MoE block keeps the same share of its experts on its GPU: every one is split,
    // so its GPU and the CPU compute it side by side.
    for (i, b) in p.blocks.iter().enumerate().skip(3) {
        assert_eq!(b.experts.len(), 2, "block {i}: {:?}", b.experts);
        assert_eq!((b.experts[0].device, b.experts[1].device), (b.ffn, 0));
    }
    // A GPU's last gigabytes hold experts: less than one expert (its three slices of
    // 7168 × 2048 Q8_0, 46.8 MB, and their alignment) stays free on each.
    let expert = 3 * (7168 * 2048 / 32 * 34) + 3 * 32;
    for d in p.gpus() {
        let left = d.budget_bytes - d.total_bytes();
        assert!(left < expert, "{}: {left} left", d.device.name);
    }
    // What a token reads: weights of attention etc. everywhere, 8/256 of the experts.
    let read: u64 = (0..p.devices.len()).map(|d| p.read_per_token(d)).sum();
    let table = plan::table::render(&p);
    for want in [
        "routed experts (256 a block, 8 read per token)",
        "read/token",
    ] {
        assert!(table.contains(want), "{want:?} not in\n{table}");
    }
    assert!(read > 30 << 30 && read < 40 << 30, "{read}");

    // The layer plan (Ollama's and llama.cpp's num_gpu) for comparison: 48 blocks.
    let layers = r1_plan(NumGpu::Auto, AutoFill::Layers, "").unwrap();
    assert_eq!(layers.num_gpu, 49);
    let (on_layers, _) = layers.expert_bytes_on_gpus();
    assert!(on > on_layers + (60 << 30), "{on} vs {on_layers}");
}

#[test]
fn r1_cpu_moe_keeps_attention_on_gpus_and_experts_on_the_cpu() {
    // llama.cpp's `-ngl 99 --cpu-moe` (ktransformers' placement).
    let cpu_moe = plan::overrides::from_flags(&[], true, 0).unwrap();
    let p = r1_with(NumGpu::Layers(99), AutoFill::Experts, cpu_moe).unwrap();
    check_budgets(&p);
    assert_eq!(p.expert_bytes_on_gpus().0, 0);
    assert!(p.blocks.iter().all(|b| b.attention != 0 && b.ffn != 0));
    // Everything but the routed experts fits on one card's worth of room, spread over 8.
    let gpu_weights: u64 = p.gpus().map(|d| d.weights_bytes).sum();
    assert!(gpu_weights < 20 << 30, "{gpu_weights}");

    // `--n-cpu-moe 40`: blocks 0-39's experts on the CPU, the rest with their blocks.
    let n_cpu_moe = plan::overrides::from_flags(&[], false, 40).unwrap();
    let p =
        r1_with(NumGpu::Layers(99), AutoFill::Experts, n_cpu_moe).unwrap_or_else(|e| panic!("{e}"));
    check_budgets(&p);
    for (i, b) in p.blocks.iter().enumerate().skip(3) {
        let on_cpu = b.experts.iter().all(|r| r.device == 0);
        assert_eq!(on_cpu, i < 40, "block {i}");
    }
}

#[test]
fn override_rules_place_parts_and_bad_ones_are_named() {
    // A block's FFN and experts to another GPU than its attention.
    let p = r1_plan(NumGpu::Auto, AutoFill::Experts, r"blk\.(3|4)\.ffn_.*=CUDA7").unwrap();
    check_budgets(&p);
    for i in [3, 4] {
        let b = &p.blocks[i];
        assert_eq!(p.devices[b.ffn].device.name, "CUDA7", "block {i}");
        assert!(b.experts.iter().all(|r| r.device == b.ffn));
        assert_ne!(b.attention, b.ffn);
    }
    assert!(p.devices[8].ffn_blocks.contains(&3));
    assert!(plan::table::render(&p).contains("FFN of blocks 3-4 (2)"));

    // A rule naming one stack of the experts moves all three, and the plan says so.
    let p = r1_plan(NumGpu::Auto, AutoFill::Experts, "ffn_up_exps=CPU").unwrap();
    assert_eq!(p.expert_bytes_on_gpus().0, 0);
    let said = p.warnings.join("\n");
    assert!(
        said.contains("116 tensor(s)") && said.contains("'blk.3.ffn_gate_exps.weight' to CPU"),
        "{said}"
    );
    for (rules, want) in [
        // One part's tensors to two devices.
        (
            "ffn_up_exps=CPU,ffn_gate_exps=CUDA1",
            vec![
                "'blk.3.ffn_gate_exps.weight' to CUDA1",
                "'blk.3.ffn_up_exps.weight' to CPU",
                "move together",
            ],
        ),
        ("exps=CUDA9", vec!["no device 'CUDA9'", "CUDA7"]),
        ("exps(=CPU", vec!["exps("]),
        (
            "token_embd=CUDA0",
            vec!["'token_embd.weight' stays on the CPU"],
        ),
    ] {
        let e = refused(r1_plan(NumGpu::Auto, AutoFill::Experts, rules));
        for w in want {
            assert!(e.contains(w), "{rules}: {w:?} not in {e}");
        }
    }
    // Rules that pin more on a GPU than it holds are refused with the device's figures.
    let e = refused(r1_plan(
        NumGpu::Auto,
        AutoFill::Experts,
        r"blk\.[3-9]\.=CUDA0",
    ));
    assert!(e.contains("do not fit") && e.contains("CUDA0"), "{e}");
}

/// A random deepseek2 of `n_layer` blocks (the first dense) with 16 experts.
fn deepseek2(n_layer: usize) -> GgufFile {
    RandomMoe {
        n_layer,
        n_expert: 16,
        ..RandomMoe::deepseek2(GgmlType::Q8_0, true)
    }
    .build()
}

/// The test settings with `auto`, and the plan of `file` on one GPU that holds it all.
fn on_one_roomy_gpu(file: &GgufFile) -> (RunSettings, Plan) {
    let pm = PlanModel::from_gguf(file).unwrap();
    let s = settings(NumGpu::Auto);
    let all = plan::plan(&pm, &[Device::cpu(1 << 40), Device::gpu(0, 1 << 40)], &s).unwrap();
    (s, all)
}

/// The seed case scaled down: a deepseek2 of 9 blocks (1 dense), 16 experts, on 8 posing
/// devices that hold every block's attention and FFN and about four fifths of the experts.
#[test]
fn scaled_seed_case_loads_as_planned_and_runs() {
    let file = deepseek2(9);
    let model = Model::bind(&file, |_| {}).unwrap();
    let (s, all) = on_one_roomy_gpu(&file);
    let gpu = &all.devices[1];
    let (_, experts) = all.expert_bytes_on_gpus();
    // Eight equal devices, together the whole model less a fifth of the experts.
    let each = (gpu.total_bytes() - experts / 5) / 8 + all.scratch_bytes;
    let accels: Vec<PseudoAccel> = (0..8)
        .map(|i| PseudoAccel::new(format!("ACCEL{i}"), each))
        .collect();
    let ledger = Ledger::new();
    let loaded = load(
        &file,
        &model,
        Device::cpu(1 << 40),
        &posing(&accels),
        &s,
        &ledger,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &loaded.plan;
    assert_ledger_matches_plan(&ledger, p, "scaled seed case");
    assert!(p.blocks.iter().all(|b| b.attention != 0 && b.ffn != 0));
    let (on, all_experts) = p.expert_bytes_on_gpus();
    assert!(
        on as f64 >= 0.7 * all_experts as f64 && on < all_experts,
        "{on} of {all_experts}"
    );
    assert!(p.tensors.iter().any(|t| t.experts.is_some()));
    for dev in p.gpus() {
        assert!(dev.fits(), "{}", dev.device.name);
    }
    // The slices the plan lists are the routed experts' stacks.
    for t in p.tensors.iter().filter(|t| t.experts.is_some()) {
        assert!(
            matches!(Part::of(&t.name), Some((_, Part::Experts))),
            "{}",
            t.name
        );
    }

    // It generates what the CPU alone does (greedy tokens; shares of a split FFN add in
    // another order, see split_equivalence.rs).
    let mut r = loaded.runner;
    let mut cpu = load(
        &file,
        &model,
        Device::cpu(1 << 40),
        &[],
        &settings(NumGpu::Layers(0)),
        &Ledger::new(),
    )
    .unwrap()
    .runner;
    let prompt: Vec<u32> = (0..7).map(|i| (i * 13 + 5) % 96).collect();
    let (mut a, mut b) = (
        cpu.eval(&prompt).unwrap().to_vec(),
        r.eval(&prompt).unwrap().to_vec(),
    );
    for _ in 0..4 {
        let (ta, tb) = (argmax(&a), argmax(&b));
        assert_eq!(ta, tb);
        a = cpu.eval(&[ta]).unwrap().to_vec();
        b = r.eval(&[tb]).unwrap().to_vec();
    }
}

/// A device that allows less than it reports: the load re-plans with fewer experts on it,
/// says so in one line, and still allocates exactly what the new plan says.
#[test]
fn a_device_that_allows_less_gives_up_experts() {
    let file = deepseek2(5);
    let model = Model::bind(&file, |_| {}).unwrap();
    let (s, all) = on_one_roomy_gpu(&file);
    let (_, experts) = all.expert_bytes_on_gpus();
    let reports = all.devices[1].total_bytes();
    let allows = reports - experts / 3;
    let accel = PseudoAccel::capped("ACCEL0", reports, allows);
    let ledger = Ledger::new();
    let loaded = load(
        &file,
        &model,
        Device::cpu(1 << 40),
        &posing(&[accel]),
        &s,
        &ledger,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.recoveries.is_empty());
    assert!(
        loaded.recoveries[0].contains("routed expert(s) to CPU"),
        "{:?}",
        loaded.recoveries
    );
    assert_ledger_matches_plan(&ledger, &loaded.plan, "after recovery");
    let (on, all_experts) = loaded.plan.expert_bytes_on_gpus();
    assert!(on > 0 && on < all_experts);
}
