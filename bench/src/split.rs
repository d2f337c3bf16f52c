//! `bench split`: generation throughput of one model for several num_gpu values on the CUDA
//! devices the driver shows (or on CPU devices posing as GPUs), with the share of the wall
//! time each device was busy — where every millisecond of a token goes.
//!
//! Each num_gpu value loads the model anew (plan, allocation, upload), then times a prefill
//! of `-p` tokens and `-n` decode steps of one token each (greedy), as llama-bench's pp and
//! tg. Token ids are the model's own greedy continuation, so the runs are reproducible.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use strata_engine::devices::CudaAccel;
use strata_engine::devices::{Accelerator, PseudoAccel};
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::Ledger;
use strata_engine::load::{decode_settings, load};
use strata_engine::model::Model;
use strata_engine::plan::{host_free_bytes, Device, NumGpu};

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// num_gpu values, comma-separated (`0,15,31`, `auto`); default: 0, half the blocks,
    /// and every layer.
    #[arg(long = "num-gpu", visible_alias = "ngl")]
    pub num_gpu: Option<String>,
    /// Prompt tokens (prefill, in batches of `-b`).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens (decode, one at a time).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// CPU devices posing as GPUs instead of CUDA (`1GiB,1GiB`; see generate --pose-gpus).
    #[arg(long = "pose-gpus")]
    pub pose_gpus: Option<String>,
}

pub fn run(args: &Args) -> Result<(), String> {
    // On a pool worker, as `generate` runs (`pool::on_pool`).
    strata_engine::pool::on_pool(args.threads.map(|t| t.max(1)), || run_in_pool(args))
}

fn run_in_pool(args: &Args) -> Result<(), String> {
    let accels: Vec<Accelerator> = match &args.pose_gpus {
        Some(t) => PseudoAccel::parse_list(t)?
            .into_iter()
            .map(Accelerator::from)
            .collect(),
        None => CudaAccel::discover()
            .map_err(|e| format!("{e} (use --pose-gpus to split onto CPU devices)"))?
            .into_iter()
            .map(Accelerator::from)
            .collect(),
    };
    let file = GgufFile::open(&args.model).map_err(|e| e.to_string())?;
    let model = Model::bind(&file, |_| {}).map_err(|e| e.to_string())?;
    let n_layer = model.cfg.n_layer;
    let values: Vec<NumGpu> = match &args.num_gpu {
        Some(t) => t
            .split(',')
            .map(|v| NumGpu::parse(v.trim()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        None => vec![
            NumGpu::Layers(0),
            NumGpu::Layers(n_layer / 2),
            NumGpu::Layers(n_layer + 1),
        ],
    };
    // `-p 0` (llama-bench: no prompt test) still starts decode from one token.
    let n_ctx = args.n_prompt.max(1) + args.n_gen;
    println!(
        "model {} ({} blocks), pp{} tg{}, devices: CPU, {}\n",
        args.model.display(),
        n_layer,
        args.n_prompt,
        args.n_gen,
        accels
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| num_gpu | layers on GPUs | pp tok/s | tg tok/s | busy during tg (share of wall) |");
    println!("|---|---|---|---|---|");
    for num_gpu in values {
        let mut settings = decode_settings(n_ctx, args.batch_size, num_gpu);
        if args.pose_gpus.is_some() {
            settings.margin = 0;
        }
        // Unknown host memory: no host limit.
        let host = Device::cpu(host_free_bytes().unwrap_or(u64::MAX));
        let ledger = Ledger::new();
        let loaded = load(&file, &model, host, &accels, &settings, &ledger)
            .map_err(|e| format!("num_gpu {num_gpu}: {e}"))?;
        let mut r = loaded.runner;

        // Prompt: the model's own greedy text from token 1 (warms up every kernel too).
        let mut prompt = vec![1u32];
        while prompt.len() < args.n_prompt {
            let l = r
                .eval(&prompt[prompt.len() - 1..])
                .map_err(|e| e.to_string())?;
            prompt.push(argmax(l));
        }
        r.reset();
        let t = Instant::now();
        let mut l = r.eval(&prompt).map_err(|e| e.to_string())?.to_vec();
        let pp = match args.n_prompt {
            0 => "-".to_string(),
            _ => format!("{:.1}", prompt.len() as f64 / t.elapsed().as_secs_f64()),
        };

        let before: Vec<_> = r.devices().iter().map(|d| d.busy).collect();
        let t = Instant::now();
        for _ in 0..args.n_gen {
            let tok = argmax(&l);
            l = r.eval(&[tok]).map_err(|e| e.to_string())?.to_vec();
        }
        let wall = t.elapsed();
        let tg = args.n_gen as f64 / wall.as_secs_f64();
        let busy: Vec<String> = r
            .devices()
            .iter()
            .zip(&before)
            .map(|(d, b)| {
                let name = ledger.name(d.id);
                format!(
                    "{name} {:.0}%",
                    100.0 * (d.busy - *b).as_secs_f64() / wall.as_secs_f64()
                )
            })
            .collect();
        println!(
            "| {num_gpu} | {} | {pp} | {tg:.1} | {} |",
            loaded.plan.num_gpu,
            busy.join(", ")
        );
    }
    Ok(())
}

fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap_or(0)
}
