//! The plan for scripts (`bench plan -o json`).

use serde::Serialize;

use super::result::Plan;

#[derive(Debug, Serialize)]
pub struct PlanJson {
    pub arch: String,
    pub n_layer: usize,
    /// What was asked: "auto" or a layer count.
    pub num_gpu_requested: String,
    /// Layers on GPUs as num_gpu counts them (output layer included).
    pub num_gpu: usize,
    pub n_ctx: usize,
    pub n_seq: usize,
    pub n_ubatch: usize,
    pub kv_type: String,
    pub margin_bytes: u64,
    pub devices: Vec<DeviceJson>,
    /// Name of the device that holds the output layer.
    pub output_device: String,
    /// Device name of each block's attention (and KV cache), by block index.
    pub block_devices: Vec<String>,
    /// Where each part of each block lives, by block index.
    pub block_parts: Vec<BlockPartsJson>,
    /// Bytes of routed experts on GPUs, and in all.
    pub expert_bytes_on_gpus: u64,
    pub expert_bytes: u64,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DeviceJson {
    pub name: String,
    /// "cpu" or "gpu".
    pub kind: &'static str,
    pub free_bytes: u64,
    /// Free minus margin on a GPU; free on the CPU.
    pub budget_bytes: u64,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub scratch_bytes: u64,
    pub total_bytes: u64,
    /// Blocks whose attention and KV cache it holds, ascending.
    pub blocks: Vec<usize>,
    /// Blocks whose FFN it holds while their attention is elsewhere.
    pub ffn_blocks: Vec<usize>,
    pub output: bool,
    /// Weight bytes it reads per decoded token (routed experts under uniform routing).
    pub read_per_token_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct BlockPartsJson {
    pub attention: String,
    pub ffn: String,
    /// Ranges of routed experts: `[first, end)` and the device.
    pub experts: Vec<ExpertsJson>,
}

#[derive(Debug, Serialize)]
pub struct ExpertsJson {
    pub first: usize,
    pub end: usize,
    pub device: String,
}

impl PlanJson {
    pub fn new(plan: &Plan) -> PlanJson {
        let name = |d: usize| plan.devices[d].device.name.clone();
        PlanJson {
            arch: plan.arch.clone(),
            n_layer: plan.n_layer,
            num_gpu_requested: plan.settings.num_gpu.to_string(),
            num_gpu: plan.num_gpu,
            n_ctx: plan.settings.n_ctx,
            n_seq: plan.settings.n_seq,
            n_ubatch: plan.settings.n_ubatch,
            kv_type: plan.settings.kv_type.to_string(),
            margin_bytes: plan.settings.margin,
            devices: plan
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| DeviceJson {
                    name: d.device.name.clone(),
                    kind: d.device.kind.as_str(),
                    free_bytes: d.device.free_bytes,
                    budget_bytes: d.budget_bytes,
                    weights_bytes: d.weights_bytes,
                    kv_bytes: d.kv_bytes,
                    scratch_bytes: d.scratch_bytes,
                    total_bytes: d.total_bytes(),
                    blocks: d.blocks.clone(),
                    ffn_blocks: d.ffn_blocks.clone(),
                    output: d.output,
                    read_per_token_bytes: plan.read_per_token(i),
                })
                .collect(),
            output_device: name(plan.output_device),
            block_devices: plan.block_devices.iter().map(|&d| name(d)).collect(),
            block_parts: plan
                .blocks
                .iter()
                .map(|b| BlockPartsJson {
                    attention: name(b.attention),
                    ffn: name(b.ffn),
                    experts: b
                        .experts
                        .iter()
                        .map(|r| ExpertsJson {
                            first: r.experts.start,
                            end: r.experts.end,
                            device: name(r.device),
                        })
                        .collect(),
                })
                .collect(),
            expert_bytes_on_gpus: plan.expert_bytes_on_gpus().0,
            expert_bytes: plan.expert_bytes_on_gpus().1,
            warnings: plan.warnings.clone(),
        }
    }
}

/// The plan as pretty-printed JSON.
pub fn to_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&PlanJson::new(plan)).expect("a plan always serializes")
}
