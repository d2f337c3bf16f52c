//! The motivating case: DeepSeek-R1 671B at Q8_0 on 8×80 GiB GPUs and 1 TiB of host memory.
//! Ollama planned 51 layers (7,7,7,6,6,6,6,6) and the load died; 7 MoE blocks alone are
//! more than an 80 GiB card. The header-only GGUF was written by gguf-py's writer
//! (`scripts/make-deepseek-header.py`).

use strata_engine::gguf::GgufFile;
use strata_engine::plan::{
    self, parse_bytes, parse_gpus, AutoFill, Device, NumGpu, Plan, PlanError, PlanModel, Role,
    RunSettings,
};

const GIB: u64 = 1 << 30;

fn model() -> PlanModel {
    let path = strata_tests::golden("deepseek-r1-671b-q8_0.header.gguf");
    let file = GgufFile::open(&path).expect("the header-only DeepSeek GGUF opens");
    assert_eq!(
        file.missing_data().len(),
        file.tensors().len(),
        "header only: no tensor data"
    );
    PlanModel::from_gguf(&file).unwrap()
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu(parse_bytes("1TiB").unwrap())];
    d.extend(parse_gpus("8x80GiB").unwrap());
    d
}

/// The layer plan (whole layers, as Ollama's num_gpu counts them); `auto`'s default, the
/// expert plan, is tested in plan_experts.rs.
fn run(num_gpu: NumGpu) -> Result<Plan, PlanError> {
    plan::plan(
        &model(),
        &devices(),
        &RunSettings {
            num_gpu,
            fill: AutoFill::Layers,
            ..RunSettings::default()
        },
    )
}

// Bytes from the published config, computed here independently of the file: Q8_0 stores
// 32 values in 34 bytes, F32 4 bytes each.
fn q8(n: u64) -> u64 {
    n / 32 * 34
}
fn f32b(n: u64) -> u64 {
    4 * n
}
const ATTN: fn() -> u64 = || {
    q8(7168 * 1536)
        + q8(1536 * 128 * 192)
        + q8(7168 * 576)
        + q8(512 * 128 * 256)
        + q8(128 * 128 * 7168)
        + f32b(7168 + 1536 + 512) // attn_norm, attn_q_a_norm, attn_kv_a_norm
};
fn dense_block() -> u64 {
    ATTN() + f32b(7168) + 3 * q8(7168 * 18432)
}
fn moe_block() -> u64 {
    ATTN()
        + f32b(7168)
        + f32b(7168 * 256)
        + f32b(256)
        + 3 * q8(7168 * 2048 * 256)
        + 3 * q8(7168 * 2048)
}

#[test]
fn every_tensor_is_costed_exactly() {
    let m = model();
    assert_eq!(m.n_layer, 61);
    assert_eq!(m.tensors.len(), 3 + 3 * 12 + 58 * 17);
    for i in 0..3 {
        assert_eq!(m.role_bytes(Role::Block(i)), dense_block(), "block {i}");
    }
    for i in 3..61 {
        assert_eq!(m.role_bytes(Role::Block(i)), moe_block(), "block {i}");
    }
    let embd = q8(7168 * 129280);
    assert_eq!(m.role_bytes(Role::Embedding), embd);
    assert_eq!(m.role_bytes(Role::Output), embd + f32b(7168));
    let total = 2 * embd + f32b(7168) + 3 * dense_block() + 58 * moe_block();
    assert_eq!(m.total_bytes(), total);
    assert_eq!(
        total, 713_281_210_368,
        "about 713 GB, as the model is published"
    );
    // The sizes the story is about: dense ≈ 0.58 GiB, MoE ≈ 11.4 GiB, 7 MoE ≈ 79.7 GiB.
    let gib = |b: u64| b as f64 / GIB as f64;
    assert!(
        (gib(dense_block()) - 0.58).abs() < 0.01,
        "{}",
        gib(dense_block())
    );
    assert!(
        (gib(moe_block()) - 11.39).abs() < 0.01,
        "{}",
        gib(moe_block())
    );
    assert!(
        7 * moe_block() > 80 * GIB - (512 << 20),
        "7 MoE blocks exceed a card's budget"
    );
}

#[test]
fn the_auto_plan_fits_every_gpu_and_shows_why_not_one_more() {
    let p = run(NumGpu::Auto).unwrap();
    for d in p.gpus() {
        assert!(
            d.total_bytes() <= d.device.free_bytes - p.settings.margin,
            "{}: {} > free − margin",
            d.device.name,
            d.total_bytes()
        );
        assert_eq!(d.blocks.len(), 6, "{}: {:?}", d.device.name, d.blocks);
    }
    // 6 MoE blocks per card, the output layer on the last: 48 blocks + output = 49 layers.
    assert_eq!(p.num_gpu, 49);
    assert_eq!(p.devices[0].blocks, (0..13).collect::<Vec<_>>());
    assert_eq!(p.devices[8].blocks, (55..61).collect::<Vec<_>>());
    assert_eq!(p.devices[p.output_device].device.name, "CUDA7");
    let limit = p.limit.as_ref().unwrap();
    assert_eq!(limit.num_gpu, 50);
    assert_eq!(
        limit.over.blocks.len(),
        7,
        "one more layer means 7 MoE blocks on one card"
    );
    assert!(limit.over.weights_bytes >= 7 * moe_block());
    let table = plan::table::render(&p);
    let over = format!("{} would hold blocks", limit.over.device.name);
    for want in ["why not num_gpu 50", &over, "(7)", "blocks 3-60: 11.39 GiB"] {
        assert!(table.contains(want), "missing {want:?} in:\n{table}");
    }
    assert!(plan::table::ollama_line(&p).contains("layers.offload=49 layers.split=6,6,6,6,6,6,6,7"));
}

#[test]
fn ollamas_51_layers_are_refused_with_the_largest_that_fits() {
    // layers.offload=51 in Ollama's log (61 blocks + output = 62 layers).
    let e = run(NumGpu::Layers(51)).unwrap_err();
    let PlanError::DoesNotFit {
        largest_fitting,
        ref why,
        ..
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!(largest_fitting, 49);
    assert!(why.contains("(7)"), "{why}");
    assert!(e.to_string().contains("OVER"), "{e}");
    // What the user forced and ran with.
    let p = run(NumGpu::Layers(43)).unwrap();
    assert!(p.fits());
    assert_eq!(p.num_gpu, 43);
}

#[test]
fn the_plan_as_json() {
    let p = run(NumGpu::Auto).unwrap();
    let v: serde_json::Value = serde_json::from_str(&plan::json::to_json(&p)).unwrap();
    assert_eq!(v["num_gpu"], 49);
    assert_eq!(v["output_device"], "CUDA7");
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 9);
    assert_eq!(devs[0]["kind"], "cpu");
    for (d, plan_dev) in devs.iter().zip(&p.devices) {
        for key in [
            "name",
            "kind",
            "free_bytes",
            "weights_bytes",
            "kv_bytes",
            "scratch_bytes",
            "total_bytes",
            "blocks",
        ] {
            assert!(d.get(key).is_some(), "device entry lacks {key}: {d}");
        }
        let sum = ["weights_bytes", "kv_bytes", "scratch_bytes"]
            .iter()
            .map(|k| d[k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(d["total_bytes"].as_u64().unwrap(), sum);
        assert_eq!(d["total_bytes"].as_u64().unwrap(), plan_dev.total_bytes());
        let blocks: Vec<usize> = d["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(blocks, plan_dev.blocks);
    }
    assert_eq!(devs[1]["kind"], "gpu");
    assert_eq!(devs[1]["free_bytes"], 80 * GIB);
}
