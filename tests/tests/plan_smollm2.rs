//! The planner on the real model (SmolLM2-135M-Instruct Q4_1, fetched by
//! scripts/fetch-model.sh; each test returns early, saying so, when it is absent).

use strata_engine::buffers;
use strata_engine::gguf::GgufFile;
use strata_engine::plan::{
    self, cost::padded, BufferModel, Device, DeviceKind, NumGpu, PlanModel, Role, RunSettings,
};
use strata_kernels_cpu::GgmlType;

fn open() -> Option<(GgufFile, PlanModel)> {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: the model is absent (run scripts/fetch-model.sh)");
        return None;
    };
    let file = GgufFile::open(path).unwrap();
    let model = PlanModel::from_gguf(&file).unwrap();
    Some((file, model))
}

#[test]
fn tensor_costs_are_the_files_own_layout() {
    let Some((file, m)) = open() else { return };
    let align = file.alignment();
    // In the file each tensor starts at an aligned offset right after the previous one: the
    // distance between starts is what the planner charges (data bytes, padded).
    let mut by_offset: Vec<_> = file.tensors().iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for w in by_offset.windows(2) {
        let cost = m.tensors.iter().find(|t| t.name == w[0].name).unwrap();
        assert_eq!(cost.data_bytes, w[0].n_bytes, "{}", w[0].name);
        assert_eq!(cost.bytes, w[1].offset - w[0].offset, "{}", w[0].name);
    }
    let last = by_offset.last().unwrap();
    assert_eq!(
        m.total_bytes(),
        padded(last.offset + last.n_bytes, align).unwrap()
    );
    // The data section is the weights, to the byte (the file may end without final padding).
    let data_len = file.file_len() - file.data_offset();
    assert!(m.total_bytes() >= data_len && m.total_bytes() - data_len < align);
}

#[test]
fn blocks_output_and_embedding_are_grouped() {
    let Some((_, m)) = open() else { return };
    assert_eq!(m.n_layer, 30);
    assert!(
        m.tied_output,
        "SmolLM2 reads token_embd.weight for its output"
    );
    let per_block: Vec<u64> = (0..30).map(|i| m.role_bytes(Role::Block(i))).collect();
    assert!(
        per_block.iter().all(|&b| b == per_block[0]),
        "identical blocks cost the same"
    );
    let sum: u64 =
        per_block.iter().sum::<u64>() + m.role_bytes(Role::Embedding) + m.role_bytes(Role::Output);
    assert_eq!(sum, m.total_bytes());
    // Q8_0 token embedding, 576 × 49152: 576/32·34 bytes per row.
    let embd = m
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(embd.ty, GgmlType::Q8_0);
    assert_eq!(embd.data_bytes, 576 / 32 * 34 * 49152);
}

#[test]
fn kv_and_scratch_are_the_runners_own_sizes() {
    let Some((_, m)) = open() else { return };
    let BufferModel(cfg) = &m.buffers;
    let s = RunSettings {
        n_ctx: 4096,
        ..RunSettings::default()
    };
    // 3 KV heads of 64, K and V, f16, 4096 positions.
    assert_eq!(m.buffers.kv_block_bytes(&s).unwrap(), 2 * 4096 * 3 * 64 * 2);
    assert_eq!(
        m.buffers.kv_block_bytes(&s).unwrap(),
        buffers::kv_cache_bytes(cfg, 4096, s.kv_type)
    );
    assert_eq!(
        m.buffers.scratch_bytes(&s),
        buffers::scratch_bytes(cfg, s.n_ubatch, 4096, 1)
    );
}

#[test]
fn every_num_gpu_places_as_users_expect() {
    let Some((_, m)) = open() else { return };
    let n = m.n_layer;
    for gpus in [vec![1u64 << 30], vec![1 << 30, 1 << 29]] {
        let mut devs = vec![Device::cpu(8 << 30)];
        devs.extend(gpus.iter().enumerate().map(|(i, &b)| Device::gpu(i, b)));
        for k in [
            NumGpu::Layers(0),
            NumGpu::Layers(1),
            NumGpu::Layers(n / 2),
            NumGpu::Layers(n),
            NumGpu::Layers(n + 1),
            NumGpu::Auto,
        ] {
            let s = RunSettings {
                n_ctx: 2048,
                num_gpu: k,
                margin: 64 << 20,
                ..RunSettings::default()
            };
            let p = plan::plan(&m, &devs, &s).unwrap();
            let expected = match k {
                NumGpu::Layers(k) => k,
                NumGpu::Auto => n + 1, // 1 GiB holds all of a 98 MB model
            };
            assert_eq!(p.num_gpu, expected, "{k}");
            let on_gpu: usize = p.gpus().map(|d| d.blocks.len()).sum();
            assert_eq!(on_gpu, expected.saturating_sub(1), "{k}");
            for d in &p.devices {
                let placed: u64 = p
                    .tensors
                    .iter()
                    .filter(|t| p.devices[t.device].device.name == d.device.name)
                    .map(|t| t.bytes)
                    .sum();
                assert_eq!(placed, d.weights_bytes);
                if d.device.kind == DeviceKind::Gpu {
                    assert!(d.fits());
                }
            }
            // The tied output on a GPU brings its copy of the embedding.
            let out = &p.devices[p.output_device];
            if out.device.kind == DeviceKind::Gpu {
                assert!(p.tensors.iter().any(|t| t.name == "token_embd.weight"
                    && t.role == Role::Output
                    && t.device == p.output_device));
            }
        }
    }
}
