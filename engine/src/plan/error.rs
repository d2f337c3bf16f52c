//! Why a plan could not be made.

use thiserror::Error;

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

    #[error("-ot/--override-tensor '{text}': {why}")]
    BadOverride { text: String, why: String },

    /// What `-ot`, `--cpu-moe` or `--n-cpu-moe` pin on a GPU exceeds it.
    #[error("the tensor overrides do not fit: {why}\n{table}")]
    OverridesDoNotFit { why: String, table: String },

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
