//! The parts of a block that may sit on different devices, and what each costs.
//!
//! A block is placed part by part: its attention (with the norm before it and the block's
//! KV cache), its FFN (the norm before it, the router, shared experts or the dense FFN) and
//! its routed experts, which may be cut further into ranges of experts. A range of a 3-D
//! expert tensor is a contiguous slice of it (expert `x` is rows `x·f..(x+1)·f`), held in
//! a device buffer at an aligned offset like a whole tensor.

use std::ops::Range;

use super::cost::{padded, Role, TensorCost};

/// A part of a block: the unit that `-ot` rules and the planner move between devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// `attn_*`: the attention norm and projections (and the block's KV cache).
    Attention,
    /// `ffn_norm`, the router (`ffn_gate_inp`, `exp_probs_b`), shared experts
    /// (`*_shexp`), the dense FFN (`ffn_gate`/`ffn_up`/`ffn_down`).
    Ffn,
    /// The routed experts' 3-D stacks (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`).
    Experts,
}

impl Part {
    /// The part of block tensor `name` (its full name, `blk.3.attn_q.weight`); `None` for a
    /// tensor outside the blocks.
    pub fn of(name: &str) -> Option<(usize, Part)> {
        let Role::Block(i) = Role::of(name) else {
            return None;
        };
        let local = name.split_once('.').map_or(name, |(_, r)| r);
        let local = local.split_once('.').map_or(local, |(_, r)| r);
        let part = if local.contains("_exps") {
            Part::Experts
        } else if local.starts_with("attn") {
            Part::Attention
        } else {
            Part::Ffn
        };
        Some((i, part))
    }

    pub fn name(self) -> &'static str {
        match self {
            Part::Attention => "attention",
            Part::Ffn => "FFN",
            Part::Experts => "routed experts",
        }
    }
}

/// What one block's parts cost, and how its expert stacks cut into ranges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlockCost {
    /// Bytes of the attention's and the FFN's tensors.
    pub attention: u64,
    pub ffn: u64,
    /// Data bytes of one expert in each stack (empty: a dense block).
    pub stack_expert_bytes: Vec<u64>,
    pub n_expert: usize,
    pub alignment: u64,
}

impl BlockCost {
    /// Costs block `i` of `tensors`, whose stacks hold `n_expert` experts.
    pub fn new(tensors: &[TensorCost], i: usize, n_expert: usize, alignment: u64) -> BlockCost {
        let mut c = BlockCost {
            n_expert,
            alignment,
            ..BlockCost::default()
        };
        for t in tensors {
            match Part::of(&t.name) {
                Some((b, Part::Attention)) if b == i => c.attention += t.bytes,
                Some((b, Part::Ffn)) if b == i => c.ffn += t.bytes,
                Some((b, Part::Experts)) if b == i => c
                    .stack_expert_bytes
                    .push(t.data_bytes / n_expert.max(1) as u64),
                _ => {}
            }
        }
        c
    }

    pub fn has_experts(&self) -> bool {
        !self.stack_expert_bytes.is_empty()
    }

    /// Bytes of `count` experts of every stack, each stack's slice aligned on its own.
    pub fn experts_bytes(&self, count: usize) -> u64 {
        self.stack_expert_bytes
            .iter()
            .map(|&b| slice_bytes(b, count, self.alignment))
            .sum()
    }
}

/// Bytes of a slice of `count` experts of `expert_bytes` each, aligned.
pub fn slice_bytes(expert_bytes: u64, count: usize, alignment: u64) -> u64 {
    padded(expert_bytes * count as u64, alignment).unwrap_or(u64::MAX)
}

/// Where a range of one block's routed experts lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertRange {
    pub experts: Range<usize>,
    /// Index into the plan's devices.
    pub device: usize,
}

/// Where each part of one block lives (device indices into the plan's devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlacement {
    /// Attention and the block's KV cache.
    pub attention: usize,
    pub ffn: usize,
    /// The routed experts, as consecutive ranges covering them all in order (empty: a dense
    /// block).
    pub experts: Vec<ExpertRange>,
}

impl BlockPlacement {
    /// The device holding the whole block, if one does.
    pub fn whole(&self) -> Option<usize> {
        let d = self.attention;
        (self.ffn == d && self.experts.iter().all(|r| r.device == d)).then_some(d)
    }

    /// The experts device `d` holds (at most one range: ranges are merged per device).
    pub fn experts_on(&self, d: usize) -> Option<Range<usize>> {
        self.experts
            .iter()
            .find(|r| r.device == d)
            .map(|r| r.experts.clone())
    }
}

/// Ranges of `n` experts from per-expert owners, each device's experts as one range. The
/// planner gives each device consecutive experts, so a device never has two ranges.
pub fn ranges_of(owner: &[usize]) -> Vec<ExpertRange> {
    let mut out: Vec<ExpertRange> = Vec::new();
    for (x, &d) in owner.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.device == d => r.experts.end = x + 1,
            _ => out.push(ExpertRange {
                experts: x..x + 1,
                device: d,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_names() {
        assert_eq!(Part::of("blk.3.attn_q.weight"), Some((3, Part::Attention)));
        assert_eq!(
            Part::of("blk.3.attn_kv_a_norm.weight"),
            Some((3, Part::Attention))
        );
        assert_eq!(Part::of("blk.0.ffn_norm.weight"), Some((0, Part::Ffn)));
        assert_eq!(Part::of("blk.7.ffn_gate_inp.weight"), Some((7, Part::Ffn)));
        assert_eq!(Part::of("blk.7.exp_probs_b.bias"), Some((7, Part::Ffn)));
        assert_eq!(Part::of("blk.7.ffn_up_shexp.weight"), Some((7, Part::Ffn)));
        assert_eq!(
            Part::of("blk.60.ffn_down_exps.weight"),
            Some((60, Part::Experts))
        );
        assert_eq!(Part::of("output.weight"), None);
        assert_eq!(Part::of("token_embd.weight"), None);
    }

    #[test]
    fn expert_slices_are_aligned_per_stack() {
        let c = BlockCost {
            stack_expert_bytes: vec![100, 30],
            n_expert: 8,
            alignment: 32,
            ..BlockCost::default()
        };
        assert_eq!(c.experts_bytes(0), 0);
        // 100 → 128, 30 → 32.
        assert_eq!(c.experts_bytes(1), 160);
        // 300 → 320, 90 → 96.
        assert_eq!(c.experts_bytes(3), 416);
    }

    #[test]
    fn ranges_merge_per_device() {
        let r = ranges_of(&[2, 2, 2, 0, 0]);
        assert_eq!(
            r,
            vec![
                ExpertRange {
                    experts: 0..3,
                    device: 2
                },
                ExpertRange {
                    experts: 3..5,
                    device: 0
                }
            ]
        );
        let b = BlockPlacement {
            attention: 2,
            ffn: 2,
            experts: r,
        };
        assert_eq!(b.whole(), None);
        assert_eq!(b.experts_on(0), Some(3..5));
    }
}
