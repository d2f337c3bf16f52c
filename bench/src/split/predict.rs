//! The bandwidth model's decode speed for a plan: a token reads each device's weights once
//! at that device's read bandwidth, and the devices take turns (the runner's schedule
//! today), so a token takes Σ bytes_d / bw_d, plus the copies at device boundaries.

use strata_engine::model::is_expert_stack;
use strata_engine::plan::{Role, TensorPlacement};

/// What decides how much of a tensor one token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRule {
    /// `(n_expert_used, n_expert)`: a token reads that share of a routed expert stack (on
    /// average, the router spreading tokens evenly). `(1, 1)` for dense models.
    pub experts: (usize, usize),
    /// The output projection is the token embedding (tied) and runs on the CPU: then the
    /// embedding is read in full, not one row.
    pub tied_output_on_cpu: bool,
}

/// Bytes of `t` one decode token reads. An expert stack's bytes are pro rata over its
/// experts, so a slice of one (a placement by expert range) is read in the same share.
pub fn bytes_read(t: &TensorPlacement, rule: ReadRule) -> f64 {
    let bytes = t.bytes as f64;
    match t.role {
        Role::Embedding if t.name == "token_embd.weight" && rule.tied_output_on_cpu => bytes,
        // The lookup reads one row per token: nothing next to the rest.
        Role::Embedding => 0.0,
        Role::Block(i) => {
            let in_block = t.name.strip_prefix(&format!("blk.{i}.")).unwrap_or(&t.name);
            if is_expert_stack(in_block) {
                bytes * rule.experts.0 as f64 / rule.experts.1 as f64
            } else {
                bytes
            }
        }
        Role::Output => bytes,
    }
}

/// Bytes each of `n_devices` plan devices reads for one decode token.
pub fn bytes_per_device(tensors: &[TensorPlacement], rule: ReadRule, n_devices: usize) -> Vec<f64> {
    let mut out = vec![0.0; n_devices];
    for t in tensors {
        out[t.device] += bytes_read(t, rule);
    }
    out
}

/// The copies one decode token makes, as `(from, to, bytes)` between plan devices: the
/// residual stream (`n_embd` f32) from the embedding on the CPU (device 0) to each run of
/// blocks on another device and on to the output layer's, then the logits (`n_vocab` f32)
/// back to the CPU — as the runner's forward pass moves them.
pub fn copies(
    block_devices: &[usize],
    output_device: usize,
    n_embd: usize,
    n_vocab: usize,
) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut here = 0;
    for &d in block_devices.iter().chain([&output_device]) {
        if d != here {
            out.push((here, d, n_embd as u64 * 4));
            here = d;
        }
    }
    if here != 0 {
        out.push((here, 0, n_vocab as u64 * 4));
    }
    out
}

/// Predicted decode tokens/s: `bytes[d]` read at `bandwidth[d]` bytes/s on each device in
/// turn, and each copy at the slower of its two ends' bandwidths (a host copy is taken to
/// run at the read bandwidth). `None` when a device that has work to do, or a copy, has no
/// measured bandwidth (a GPU here).
pub fn tokens_per_s(
    bytes: &[f64],
    copies: &[(usize, usize, u64)],
    bandwidth: &[Option<f64>],
) -> Option<f64> {
    let mut secs = 0.0;
    for (b, bw) in bytes.iter().zip(bandwidth) {
        if *b > 0.0 {
            secs += b / (*bw)?;
        }
    }
    for &(from, to, b) in copies {
        secs += b as f64 / bandwidth[from]?.min(bandwidth[to]?);
    }
    (secs > 0.0).then(|| 1.0 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, device: usize, bytes: u64) -> TensorPlacement {
        TensorPlacement {
            name: name.into(),
            role: Role::of(name),
            device,
            bytes,
            experts: None,
        }
    }

    const DENSE: ReadRule = ReadRule {
        experts: (1, 1),
        tied_output_on_cpu: false,
    };

    #[test]
    fn a_token_reads_its_experts_share_and_no_embedding() {
        let moe = ReadRule {
            experts: (8, 256),
            tied_output_on_cpu: false,
        };
        let tensors = [
            tensor("token_embd.weight", 0, 1000),
            tensor("blk.0.attn_q.weight", 0, 300),
            tensor("blk.1.ffn_up_exps.weight", 1, 2560),
            tensor("blk.1.ffn_up_shexp.weight", 1, 40),
            tensor("blk.1.ffn_gate_inp.weight", 1, 10),
            tensor("output.weight", 1, 500),
        ];
        assert_eq!(
            bytes_per_device(&tensors, moe, 3),
            [300.0, 80.0 + 40.0 + 10.0 + 500.0, 0.0]
        );
        assert_eq!(bytes_read(&tensors[2], DENSE), 2560.0);
    }

    #[test]
    fn a_tied_output_on_the_cpu_reads_the_whole_embedding() {
        let embd = tensor("token_embd.weight", 0, 1000);
        let tied = ReadRule {
            tied_output_on_cpu: true,
            ..DENSE
        };
        assert_eq!(bytes_read(&embd, tied), 1000.0);
        assert_eq!(bytes_read(&embd, DENSE), 0.0);
        // On a GPU the plan lists the copy it holds, as an output tensor.
        let copy = TensorPlacement {
            role: Role::Output,
            device: 1,
            ..embd
        };
        assert_eq!(bytes_read(&copy, DENSE), 1000.0);
    }

    #[test]
    fn copies_follow_the_boundaries() {
        // Everything on the CPU: none.
        assert_eq!(copies(&[0, 0, 0], 0, 8, 100), []);
        // CPU, then device 1 for the last block and the output: in, and the logits back.
        assert_eq!(copies(&[0, 0, 1], 1, 8, 100), [(0, 1, 32), (1, 0, 400)]);
        // Two accelerators, the output back on the CPU.
        assert_eq!(
            copies(&[1, 2, 2], 0, 8, 100),
            [(0, 1, 32), (1, 2, 32), (2, 0, 32)]
        );
    }

    #[test]
    fn devices_take_turns() {
        // 2 GB at 10 GB/s and 1 GB at 20 GB/s: 0.25 s; one 4e8-byte copy at 10 GB/s: 0.04 s.
        let bw = [Some(10e9), Some(20e9)];
        let t = tokens_per_s(&[2e9, 1e9], &[(0, 1, 400_000_000)], &bw).unwrap();
        assert!((t - 1.0 / 0.29).abs() < 1e-9, "{t}");
        // A device without a bandwidth that has nothing to read does not matter...
        assert!(tokens_per_s(&[2e9, 0.0], &[], &[Some(10e9), None]).is_some());
        // ...one with work, or a copy to it, leaves the prediction open.
        assert_eq!(tokens_per_s(&[2e9, 1e9], &[], &[Some(10e9), None]), None);
        assert_eq!(
            tokens_per_s(&[2e9, 0.0], &[(0, 1, 4)], &[Some(10e9), None]),
            None
        );
    }
}
