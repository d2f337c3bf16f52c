//! Helpers of the split tests: run settings, the ledger-vs-plan check, device boundaries.

use strata_engine::devices::{Accelerator, PseudoAccel};
use strata_engine::ledger::DeviceId;
use strata_engine::ledger::Ledger;
use strata_engine::plan::{AutoFill, NumGpu, Plan, RunSettings};
use strata_kernels_cpu::GgmlType;

/// Context 64, batches of 8 with the logits of every row, F16 KV cache, no GPU margin
/// (posing devices have no driver to keep room for).
pub fn settings(num_gpu: NumGpu) -> RunSettings {
    RunSettings {
        n_ctx: 64,
        n_batch: 8,
        n_ubatch: 8,
        kv_type: GgmlType::F16,
        n_seq: 1,
        n_outputs: 8,
        num_gpu,
        margin: 0,
        tensor_split: None,
        overrides: Vec::new(),
        fill: AutoFill::Experts,
        overlap: true,
    }
}

/// Asserts that the ledger holds, on every device of the plan, exactly the weights, KV
/// cache and scratch bytes the plan gives it.
pub fn assert_ledger_matches_plan(ledger: &Ledger, plan: &Plan, what: &str) {
    for (i, d) in plan.devices.iter().enumerate() {
        let u = ledger.usage(DeviceId::from_plan_index(i));
        assert_eq!(
            (u.weights, u.kv, u.scratch),
            (d.weights_bytes, d.kv_bytes, d.scratch_bytes),
            "{what}: {} allocated (weights, KV, scratch) vs planned",
            d.device.name
        );
    }
}

/// Device boundaries one forward call crosses: the embedding on the CPU, the blocks and the
/// output layer on their devices, the logits back on the CPU.
pub fn boundaries(plan: &Plan) -> usize {
    let chain: Vec<usize> = std::iter::once(0)
        .chain(plan.block_devices.iter().copied())
        .chain([plan.output_device, 0])
        .collect();
    chain.windows(2).filter(|w| w[0] != w[1]).count()
}

pub fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("non-empty logits")
}

/// Posing devices as the loader takes them.
pub fn posing(devices: &[PseudoAccel]) -> Vec<Accelerator> {
    devices.iter().cloned().map(Accelerator::from).collect()
}
