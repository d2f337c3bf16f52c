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
    /// Device name of each block, by block index.
    pub block_devices: Vec<String>,
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
    /// Block indices, ascending.
    pub blocks: Vec<usize>,
    pub output: bool,
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
                .map(|d| DeviceJson {
                    name: d.device.name.clone(),
                    kind: d.device.kind.as_str(),
                    free_bytes: d.device.free_bytes,
                    budget_bytes: d.budget_bytes,
                    weights_bytes: d.weights_bytes,
                    kv_bytes: d.kv_bytes,
                    scratch_bytes: d.scratch_bytes,
                    total_bytes: d.total_bytes(),
                    blocks: d.blocks.clone(),
                    output: d.output,
                })
                .collect(),
            output_device: name(plan.output_device),
            block_devices: plan.block_devices.iter().map(|&d| name(d)).collect(),
            warnings: plan.warnings.clone(),
        }
    }
}

/// The plan as pretty-printed JSON.
pub fn to_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&PlanJson::new(plan)).expect("a plan always serializes")
}
