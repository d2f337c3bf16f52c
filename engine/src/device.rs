//! Where a piece of the model runs.
//!
//! Every transformer block and the output layer is assigned a [`DeviceId`]; the block's KV
//! cache and scratch live on that device, and activations move between devices only through
//! the runner's one explicit copy at a boundary. An accelerator (`Accel(i)`) is the plan's
//! i-th GPU; today its backend is [`crate::accel`]'s CPU device that poses as one (own
//! budget, own copies of the weights); the CUDA backend plugs in behind the same id.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceId {
    Cpu,
    /// The i-th accelerator (the plan's device i + 1).
    Accel(u32),
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => f.write_str("CPU"),
            DeviceId::Accel(i) => write!(f, "ACCEL{i}"),
        }
    }
}

/// Which device runs each block and the output layer (final norm + output projection).
/// The token embedding lookup always runs on the CPU, where the memory map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub blocks: Vec<DeviceId>,
    pub output: DeviceId,
}

impl Placement {
    /// Everything on the CPU.
    pub fn all_cpu(n_layer: usize) -> Placement {
        Placement {
            blocks: vec![DeviceId::Cpu; n_layer],
            output: DeviceId::Cpu,
        }
    }

    /// The distinct devices used, in order of first use along the forward pass: always the
    /// CPU first (the embedding lookup runs there and the logits come back to it).
    pub fn devices(&self) -> Vec<DeviceId> {
        let mut out = vec![DeviceId::Cpu];
        for d in self.blocks.iter().chain(std::iter::once(&self.output)) {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }
}
