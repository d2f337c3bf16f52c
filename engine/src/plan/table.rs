//! The plan for people: a table per device, the per-layer costs it was decided from, why
//! one more layer would not fit, and a one-line summary in the spirit of Ollama's
//! `offload` log line so the two can be compared.

use std::fmt::Write;

use super::bytes::Bytes;
use super::result::{runs, DevicePlan, Plan};

/// `blocks 13-18 (6), output` / `blocks 0-2, 5 (4)` / `output` / `nothing`.
pub fn describe_layers(blocks: &[usize], output: bool) -> String {
    let mut parts = Vec::new();
    if !blocks.is_empty() {
        let ranges: Vec<String> = runs(blocks)
            .iter()
            .map(|r| {
                if r.len() == 1 {
                    r.start.to_string()
                } else {
                    format!("{}-{}", r.start, r.end - 1)
                }
            })
            .collect();
        let word = if blocks.len() == 1 { "block" } else { "blocks" };
        parts.push(format!("{word} {} ({})", ranges.join(", "), blocks.len()));
    }
    if output {
        parts.push("output".to_string());
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

/// What a device holds of the blocks beyond its own: `FFN of blocks 3-4 (2), experts of
/// block 7`.
fn describe_parts(d: &DevicePlan) -> Option<String> {
    let mut parts = Vec::new();
    if !d.ffn_blocks.is_empty() {
        parts.push(format!("FFN of {}", describe_layers(&d.ffn_blocks, false)));
    }
    if !d.experts.is_empty() {
        let blocks: Vec<usize> = d.experts.iter().map(|(b, _)| *b).collect();
        parts.push(format!("experts of {}", describe_layers(&blocks, false)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The routed experts device `d` holds, block ranges with the same experts together:
/// `blocks 3-9: 0-255, block 10: 0-120`.
pub fn describe_experts(plan: &Plan, d: usize) -> String {
    let held: Vec<(usize, std::ops::Range<usize>)> = plan
        .blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.experts_on(d).map(|r| (i, r)))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut j = 0;
    while j < held.len() {
        let (first, r) = held[j].clone();
        let mut last = first;
        while j + 1 < held.len() && held[j + 1].1 == r && held[j + 1].0 == last + 1 {
            j += 1;
            last = held[j].0;
        }
        let which = if first == last {
            format!("block {first}")
        } else {
            format!("blocks {first}-{last}")
        };
        out.push(format!("{which}: {}-{}", r.start, r.end - 1));
        j += 1;
    }
    out.join(", ")
}

fn left(d: &DevicePlan) -> String {
    let (total, budget) = (d.total_bytes(), d.budget_bytes);
    if total <= budget {
        Bytes(budget - total).to_string()
    } else {
        format!("OVER {}", Bytes(total - budget))
    }
}

/// The plan as a table, with the per-layer costs and (for `auto`) why one more layer on the
/// GPUs would not fit.
pub fn render(plan: &Plan) -> String {
    let s = &plan.settings;
    let mut out = String::new();
    let gpus = plan.gpus().filter(|d| d.layers() > 0).count();
    let _ = writeln!(
        out,
        "plan: {} with {} blocks + output layer; n_ctx {} x {} seq, n_ubatch {}, KV {}, GPU \
         margin {}",
        plan.arch,
        plan.n_layer,
        s.n_ctx,
        s.n_seq,
        s.n_ubatch,
        s.kv_type,
        Bytes(s.margin)
    );
    let on_gpu_blocks = plan.num_gpu.saturating_sub(1).min(plan.n_layer);
    let _ = writeln!(
        out,
        "num_gpu {} -> {}{} ({} of {} blocks{} on {} GPU{})",
        s.num_gpu,
        plan.num_gpu,
        if plan.fits() { "" } else { ", DOES NOT FIT" },
        on_gpu_blocks,
        plan.n_layer,
        if plan.num_gpu > 0 {
            " + output layer"
        } else {
            ""
        },
        gpus,
        if gpus == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "\n{:<7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>15} {:>11}  layers",
        "device",
        "free",
        "may use",
        "weights",
        "KV cache",
        "scratch",
        "total",
        "left",
        "read/token"
    );
    for (i, d) in plan.devices.iter().enumerate() {
        let mut layers = describe_layers(&d.blocks, d.output);
        if let Some(p) = describe_parts(d) {
            layers = if layers == "nothing" {
                p
            } else {
                format!("{layers}, {p}")
            };
        }
        if d.embedding {
            layers.push_str(", embedding");
        }
        let _ = writeln!(
            out,
            "{:<7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>15} {:>11}  {}",
            d.device.name,
            Bytes(d.device.free_bytes).to_string(),
            Bytes(d.budget_bytes).to_string(),
            Bytes(d.weights_bytes).to_string(),
            Bytes(d.kv_bytes).to_string(),
            Bytes(d.scratch_bytes).to_string(),
            Bytes(d.total_bytes()).to_string(),
            left(d),
            Bytes(plan.read_per_token(i)).to_string(),
            layers
        );
    }
    let weights: u64 = plan.devices.iter().map(|d| d.weights_bytes).sum();
    let kv: u64 = plan.devices.iter().map(|d| d.kv_bytes).sum();
    let scratch: u64 = plan.devices.iter().map(|d| d.scratch_bytes).sum();
    let _ = writeln!(
        out,
        "{:<7} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "all",
        "",
        "",
        Bytes(weights).to_string(),
        Bytes(kv).to_string(),
        Bytes(scratch).to_string(),
        Bytes(weights + kv + scratch).to_string()
    );

    let (on_gpus, all) = plan.expert_bytes_on_gpus();
    if all > 0 {
        let (used, n) = plan.experts_read;
        let _ = writeln!(
            out,
            "\nrouted experts ({n} a block, {used} read per token): {} of {} on GPUs ({:.1}%)",
            Bytes(on_gpus),
            Bytes(all),
            100.0 * on_gpus as f64 / all as f64
        );
        for (i, d) in plan.devices.iter().enumerate() {
            let held = describe_experts(plan, i);
            if !held.is_empty() {
                let _ = writeln!(out, "  {:<7} {held}", d.device.name);
            }
        }
    }

    let _ = writeln!(out, "\nper layer on a GPU (weights + KV cache):");
    let mut start = 0;
    while start < plan.n_layer {
        let w = plan.block_weights[start];
        let end = (start..plan.n_layer)
            .find(|&i| plan.block_weights[i] != w)
            .unwrap_or(plan.n_layer);
        let which = if end - start == 1 {
            format!("block {start}")
        } else {
            format!("blocks {}-{}", start, end - 1)
        };
        let _ = writeln!(
            out,
            "  {which}: {} + {} = {}{}",
            Bytes(w),
            Bytes(plan.block_kv_bytes),
            Bytes(w + plan.block_kv_bytes),
            if end - start > 1 { " each" } else { "" }
        );
        start = end;
    }
    let _ = writeln!(out, "  output layer: {}", Bytes(plan.output_gpu_bytes));
    let _ = writeln!(
        out,
        "  scratch, once per device that runs layers: {}",
        Bytes(plan.scratch_bytes)
    );

    if let Some(limit) = &plan.limit {
        let _ = writeln!(
            out,
            "\nwhy not num_gpu {}: in its proportional split, {}",
            limit.num_gpu,
            over_budget_reason(&limit.over)
        );
        let _ = writeln!(
            out,
            "and no other split fits: filling each GPU to its limit in turn leaves {} without room.",
            match limit.greedy_leftover {
                Some(b) => format!("block {b}"),
                None => "the output layer".to_string(),
            }
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    out
}

/// One line in the spirit of Ollama's `offload` log line (`layers.requested`,
/// `layers.offload`, `layers.split`, per-device memory), for side-by-side comparison.
pub fn ollama_line(plan: &Plan) -> String {
    let gpus: Vec<&DevicePlan> = plan.gpus().collect();
    let list = |f: &dyn Fn(&DevicePlan) -> String| {
        format!(
            "[{}]",
            gpus.iter().map(|d| f(d)).collect::<Vec<_>>().join(" ")
        )
    };
    let cpu = &plan.devices[0];
    let weights: u64 = plan.devices.iter().map(|d| d.weights_bytes).sum();
    let kv: u64 = plan.devices.iter().map(|d| d.kv_bytes).sum();
    format!(
        "layers.requested={} layers.model={} layers.offload={} layers.split={} \
         memory.available=\"{}\" memory.margin=\"{}\" memory.required.allocations=\"{}\" \
         memory.cpu=\"{}\" memory.weights.total=\"{}\" memory.required.kv=\"{}\" \
         memory.scratch=\"{}\"",
        plan.settings.num_gpu,
        plan.n_layer + 1,
        plan.num_gpu,
        gpus.iter()
            .map(|d| d.layers().to_string())
            .collect::<Vec<_>>()
            .join(","),
        list(&|d| Bytes(d.device.free_bytes).to_string()),
        Bytes(plan.settings.margin),
        list(&|d| Bytes(d.total_bytes()).to_string()),
        Bytes(cpu.total_bytes()),
        Bytes(weights),
        Bytes(kv),
        Bytes(cpu.scratch_bytes),
    )
}

/// "CUDA0 would hold blocks 12-18 (7 blocks): 80.12 GiB > 79.50 GiB it may use".
pub fn over_budget_reason(d: &DevicePlan) -> String {
    format!(
        "{} would hold {}: weights {} + KV {} + scratch {} = {} > {} it may use ({} free − \
         margin)",
        d.device.name,
        describe_layers(&d.blocks, d.output),
        Bytes(d.weights_bytes),
        Bytes(d.kv_bytes),
        Bytes(d.scratch_bytes),
        Bytes(d.total_bytes()),
        Bytes(d.budget_bytes),
        Bytes(d.device.free_bytes),
    )
}
