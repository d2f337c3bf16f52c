//! The planner's placement rules on synthetic llama models built in memory (no file
//! needed): num_gpu semantics, auto, proportional and `--tensor-split` sharing, capacity,
//! refusals, and the per-device accounting.

use strata_engine::gguf::{tensor_size, Metadata, TensorInfo, Value};
use strata_engine::plan::{
    plan, Device, DeviceKind, NumGpu, Plan, PlanError, PlanModel, Role, RunSettings,
};
use strata_kernels_cpu::GgmlType;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Shape {
    n_layer: usize,
    n_embd: u64,
    n_ff: u64,
    n_head: u64,
    n_head_kv: u64,
    n_vocab: u64,
    tied: bool,
}

const SMALL: Shape = Shape {
    n_layer: 8,
    n_embd: 256,
    n_ff: 768,
    n_head: 4,
    n_head_kv: 2,
    n_vocab: 1000,
    tied: false,
};

/// A llama model's header: metadata and tensor infos (Q8_0 matrices, F32 norms).
fn llama(s: &Shape) -> PlanModel {
    let mut meta = Metadata::new();
    let u = |v: u64| Value::U32(v as u32);
    meta.insert("general.architecture", Value::String("llama".into()));
    meta.insert("llama.block_count", u(s.n_layer as u64));
    meta.insert("llama.embedding_length", u(s.n_embd));
    meta.insert("llama.feed_forward_length", u(s.n_ff));
    meta.insert("llama.attention.head_count", u(s.n_head));
    meta.insert("llama.attention.head_count_kv", u(s.n_head_kv));
    meta.insert("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    meta.insert("llama.context_length", u(8192));
    let (e, f, v) = (s.n_embd, s.n_ff, s.n_vocab);
    let kv = s.n_embd / s.n_head * s.n_head_kv;
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![e, v]),
        ("output_norm.weight".into(), vec![e]),
    ];
    if !s.tied {
        shapes.push(("output.weight".into(), vec![e, v]));
    }
    for i in 0..s.n_layer {
        for (n, d) in [
            ("attn_norm", vec![e]),
            ("attn_q", vec![e, e]),
            ("attn_k", vec![e, kv]),
            ("attn_v", vec![e, kv]),
            ("attn_output", vec![e, e]),
            ("ffn_norm", vec![e]),
            ("ffn_gate", vec![e, f]),
            ("ffn_up", vec![e, f]),
            ("ffn_down", vec![f, e]),
        ] {
            shapes.push((format!("blk.{i}.{n}.weight"), d));
        }
    }
    let infos: Vec<TensorInfo> = shapes
        .into_iter()
        .map(|(name, dims)| {
            let ty = if dims.len() == 1 {
                GgmlType::F32
            } else {
                GgmlType::Q8_0
            };
            let n_bytes = tensor_size(&name, 0, ty, &dims).unwrap();
            TensorInfo {
                name,
                ty,
                dims,
                offset: 0,
                n_bytes,
            }
        })
        .collect();
    PlanModel::from_header(&meta, &infos, 32).unwrap()
}

fn devices(gpus: &[u64]) -> Vec<Device> {
    let mut d = vec![Device::cpu(64 * GIB)];
    d.extend(gpus.iter().enumerate().map(|(i, &b)| Device::gpu(i, b)));
    d
}

fn settings(num_gpu: NumGpu) -> RunSettings {
    RunSettings {
        n_ctx: 512,
        num_gpu,
        margin: 4 * MIB,
        ..RunSettings::default()
    }
}

/// Invariants every plan must keep, whatever the request.
fn check_accounting(model: &PlanModel, p: &Plan) {
    let kv = p.block_kv_bytes;
    for (d, dev) in p.devices.iter().enumerate() {
        let placed: u64 = p
            .tensors
            .iter()
            .filter(|t| t.device == d)
            .map(|t| t.bytes)
            .sum();
        assert_eq!(
            dev.weights_bytes, placed,
            "{}: weights = its tensors",
            dev.device.name
        );
        assert_eq!(
            dev.kv_bytes,
            dev.blocks.len() as u64 * kv,
            "{}",
            dev.device.name
        );
        let runs = !dev.blocks.is_empty() || dev.output || d == 0;
        assert_eq!(dev.scratch_bytes, if runs { p.scratch_bytes } else { 0 });
        if dev.device.kind == DeviceKind::Gpu {
            assert!(dev.fits(), "{} over budget", dev.device.name);
        }
    }
    for t in &p.tensors {
        let want = match t.role {
            Role::Embedding => 0,
            Role::Block(i) => p.block_devices[i],
            Role::Output => p.output_device,
        };
        assert_eq!(t.device, want, "{}", t.name);
    }
    // Every tensor of the file is placed exactly once, plus the tied output's GPU copy.
    let originals = p.tensors.len() - usize::from(model.tied_output && p.output_device != 0);
    assert_eq!(originals, model.tensors.len());
    // Blocks on GPUs are the last ones, in consecutive runs by GPU order.
    let first_gpu_block = p.n_layer - p.num_gpu.saturating_sub(1).min(p.n_layer);
    for (i, &d) in p.block_devices.iter().enumerate() {
        assert_eq!(d == 0, i < first_gpu_block, "block {i}");
        if i > 0 {
            assert!(
                d >= p.block_devices[i - 1],
                "block {i} runs before block {}",
                i - 1
            );
        }
    }
    assert_eq!(p.output_device == 0, p.num_gpu == 0);
    if let Some(&last) = p.block_devices.last() {
        assert!(p.output_device >= last);
    }
}

#[test]
fn num_gpu_counts_the_output_layer_and_takes_the_last_blocks() {
    let m = llama(&SMALL);
    let n = m.n_layer;
    let dev = devices(&[8 * GIB]);
    for (k, gpu_blocks) in [
        (0, 0),
        (1, 0),
        (n / 2, n / 2 - 1),
        (n, n - 1),
        (n + 1, n),
        (n + 7, n),
    ] {
        let p = plan(&m, &dev, &settings(NumGpu::Layers(k))).unwrap();
        check_accounting(&m, &p);
        assert_eq!(p.num_gpu, k.min(n + 1), "num_gpu {k}");
        assert_eq!(
            p.devices[1].blocks,
            (n - gpu_blocks..n).collect::<Vec<_>>(),
            "num_gpu {k}"
        );
        assert_eq!(p.devices[1].output, k > 0, "num_gpu {k}");
    }
    let p = plan(&m, &dev, &settings(NumGpu::Auto)).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.num_gpu, n + 1);
    assert!(p.limit.is_none());
}

#[test]
fn auto_stops_at_the_last_block_that_fits_and_says_why() {
    let m = llama(&SMALL);
    let s = settings(NumGpu::Auto);
    let full = plan(&m, &devices(&[8 * GIB]), &settings(NumGpu::Layers(1))).unwrap();
    let one_block = full.block_weights[0] + full.block_kv_bytes;
    // Room for the output layer and exactly 3 blocks (and not 4) besides scratch and margin.
    let free =
        s.margin + full.scratch_bytes + full.output_gpu_bytes + 3 * one_block + one_block / 2;
    let p = plan(&m, &devices(&[free]), &s).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.num_gpu, 4);
    let limit = p
        .limit
        .as_ref()
        .expect("auto that stops short explains why");
    assert_eq!(limit.num_gpu, 5);
    assert_eq!(limit.over.blocks.len(), 4);
    assert!(limit.over.total_bytes() > limit.over.budget_bytes);
    let table = strata_engine::plan::table::render(&p);
    assert!(table.contains("why not num_gpu 5"), "{table}");
}

#[test]
fn no_gpu_means_no_gpu_layers() {
    let m = llama(&SMALL);
    let p = plan(&m, &devices(&[]), &settings(NumGpu::Auto)).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.num_gpu, 0);
    let e = plan(&m, &devices(&[]), &settings(NumGpu::Layers(3))).unwrap_err();
    assert!(
        matches!(e, PlanError::BadDevices { .. }) && e.to_string().contains("--gpus"),
        "{e}"
    );
}

/// Each GPU's bytes are within one layer of its share of the total.
fn assert_proportional(p: &Plan, weights: &[f64]) {
    let gpu_bytes: Vec<u64> = p.gpus().map(|d| d.weights_bytes + d.kv_bytes).collect();
    let total: u64 = gpu_bytes.iter().sum();
    let sum_w: f64 = weights.iter().sum();
    let largest_layer =
        (p.block_weights.iter().max().unwrap() + p.block_kv_bytes).max(p.output_gpu_bytes);
    for (g, (&b, &w)) in gpu_bytes.iter().zip(weights).enumerate() {
        let target = total as f64 * w / sum_w;
        assert!(
            (b as f64 - target).abs() <= largest_layer as f64,
            "CUDA{g}: {b} bytes, share {target:.0}, split {:?}",
            p.gpus().map(|d| d.blocks.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn gpus_share_blocks_in_proportion_to_free_memory() {
    let m = llama(&Shape {
        n_layer: 20,
        ..SMALL
    });
    let gpus = [24 * GIB, 24 * GIB, 12 * GIB];
    let p = plan(&m, &devices(&gpus), &settings(NumGpu::Auto)).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.num_gpu, 21);
    assert_proportional(&p, &[2.0, 2.0, 1.0]);
    assert_eq!(p.output_device, 3);
}

#[test]
fn tensor_split_sets_the_proportions() {
    let m = llama(&Shape {
        n_layer: 20,
        ..SMALL
    });
    let mut s = settings(NumGpu::Auto);
    s.tensor_split = Some(vec![3.0, 1.0]);
    let p = plan(&m, &devices(&[8 * GIB, 8 * GIB]), &s).unwrap();
    check_accounting(&m, &p);
    assert_proportional(&p, &[3.0, 1.0]);
    // A GPU with proportion 0 gets nothing, not even scratch.
    s.tensor_split = Some(vec![0.0, 1.0]);
    let p = plan(&m, &devices(&[8 * GIB, 8 * GIB]), &s).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.devices[1].total_bytes(), 0);
    assert_eq!(p.devices[2].blocks.len(), 20);
    s.tensor_split = Some(vec![1.0]);
    let e = plan(&m, &devices(&[8 * GIB, 8 * GIB]), &s).unwrap_err();
    assert!(e.to_string().contains("1 proportions for 2 GPUs"), "{e}");
}

#[test]
fn a_small_gpu_gets_what_fits_and_the_rest_goes_elsewhere() {
    let m = llama(&Shape {
        n_layer: 20,
        ..SMALL
    });
    let probe = plan(&m, &devices(&[8 * GIB]), &settings(NumGpu::Layers(1))).unwrap();
    let layer = probe.block_weights[0] + probe.block_kv_bytes;
    let s = settings(NumGpu::Layers(21));
    // Equal shares asked, but the second GPU has room for only 2 blocks + output.
    let small = s.margin + probe.scratch_bytes + probe.output_gpu_bytes + 2 * layer + layer / 2;
    let mut s2 = s.clone();
    s2.tensor_split = Some(vec![1.0, 1.0]);
    let p = plan(&m, &devices(&[8 * GIB, small]), &s2).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.devices[2].blocks, vec![18, 19]);
    assert!(p.devices[2].output);
}

#[test]
fn an_explicit_num_gpu_that_cannot_fit_is_refused_with_the_table_and_the_largest_that_fits() {
    let m = llama(&SMALL);
    let probe = plan(&m, &devices(&[8 * GIB]), &settings(NumGpu::Layers(1))).unwrap();
    let layer = probe.block_weights[0] + probe.block_kv_bytes;
    let s = settings(NumGpu::Auto);
    let free = s.margin + probe.scratch_bytes + probe.output_gpu_bytes + 5 * layer + layer / 2;
    let dev = devices(&[free / 2, free - free / 2 + layer]);
    let auto = plan(&m, &dev, &s).unwrap();
    let largest = auto.num_gpu;
    assert!(largest < m.n_layer + 1);
    let e = plan(&m, &dev, &settings(NumGpu::Layers(m.n_layer + 1))).unwrap_err();
    let PlanError::DoesNotFit {
        requested,
        largest_fitting,
        ref table,
        ..
    } = e
    else {
        panic!("expected DoesNotFit, got {e}");
    };
    assert_eq!((requested, largest_fitting), (m.n_layer + 1, largest));
    let text = e.to_string();
    for want in [
        "does not fit",
        "OVER",
        "may use",
        &format!("largest num_gpu that fits is {largest}"),
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        table.contains("CUDA0") && table.contains("CUDA1"),
        "{table}"
    );
    assert!(plan(&m, &dev, &settings(NumGpu::Layers(largest))).is_ok());
    assert!(plan(&m, &dev, &settings(NumGpu::Layers(largest + 1))).is_err());
}

#[test]
fn a_tied_output_on_a_gpu_carries_its_own_copy_of_the_embedding() {
    let m = llama(&Shape {
        tied: true,
        ..SMALL
    });
    let embd = m
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap()
        .bytes;
    let norm = m
        .tensors
        .iter()
        .find(|t| t.name == "output_norm.weight")
        .unwrap()
        .bytes;
    let p = plan(&m, &devices(&[8 * GIB]), &settings(NumGpu::Layers(1))).unwrap();
    check_accounting(&m, &p);
    assert_eq!(p.devices[1].weights_bytes, embd + norm);
    assert_eq!(p.devices[0].weights_bytes, m.total_bytes() - norm);
    let p = plan(&m, &devices(&[8 * GIB]), &settings(NumGpu::Layers(0))).unwrap();
    assert_eq!(p.devices[0].weights_bytes, m.total_bytes());
}

#[test]
fn bad_settings_are_named() {
    let m = llama(&SMALL);
    let mut s = settings(NumGpu::Auto);
    s.n_ctx = 0;
    assert!(plan(&m, &devices(&[GIB]), &s)
        .unwrap_err()
        .to_string()
        .contains("n_ctx"));
    let mut s = settings(NumGpu::Auto);
    s.kv_type = GgmlType::Q4_0;
    assert!(plan(&m, &devices(&[GIB]), &s)
        .unwrap_err()
        .to_string()
        .contains("Q4_0"));
    let e = plan(&m, &[Device::gpu(0, GIB)], &settings(NumGpu::Auto)).unwrap_err();
    assert!(
        e.to_string().contains("first device must be the CPU"),
        "{e}"
    );
    assert!(NumGpu::parse("lots")
        .unwrap_err()
        .to_string()
        .contains("'lots'"));
    assert_eq!(NumGpu::parse("-1").unwrap(), NumGpu::Auto);
    assert_eq!(NumGpu::parse("12").unwrap(), NumGpu::Layers(12));
}
