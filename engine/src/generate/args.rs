//! The `generate` command line, with the flag names llama.cpp users know.

use std::path::PathBuf;

use clap::Parser;

use crate::plan::NumGpu;

pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Parser)]
#[command(
    name = "generate",
    about = "Generate text with a GGUF model (llama, qwen2, qwen3) on the CPU and CUDA GPUs"
)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short = 'm', long = "model", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of text or a full context).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 256,
        allow_negative_numbers = true
    )]
    pub n_predict: i64,
    /// Context size in tokens (0: the model's training context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Most prompt tokens per forward pass (llama.cpp's and `bench`'s 512: a long prompt's
    /// weights are read once per 512 tokens, and `bench plan` sizes the same scratch).
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Continuations of the prompt decoded side by side (llama.cpp's `-np`, as
    /// llama-batched takes it): the prompt is evaluated once and its KV cache copied to each
    /// sequence; each samples with its own seed (--seed + i), and every step decodes all of
    /// them in one batch, reading each weight once for all. Printed when done.
    #[arg(long = "parallel", default_value_t = 1)]
    pub parallel: usize,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Sampling temperature (0 or below: greedy, as in llama.cpp).
    #[arg(long = "temp", default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this total probability (1.0: all).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: none).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for repeating one of the last --repeat-last-n tokens (1.0: none).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many of the last tokens --repeat-penalty looks at.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default or -1: from the clock; printed with --verbose).
    #[arg(long = "seed", allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Layers to put on GPUs (`-ngl`): a count, or `auto` (or -1) for as many as fit on the
    /// CUDA devices the driver shows (or on `--pose-gpus` devices); 0 keeps all on the CPU.
    #[arg(
        long = "num-gpu",
        visible_alias = "n-gpu-layers",
        default_value = "auto",
        allow_negative_numbers = true,
        value_parser = parse_num_gpu
    )]
    pub num_gpu: NumGpu,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Devices sharing a block's experts compute one after the other instead of at the
    /// same time (same results; for comparison).
    #[arg(long = "no-overlap")]
    pub no_overlap: bool,
    /// Split the layers onto CPU devices that pose as GPUs (to try splits without one):
    /// sizes such as `64MiB,64MiB`, or `REPORTED:ALLOWED` (`1GiB:100MiB`) for a device that
    /// allows less than it reports. `--num-gpu` then places layers on them.
    #[arg(long = "pose-gpus")]
    pub pose_gpus: Option<String>,
    /// Host memory the plan may use (e.g. `16GiB`; default: what the system reports as
    /// available). A plan needing more is refused before loading; a larger value loads it
    /// anyway.
    #[arg(long = "host-mem", value_parser = parse_host_mem)]
    pub host_mem: Option<u64>,
    /// Wrap the prompt in the model's chat template (tokenizer.chat_template).
    #[arg(long = "chat")]
    pub chat: bool,
    /// Generate exactly -n tokens, past end-of-text (for benchmarks).
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Write the timings as one JSON object to this file.
    #[arg(long = "timings-json")]
    pub timings_json: Option<PathBuf>,
    /// Print model, tokenizer and sampling details to stderr.
    #[arg(long = "verbose")]
    pub verbose: bool,
}

/// Where tensors go beyond `-ngl`: the flags `generate` and `bench plan` share.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// Tensor overrides (`-ot REGEX=DEVICE[,…]`, repeatable, as in llama.cpp): tensors whose
    /// name matches go to DEVICE (`CPU`, `CUDA1`; the first rule that matches wins). A
    /// block's attention, FFN and routed experts each move whole.
    #[arg(long = "override-tensor")]
    pub override_tensor: Vec<String>,
    /// Keep every routed expert on the CPU (`-ot exps=CPU`).
    #[arg(long = "cpu-moe")]
    pub cpu_moe: bool,
    /// Keep the routed experts of the first N blocks on the CPU.
    #[arg(long = "n-cpu-moe", default_value_t = 0)]
    pub n_cpu_moe: usize,
    /// What `-ngl auto` fills the GPUs with: `experts` (every block's attention, norms and
    /// shared experts first, then routed experts one by one) or `layers` (whole layers, as
    /// Ollama's num_gpu).
    #[arg(long = "fill", default_value = "experts", value_parser = parse_fill)]
    pub fill: crate::plan::AutoFill,
}

impl PlacementArgs {
    /// The `-ot` rules the flags make, in llama.cpp's order.
    pub fn rules(&self) -> Result<Vec<crate::plan::TensorOverride>, crate::plan::PlanError> {
        crate::plan::overrides::from_flags(&self.override_tensor, self.cpu_moe, self.n_cpu_moe)
    }
}

fn parse_fill(text: &str) -> Result<crate::plan::AutoFill, String> {
    crate::plan::AutoFill::parse(text).map_err(|_| "expected layers or experts".to_string())
}

fn parse_num_gpu(text: &str) -> Result<NumGpu, String> {
    NumGpu::parse(text).map_err(|_| "expected a layer count or `auto`".to_string())
}

/// llama.cpp's multi-letter short flags, which clap cannot declare, and the long flags
/// they stand for.
const MULTI_LETTER: [(&str, &str); 3] = [
    ("-ngl", "--num-gpu"),
    ("-ot", "--override-tensor"),
    ("-np", "--parallel"),
];

/// Rewrites llama.cpp's multi-letter short flags (`-ngl 20`, `-ot exps=CPU`) as long ones
/// before parsing.
pub fn normalize_argv(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            for (short, long) in MULTI_LETTER {
                if a == short {
                    return long.to_string();
                }
                if let Some(v) = a.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                    return format!("{long}={v}");
                }
            }
            a
        })
        .collect()
}

fn parse_host_mem(text: &str) -> Result<u64, String> {
    crate::plan::parse_bytes(text).map_err(|e| e.to_string())
}

/// A seed, or -1 for one from the clock (llama.cpp's spelling of "random").
fn parse_seed(text: &str) -> Result<u64, String> {
    match text.trim() {
        "-1" => Ok(clock_seed()),
        t => t
            .parse()
            .map_err(|_| "expected a whole number ≥ 0, or -1 for a random seed".to_string()),
    }
}

/// A seed from the clock: what a run without --seed (or with -1) uses.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
