//! The bandwidth model's decode speed for a plan: a token reads each device's weights once
//! at that device's read bandwidth, and the devices take turns, so a token takes
//! Σ bytes_d / bw_d, plus the copies at device boundaries — except where a block's routed
//! experts are split between devices that compute their shares at the same time: there
//! the block's FFN takes as long as its slowest share, or as all the shares read together
//! at the bandwidth of every thread at once, whichever is longer. A decode step of several
//! sequences is one batch: one token's reads serve them all.

use strata_engine::model::is_expert_stack;
use strata_engine::plan::{BlockPlacement, Part, Role, TensorPlacement};

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

/// The copies one decode token makes, as `(from, to, bytes)` between plan devices, as the
/// runner's forward pass moves them: the residual stream (`n_embd` f32) from the embedding
/// on the CPU (device 0) to each block part's device and on to the output layer's; for a
/// block whose experts are split, the routing to each other device holding some
/// (`n_embd + 2·k` values) and its share back (`n_embd`); then the logits (`n_vocab` f32)
/// back to the CPU.
pub fn copies(
    blocks: &[BlockPlacement],
    output_device: usize,
    (n_embd, k): (usize, usize),
    n_vocab: usize,
) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut here = 0;
    let mut go = |to: usize, out: &mut Vec<(usize, usize, u64)>| {
        if to != here {
            out.push((here, to, n_embd as u64 * 4));
            here = to;
        }
    };
    for b in blocks {
        go(b.attention, &mut out);
        go(b.ffn, &mut out);
        for r in b.experts.iter().filter(|r| r.device != b.ffn) {
            out.push((b.ffn, r.device, (n_embd + 2 * k) as u64 * 4));
            out.push((r.device, b.ffn, n_embd as u64 * 4));
        }
    }
    go(output_device, &mut out);
    if here != 0 {
        out.push((here, 0, n_vocab as u64 * 4));
    }
    out
}

/// For each block whose routed experts are split, the bytes each device reads per token
/// for its share of the FFN, the part that runs side by side: its routed experts, and the
/// shared experts where the FFN is.
pub fn shares(
    tensors: &[TensorPlacement],
    blocks: &[BlockPlacement],
    rule: ReadRule,
) -> Vec<Vec<(usize, f64)>> {
    blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.experts.iter().any(|r| r.device != b.ffn))
        .map(|(i, _)| {
            let mut per: Vec<(usize, f64)> = Vec::new();
            for t in tensors.iter().filter(|t| t.role == Role::Block(i)) {
                let side = match Part::of(&t.name) {
                    Some((_, Part::Experts)) => true,
                    Some((_, Part::Ffn)) => t.name.contains("_shexp"),
                    _ => false,
                };
                if !side {
                    continue;
                }
                let bytes = bytes_read(t, rule);
                match per.iter_mut().find(|(d, _)| *d == t.device) {
                    Some((_, b)) => *b += bytes,
                    None => per.push((t.device, bytes)),
                }
            }
            per
        })
        .collect()
}

/// Seconds saved per token by computing each split block's shares side by side rather
/// than in turn: Σ shares/bw − max(slowest share, all shares at `together` bytes/s).
/// `None` when a device of a share has no measured bandwidth.
pub fn overlap_saving(
    shares: &[Vec<(usize, f64)>],
    bandwidth: &[Option<f64>],
    together: f64,
) -> Option<f64> {
    let mut saved = 0.0;
    for block in shares {
        let mut in_turn = 0.0;
        let mut slowest: f64 = 0.0;
        let mut bytes = 0.0;
        for &(d, b) in block {
            let t = b / bandwidth[d]?;
            in_turn += t;
            slowest = slowest.max(t);
            bytes += b;
        }
        saved += in_turn - slowest.max(bytes / together);
    }
    Some(saved)
}

/// Seconds per decode token: `bytes[d]` read at `bandwidth[d]` bytes/s on each device in
/// turn, and each copy at the slower of its two ends' bandwidths (a host copy is taken to
/// run at the read bandwidth). `None` when a device that has work to do, or a copy, has no
/// measured bandwidth (a GPU here), or when nothing is read.
pub fn token_secs(
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
    (secs > 0.0).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::plan::ExpertRange;

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

    fn on(devices: &[usize]) -> Vec<BlockPlacement> {
        devices
            .iter()
            .map(|&d| BlockPlacement {
                attention: d,
                ffn: d,
                experts: Vec::new(),
            })
            .collect()
    }

    /// One block on device 1 whose experts 4..8 are on the CPU.
    fn half_on_the_cpu() -> Vec<BlockPlacement> {
        let mut b = on(&[1]);
        b[0].experts = vec![
            ExpertRange {
                experts: 0..4,
                device: 1,
            },
            ExpertRange {
                experts: 4..8,
                device: 0,
            },
        ];
        b
    }

    #[test]
    fn copies_follow_the_boundaries() {
        // Everything on the CPU: none.
        assert_eq!(copies(&on(&[0, 0, 0]), 0, (8, 0), 100), []);
        // CPU, then device 1 for the last block and the output: in, and the logits back.
        assert_eq!(
            copies(&on(&[0, 0, 1]), 1, (8, 0), 100),
            [(0, 1, 32), (1, 0, 400)]
        );
        // Two accelerators, the output back on the CPU.
        assert_eq!(
            copies(&on(&[1, 2, 2]), 0, (8, 0), 100),
            [(0, 1, 32), (1, 2, 32), (2, 0, 32)]
        );
        // A block on device 1 with experts 4.. on the CPU: the routing of k = 2 out and
        // the share back.
        assert_eq!(
            copies(&half_on_the_cpu(), 1, (8, 2), 100),
            [(0, 1, 32), (1, 0, 48), (0, 1, 32), (1, 0, 400)]
        );
    }

    #[test]
    fn split_experts_overlap_up_to_what_memory_gives() {
        let moe = ReadRule {
            experts: (2, 8),
            tied_output_on_cpu: false,
        };
        let b = half_on_the_cpu();
        let half = |device, experts| TensorPlacement {
            experts: Some(experts),
            ..tensor("blk.0.ffn_up_exps.weight", device, 400)
        };
        let tensors = [
            half(1, 0..4),
            half(0, 4..8),
            tensor("blk.0.ffn_up_shexp.weight", 1, 100),
            tensor("blk.0.attn_q.weight", 1, 1000),
        ];
        // Each side reads 100 of its experts' bytes; the FFN's device 100 more (shared).
        let s = shares(&tensors, &b, moe);
        assert_eq!(s, vec![vec![(1, 200.0), (0, 100.0)]]);
        // In turn 200/10 + 100/10 = 30; side by side max(20, 300/20 = 15): 10 saved.
        let bw = [Some(10.0), Some(10.0)];
        assert_eq!(overlap_saving(&s, &bw, 20.0), Some(10.0));
        // Two threads that read no faster than one: max(20, 300/10 = 30), nothing saved.
        assert_eq!(overlap_saving(&s, &bw, 10.0), Some(0.0));
        assert_eq!(overlap_saving(&s, &[Some(10.0), None], 20.0), None);
    }

    #[test]
    fn devices_take_turns() {
        // 2 GB at 10 GB/s and 1 GB at 20 GB/s: 0.25 s; one 4e8-byte copy at 10 GB/s: 0.04 s.
        let bw = [Some(10e9), Some(20e9)];
        let t = token_secs(&[2e9, 1e9], &[(0, 1, 400_000_000)], &bw).unwrap();
        assert!((t - 0.29).abs() < 1e-12, "{t}");
        // A device without a bandwidth that has nothing to read does not matter...
        assert!(token_secs(&[2e9, 0.0], &[], &[Some(10e9), None]).is_some());
        // ...one with work, or a copy to it, leaves the prediction open.
        assert_eq!(token_secs(&[2e9, 1e9], &[], &[Some(10e9), None]), None);
        assert_eq!(
            token_secs(&[2e9, 0.0], &[(0, 1, 4)], &[Some(10e9), None]),
            None
        );
    }
}
