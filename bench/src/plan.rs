//! `bench plan`: the memory plan for a GGUF (its header is enough) on real or hypothetical
//! devices — "how would this model split over 8×80 GiB?" before downloading it.

use std::io::Write;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use strata_engine::generate::args::PlacementArgs;
use strata_engine::gguf::GgufFile;
use strata_engine::plan::{
    self, host_free_bytes, parse_bytes, parse_gpus, parse_tensor_split, Device, NumGpu, PlanError,
    PlanModel, RunSettings,
};
use strata_kernels_cpu::GgmlType;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The model (a header-only GGUF is enough).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Hypothetical GPUs: `8x80GiB`, `24GiB,24GiB,12GiB`, `2x24GB,12GiB`. Without it: the
    /// CUDA devices the driver reports, with their free memory.
    #[arg(long)]
    pub gpus: Option<String>,
    /// Host memory to plan for (default: MemAvailable from /proc/meminfo).
    #[arg(long = "host-mem")]
    pub host_mem: Option<String>,
    /// Context length per sequence.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    pub ctx_size: usize,
    /// Logical batch size.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Physical batch size: tokens per forward pass (sizes the scratch).
    #[arg(long = "ubatch-size", visible_alias = "ub", default_value_t = 512)]
    pub ubatch_size: usize,
    /// Sequences decoded together (each gets `--ctx-size` positions of KV cache).
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 1)]
    pub parallel: usize,
    /// KV cache type: f16 or f32.
    #[arg(long = "kv-type", default_value = "f16")]
    pub kv_type: String,
    /// Layers on GPUs, the output layer counted as one (`-ngl`): a number, or `auto`.
    #[arg(
        long = "num-gpu",
        visible_alias = "ngl",
        default_value = "auto",
        allow_hyphen_values = true
    )]
    pub num_gpu: String,
    /// Memory kept free on each GPU.
    #[arg(long, default_value = "512MiB")]
    pub margin: String,
    /// Proportions in which the GPUs share the layers (default: their free memory).
    #[arg(long = "tensor-split", visible_alias = "ts")]
    pub tensor_split: Option<String>,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// `table` (with an Ollama-style summary line) or `json`.
    #[arg(short = 'o', long = "output", default_value = "table")]
    pub output: String,
}

/// The devices and settings the flags describe.
pub fn devices_and_settings(a: &Args) -> Result<(Vec<Device>, RunSettings), PlanError> {
    let host = match &a.host_mem {
        Some(s) => parse_bytes(s)?,
        None => host_free_bytes()?,
    };
    let mut devices = vec![Device::cpu(host)];
    match &a.gpus {
        Some(g) => devices.extend(parse_gpus(g)?),
        None => devices.extend(cuda_devices()),
    }
    let kv_type = match GgmlType::from_name(&a.kv_type) {
        Some(t @ (GgmlType::F16 | GgmlType::F32)) => t,
        _ => {
            return Err(PlanError::BadSettings {
                why: format!("--kv-type '{}': expected f16 or f32", a.kv_type),
            })
        }
    };
    let mut settings = RunSettings {
        n_ctx: a.ctx_size,
        n_batch: a.batch_size,
        n_ubatch: a.ubatch_size.min(a.batch_size),
        kv_type,
        n_seq: a.parallel,
        num_gpu: NumGpu::parse(&a.num_gpu)?,
        margin: parse_bytes(&a.margin)?,
        tensor_split: a
            .tensor_split
            .as_deref()
            .map(parse_tensor_split)
            .transpose()?,
        overrides: a.placement.rules()?,
        fill: a.placement.fill,
        ..RunSettings::default()
    };
    // A decode step of every sequence in one batch: a row of logits each.
    settings.n_outputs = settings.step_outputs();
    Ok((devices, settings))
}

/// The CUDA devices the driver reports, with their free memory now; none (and a note on
/// stderr saying why) when there is no driver or no device.
fn cuda_devices() -> Vec<Device> {
    match strata_kernels_cuda::devices() {
        Ok(list) => list
            .iter()
            .map(|d| Device::gpu(d.ordinal, d.free_bytes as u64))
            .collect(),
        Err(e) => {
            eprintln!("note: no CUDA devices ({e}): planning for the CPU alone; --gpus plans for hypothetical ones");
            Vec::new()
        }
    }
}

pub fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if a.output != "table" && a.output != "json" {
        return Err(format!("--output '{}': expected table or json", a.output).into());
    }
    let (devices, settings) = devices_and_settings(a)?;
    let file = GgufFile::open(&a.model)?;
    let model = PlanModel::from_gguf(&file).map_err(|e| format!("{}: {e}", a.model.display()))?;
    let plan = plan::plan(&model, &devices, &settings)?;
    let text = if a.output == "json" {
        format!("{}\n", plan::json::to_json(&plan))
    } else {
        format!(
            "{}\n{}\n",
            plan::table::render(&plan),
            plan::table::ollama_line(&plan)
        )
    };
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
