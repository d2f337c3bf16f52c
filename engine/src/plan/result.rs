//! The plan the planner returns: each device's share, where every tensor lives, and why
//! one more layer would not fit.

use std::ops::Range;

use super::cost::Role;
use super::devices::{Device, DeviceKind};
use super::parts::{BlockPlacement, Part};
use super::settings::RunSettings;

/// One device's share of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub device: Device,
    /// Bytes of the weights it holds (alignment included). On the CPU they stay in the
    /// memory-mapped file; on a GPU they are one buffer.
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub scratch_bytes: u64,
    /// Bytes the plan may use: free minus the margin on a GPU, free on the CPU.
    pub budget_bytes: u64,
    /// Blocks whose attention and KV cache it holds (and, unless listed elsewhere, their
    /// FFN and routed experts), ascending.
    pub blocks: Vec<usize>,
    /// Blocks whose FFN it holds while their attention is elsewhere.
    pub ffn_blocks: Vec<usize>,
    /// Routed experts it holds of blocks whose FFN is elsewhere: (block, experts).
    pub experts: Vec<(usize, Range<usize>)>,
    pub output: bool,
    pub embedding: bool,
}

impl DevicePlan {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.kv_bytes + self.scratch_bytes
    }

    pub fn fits(&self) -> bool {
        self.total_bytes() <= self.budget_bytes
    }

    /// Layers as `num_gpu` counts them: blocks, plus one for the output layer.
    pub fn layers(&self) -> usize {
        self.blocks.len() + usize::from(self.output)
    }

    /// Whether it computes any part of the forward pass (and so needs a scratch).
    pub fn runs_anything(&self) -> bool {
        !self.blocks.is_empty()
            || !self.ffn_blocks.is_empty()
            || !self.experts.is_empty()
            || self.output
    }
}

/// Where one tensor lives. A tied output layer on a GPU adds a second entry for
/// `token_embd.weight` (role `Output`): its copy on that GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlacement {
    pub name: String,
    pub role: Role,
    /// Index into [`Plan::devices`].
    pub device: usize,
    pub bytes: u64,
    /// For a slice of a 3-D expert stack: its experts (`None`: the whole tensor).
    pub experts: Option<Range<usize>>,
}

/// Why one more layer on the GPUs does not fit (for `auto` plans that stop short of all).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitNote {
    /// The num_gpu that does not fit (the plan's + 1).
    pub num_gpu: usize,
    /// The proportional split of that many layers: the first device over its budget.
    pub over: DevicePlan,
    /// Filling each GPU to its limit in turn, the first block left without room (`None`:
    /// the output layer).
    pub greedy_leftover: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub arch: String,
    pub n_layer: usize,
    pub settings: RunSettings,
    /// The CPU first, then the GPUs in the order given.
    pub devices: Vec<DevicePlan>,
    /// Device index of each block's attention (and KV cache).
    pub block_devices: Vec<usize>,
    /// Where each part of each block lives.
    pub blocks: Vec<BlockPlacement>,
    pub output_device: usize,
    /// Every tensor, with its device.
    pub tensors: Vec<TensorPlacement>,
    /// Layers on GPUs, as `num_gpu` counts them (output layer included).
    pub num_gpu: usize,
    /// Weight bytes of each block, the KV cache bytes of one block, the output layer's
    /// bytes on a GPU: the numbers the placement was decided from.
    pub block_weights: Vec<u64>,
    pub block_kv_bytes: u64,
    pub output_gpu_bytes: u64,
    /// Scratch of one device that runs layers.
    pub scratch_bytes: u64,
    /// Routed experts a token reads of those a block has (`expert_used_count`,
    /// `expert_count`); (1, 1) without experts.
    pub experts_read: (usize, usize),
    pub limit: Option<LimitNote>,
    /// Things that do not stop the plan but that a user should know.
    pub warnings: Vec<String>,
}

impl Plan {
    /// True when every GPU's total is within its budget (always so for a returned plan;
    /// false only for the plans shown in refusals).
    pub fn fits(&self) -> bool {
        self.devices
            .iter()
            .filter(|d| d.device.kind == DeviceKind::Gpu)
            .all(DevicePlan::fits)
    }

    pub fn gpus(&self) -> impl Iterator<Item = &DevicePlan> {
        self.devices
            .iter()
            .filter(|d| d.device.kind == DeviceKind::Gpu)
    }

    /// Weight bytes device `d` reads per decoded token: all it holds, routed experts at
    /// `expert_used_count / expert_count` of their bytes (uniform routing), none of the
    /// token embedding (one row).
    pub fn read_per_token(&self, d: usize) -> u64 {
        let (used, n) = self.experts_read;
        self.tensors
            .iter()
            .filter(|t| t.device == d && t.role != Role::Embedding)
            .map(|t| match Part::of(&t.name) {
                Some((_, Part::Experts)) => t.bytes * used as u64 / n as u64,
                _ => t.bytes,
            })
            .sum()
    }

    /// Bytes of routed experts on GPUs and in all.
    pub fn expert_bytes_on_gpus(&self) -> (u64, u64) {
        let mut on = 0;
        let mut all = 0;
        for t in &self.tensors {
            if matches!(Part::of(&t.name), Some((_, Part::Experts))) {
                all += t.bytes;
                if self.devices[t.device].device.kind == DeviceKind::Gpu {
                    on += t.bytes;
                }
            }
        }
        (on, all)
    }
}

/// Consecutive runs in a sorted list of block indices.
pub fn runs(blocks: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some(r) if r.end == b => r.end = b + 1,
            _ => out.push(b..b + 1),
        }
    }
    out
}
