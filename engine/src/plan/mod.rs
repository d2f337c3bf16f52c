//! The memory planner: which device holds each block, the output layer and every tensor,
//! and how many bytes each device needs — exactly, from the GGUF header alone.
//!
//! Ollama once planned 51 of DeepSeek-R1's layers onto 8×80 GB GPUs because its estimate
//! costed the model's first (small, dense) layers while the last (MoE, ~11.4 GiB) ones were
//! offloaded, and the load died. This planner costs the very tensors each device will hold,
//! sizes KV cache and scratch with the functions the runner allocates with
//! ([`crate::buffers`]), and refuses what does not fit before anything is loaded.
//!
//! - [`devices`]: the CPU and GPUs (real or hypothetical, `--gpus 8x80GiB`).
//! - [`cost`]: bytes of every tensor, grouped per block, output layer and embedding.
//! - [`model`]: what the planner needs from a GGUF header ([`PlanModel`]).
//! - [`placement`]: the placement rules and [`plan`] itself.
//! - [`table`], [`json`]: the plan as a table, an Ollama-style log line, and JSON.

pub mod bytes;
pub mod cost;
pub mod devices;
pub mod json;
pub mod mla;
pub mod model;
pub mod placement;
pub mod table;

use std::fmt;

use strata_kernels_cpu::GgmlType;
use thiserror::Error;

pub use bytes::{parse_bytes, Bytes};
pub use cost::{Role, TensorCost};
pub use devices::{host_free_bytes, parse_gpus, parse_tensor_split, Device, DeviceKind};
pub use model::{BufferModel, PlanModel};
pub use placement::{plan, DevicePlan, Plan, TensorPlacement};

/// How many layers go to the GPUs, as `num_gpu` / `-ngl` count them: the output layer
/// counts as one, so `Layers(k)` puts the last k−1 blocks and the output layer on GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumGpu {
    /// As many as fit, last blocks first.
    Auto,
    Layers(usize),
}

impl NumGpu {
    /// `auto`, or a non-negative layer count (`-1` means auto, as in Ollama).
    pub fn parse(text: &str) -> Result<NumGpu, PlanError> {
        match text.trim() {
            "auto" | "-1" => Ok(NumGpu::Auto),
            t => t
                .parse()
                .map(NumGpu::Layers)
                .map_err(|_| PlanError::BadNumGpu {
                    text: text.to_string(),
                }),
        }
    }
}

impl fmt::Display for NumGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumGpu::Auto => f.write_str("auto"),
            NumGpu::Layers(k) => write!(f, "{k}"),
        }
    }
}

/// The settings that decide buffer sizes and placement.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Context length of each sequence (positions in the KV cache per sequence).
    pub n_ctx: usize,
    /// Logical batch: tokens submitted per call (llama.cpp's `-b`).
    pub n_batch: usize,
    /// Physical batch: tokens one forward pass processes at once; scratch is sized for it.
    pub n_ubatch: usize,
    /// Element type of the KV cache (F16 or F32).
    pub kv_type: GgmlType,
    /// Sequences decoded together; the KV cache holds `n_ctx` positions for each.
    pub n_seq: usize,
    /// Rows of logits one forward pass computes (1: only the last position).
    pub n_outputs: usize,
    pub num_gpu: NumGpu,
    /// Bytes kept free on every GPU (for the driver, other processes, fragmentation).
    pub margin: u64,
    /// Proportions in which GPUs share the blocks; `None`: in proportion to free memory.
    pub tensor_split: Option<Vec<f64>>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            n_ctx: 4096,
            n_batch: 512,
            n_ubatch: 512,
            kv_type: GgmlType::F16,
            n_seq: 1,
            n_outputs: 1,
            num_gpu: NumGpu::Auto,
            margin: 512 << 20,
            tensor_split: None,
        }
    }
}

impl RunSettings {
    /// Positions the KV cache of one block holds: `n_ctx` for each sequence.
    pub fn kv_cells(&self) -> usize {
        self.n_ctx * self.n_seq
    }
}

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("size '{text}': {why}")]
    BadSize { text: String, why: String },

    #[error("--gpus '{text}': {why}")]
    BadGpus { text: String, why: String },

    #[error("--tensor-split '{text}': {why}")]
    BadTensorSplit { text: String, why: String },

    #[error("--num-gpu '{text}': expected 'auto', -1 or a layer count (0, 1, 2, ...)")]
    BadNumGpu { text: String },

    #[error("host memory: {why}")]
    HostMemory { why: String },

    #[error("devices: {why}")]
    BadDevices { why: String },

    #[error("run settings: {why}")]
    BadSettings { why: String },

    #[error("model: {why}")]
    Model { why: String },

    #[error("model: {0}")]
    Gguf(#[from] crate::gguf::GgufError),

    #[error("model: {0}")]
    Config(#[from] crate::config::ConfigError),

    /// An explicit `num_gpu` that no split can fit.
    #[error(
        "num_gpu = {requested} does not fit: {why}\n{table}\nThe largest num_gpu that fits \
         is {largest_fitting}."
    )]
    DoesNotFit {
        requested: usize,
        largest_fitting: usize,
        why: String,
        table: String,
    },
}
