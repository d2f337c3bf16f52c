//! The settings a plan is made for: how many layers go to the GPUs, and the run's sizes.

use std::fmt;

use strata_kernels_cpu::GgmlType;

use super::error::PlanError;
use super::overrides::TensorOverride;

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

/// What `auto` places on the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoFill {
    /// Whole layers, last blocks first (Ollama's and llama.cpp's num_gpu).
    Layers,
    /// Every block's attention, norms, router, shared experts and dense FFN first (what
    /// every token reads), then routed experts, down to single experts.
    Experts,
}

impl AutoFill {
    pub fn parse(text: &str) -> Result<AutoFill, PlanError> {
        match text.trim() {
            "layers" => Ok(AutoFill::Layers),
            "experts" => Ok(AutoFill::Experts),
            t => Err(PlanError::BadSettings {
                why: format!("--fill '{t}': expected layers or experts"),
            }),
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
    /// `-ot`, `--cpu-moe`, `--n-cpu-moe` rules, in order (the first that matches wins).
    pub overrides: Vec<TensorOverride>,
    /// What `auto` fills the GPUs with (a model without routed experts: layers either way).
    pub fill: AutoFill,
    /// Devices work at the same time where the placement allows (off: one at a time, for
    /// comparison; the results are the same).
    pub overlap: bool,
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
            overrides: Vec::new(),
            fill: AutoFill::Experts,
            overlap: true,
        }
    }
}

impl RunSettings {
    /// Positions the KV cache of one block holds: `n_ctx` for each sequence.
    pub fn kv_cells(&self) -> usize {
        self.n_ctx * self.n_seq
    }

    /// Rows of logits a decode step of every sequence takes (one batch of a row a
    /// sequence): what `n_outputs` is when it is not every row of a batch.
    pub fn step_outputs(&self) -> usize {
        self.n_seq.min(self.n_ubatch)
    }
}
