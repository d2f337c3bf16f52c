//! `bench split`: generation throughput of one model for several num_gpu values on the CUDA
//! devices the driver shows (or on CPU devices posing as GPUs), llama-bench style, with
//! where every millisecond went: each device's busy, copying and idle shares of the wall
//! time, the share in which devices overlapped, and the bandwidth model's prediction.
//!
//! Each num_gpu value loads the model anew (plan, allocation, upload), then runs one
//! warm-up and `-r` timed runs of each test, as llama-bench does: pp, a prefill of `-p`
//! tokens (in batches of `-b`), and tg, `-n` decode steps of one token (greedy), each from
//! an empty context. Token ids are the model's own greedy continuation of token 1, so the
//! runs are reproducible. The timed runs record the runner's timeline (`Runner::
//! set_tracing`), which gives the shares (`shares.rs`) and `--trace`.

mod plot;
mod predict;
mod report;
mod shares;
mod timeline;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use strata_engine::devices::CudaAccel;
use strata_engine::devices::{Accelerator, PseudoAccel};
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::{DeviceId, Ledger};
use strata_engine::load::{decode_settings, load};
use strata_engine::model::Model;
use strata_engine::plan::{host_free_bytes, overrides, AutoFill, Device, NumGpu, Plan};
use strata_engine::runner::{Runner, Span};

use crate::bandwidth::{read_once, Stream};
use crate::matrix;
use predict::ReadRule;
use report::{DeviceModel, Format, Phase, Row};
use shares::{PhaseTime, Window};
use strata_kernels_cpu::GgmlType;
use timeline::TracedRun;

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// num_gpu values, comma-separated (`0,15,31`, `auto`); default: 0, half the blocks,
    /// and every layer.
    #[arg(long = "num-gpu", visible_alias = "ngl")]
    pub num_gpu: Option<String>,
    /// Prompt tokens (prefill, in batches of `-b`); 0: no pp test.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens (decode, one at a time); 0: no tg test.
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Timed runs of each test, after one warm-up run that is not counted.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// CPU devices posing as GPUs instead of CUDA (`1GiB,1GiB`; see generate --pose-gpus).
    #[arg(long = "pose-gpus")]
    pub pose_gpus: Option<String>,
    /// md (a table, `mean ± sd`), csv, json (an array of rows) or jsonl (a row a line).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Md)]
    pub output: Format,
    /// Also draw tokens/s against num_gpu (measured and predicted) into this SVG file.
    #[arg(long = "plot", value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also write the last tg run of each num_gpu value as a Chrome trace (for Perfetto).
    #[arg(long = "trace", value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// MiB of the buffer the read-bandwidth reference streams through (the bandwidth the
    /// prediction divides by, read once after each timed run).
    #[arg(long = "stream-mib", default_value_t = 512)]
    pub stream_mib: usize,
    /// Tensor overrides in every row (llama.cpp's `-ot REGEX=DEVICE[,…]`, repeatable).
    #[arg(long = "override-tensor")]
    pub override_tensor: Vec<String>,
    /// Every routed expert on the CPU in every row.
    #[arg(long = "cpu-moe")]
    pub cpu_moe: bool,
    /// Values to sweep of `--n-cpu-moe` (the first N blocks' routed experts on the CPU),
    /// comma-separated: `0,4,8`.
    #[arg(long = "n-cpu-moe", default_value = "0")]
    pub n_cpu_moe: String,
    /// What `auto` fills the GPUs with: experts or layers.
    #[arg(long = "fill", default_value = "experts")]
    pub fill: String,
    /// Devices working at the same time (pipelined prefill, split experts side by side) on,
    /// off, or both (`1,0`): off runs the same work one device at a time.
    #[arg(long = "overlap", default_value = "1")]
    pub overlap: String,
    /// Sequences run side by side, each with KV caches of its own (llama.cpp's
    /// `--parallel`): pp feeds each the prompt (across a layer split their micro-batches
    /// flow through the devices as a pipeline) and tg decodes them in lockstep, one batch
    /// of a row a sequence a step; tokens/s count every sequence's tokens, and the
    /// prediction reads the weights once a step for all of them.
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 1)]
    pub parallel: usize,
}

/// One point of the sweep.
#[derive(Debug, Clone, Copy)]
struct Point {
    num_gpu: NumGpu,
    n_cpu_moe: usize,
    overlap: bool,
}

impl Point {
    /// The row's label: `16`, `auto n-cpu-moe 4`, `auto no-overlap`.
    fn label(&self) -> String {
        let mut s = self.num_gpu.to_string();
        if self.n_cpu_moe > 0 {
            s.push_str(&format!(" n-cpu-moe {}", self.n_cpu_moe));
        }
        if !self.overlap {
            s.push_str(" no-overlap");
        }
        s
    }
}

/// A comma-separated list of `flag`'s values, each parsed by `parse`.
fn list<T>(flag: &str, text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|v| {
            parse(v.trim()).ok_or_else(|| format!("{flag} '{text}': bad value '{}'", v.trim()))
        })
        .collect()
}

/// `--plot` or `--trace`'s file, created before the runs so that a bad path fails at once
/// instead of after the sweep.
struct OutFile {
    flag: &'static str,
    path: PathBuf,
    file: File,
}

impl OutFile {
    fn create(flag: &'static str, path: &Path) -> Result<OutFile, String> {
        let file = File::create(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        Ok(OutFile {
            flag,
            path: path.to_path_buf(),
            file,
        })
    }

    fn write(mut self, text: &str) -> Result<(), String> {
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| format!("{} {}: {e}", self.flag, self.path.display()))
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    for (flag, v) in [
        ("--repetitions", args.repetitions),
        ("--stream-mib", args.stream_mib),
        ("--parallel", args.parallel),
    ] {
        if v == 0 {
            return Err(format!("{flag} 0: must be at least 1"));
        }
    }
    let plot = args
        .plot
        .as_deref()
        .map(|p| OutFile::create("--plot", p))
        .transpose()?;
    let trace = args
        .trace
        .as_deref()
        .map(|p| OutFile::create("--trace", p))
        .transpose()?;
    // On a pool worker, as `generate` runs (`pool::on_pool`).
    strata_engine::pool::on_pool(args.threads.map(|t| t.max(1)), || {
        run_in_pool(args, plot, trace)
    })
}

fn run_in_pool(args: &Args, plot: Option<OutFile>, trace: Option<OutFile>) -> Result<(), String> {
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
    let num_gpus: Vec<NumGpu> = match &args.num_gpu {
        Some(t) => t
            .split(',')
            .map(|v| NumGpu::parse(v.trim()).map_err(|e| format!("--num-gpu {t}: {e}")))
            .collect::<Result<_, _>>()?,
        None => vec![
            NumGpu::Layers(0),
            NumGpu::Layers(n_layer / 2),
            NumGpu::Layers(n_layer + 1),
        ],
    };
    let n_cpu_moe = list("--n-cpu-moe", &args.n_cpu_moe, |v| v.parse().ok())?;
    let overlaps = list("--overlap", &args.overlap, |v| match v {
        "1" | "on" => Some(true),
        "0" | "off" => Some(false),
        _ => None,
    })?;
    AutoFill::parse(&args.fill).map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for &num_gpu in &num_gpus {
        for &n in &n_cpu_moe {
            for &overlap in &overlaps {
                values.push(Point {
                    num_gpu,
                    n_cpu_moe: n,
                    overlap,
                });
            }
        }
    }
    // Every device in every row (an unused one idle), the CPU first: the plan's order.
    let names: Vec<String> = std::iter::once("CPU".to_string())
        .chain(accels.iter().map(Accelerator::name))
        .collect();
    let stream = Stream::new(args.stream_mib, "--stream-mib")?;
    let kernels = kernel_bandwidth(&model, &accels, args.stream_mib)?;
    let threads = rayon::current_num_threads();
    if args.output == Format::Md {
        println!(
            "model {} ({n_layer} blocks), pp{} tg{}, a warm-up and {} timed runs each, \
             {threads} CPU threads, devices: {}{}\n",
            args.model.display(),
            args.n_prompt,
            args.n_gen,
            args.repetitions,
            names.join(", "),
            match args.parallel {
                1 => String::new(),
                n => format!(
                    "; {n} sequences side by side (tokens/s count all of them; a decode step \
                     is one batch of a row a sequence)"
                ),
            }
        );
    }
    if let Some(h) = report::header(args.output, args.n_prompt, args.n_gen, &names) {
        println!("{h}");
    }
    if args.output == Format::Json {
        println!("[");
    }
    let (mut rows, mut traced) = (Vec::new(), Vec::new());
    for (i, &point) in values.iter().enumerate() {
        let yardsticks = (&stream, &kernels);
        let (row, last_tg) = sweep_one(args, &file, &model, &accels, &names, point, yardsticks)?;
        let text = report::line(args.output, &row);
        match args.output {
            Format::Json if i + 1 < values.len() => println!("{text},"),
            _ => println!("{text}"),
        }
        if let Some((spans, origin)) = last_tg {
            traced.push(TracedRun {
                name: format!("num_gpu {}", point.label()),
                devices: names.clone(),
                spans,
                origin,
            });
        }
        rows.push(row);
    }
    match args.output {
        Format::Json => println!("]"),
        Format::Md => {
            if let Some(best) = report::fastest(&rows) {
                println!("\n{best}");
            }
            println!(
            "\npredicted: the bandwidth model, each device reading a decode token's weights in \
             turn, plus the copies between devices, less what split experts computed side by \
             side save; at each device's read bandwidth (memory), and at the kernels' matvec \
             bandwidth of the model's main weight format on the same threads (kernels); - \
             where a device's bandwidth is not measured (a GPU). read GB/s: the CPU's, the \
             mean of a read pass over {} MiB ({threads} threads) after each timed run",
            args.stream_mib
        );
        }
        Format::Csv | Format::Jsonl => {}
    }
    if let Some(out) = plot {
        let title = args.model.file_name().map_or_else(
            || args.model.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        out.write(&plot::svg(&rows, &title)?)?;
    }
    if let Some(out) = trace {
        let json = timeline::chrome_trace(&traced);
        out.write(&format!("{json}\n"))?;
    }
    Ok(())
}

/// The spans of a run of tg, and when the run started on their clock.
type LastRun = (Vec<Span>, Duration);

/// The spans of one run of a test, and its window on their clock.
struct Timed {
    secs: f64,
    spans: Vec<Span>,
    window: Window,
}

/// Runs `test` once from an empty context with the timeline on.
fn timed(
    r: &mut Runner,
    test: impl FnOnce(&mut Runner) -> Result<(), String>,
) -> Result<Timed, String> {
    r.reset();
    r.set_tracing(true);
    let epoch = r.trace_epoch().expect("tracing was just turned on");
    let start = Instant::now();
    test(r)?;
    let end = Instant::now();
    let spans = r.take_spans().map_err(|e| e.to_string())?;
    r.set_tracing(false);
    Ok(Timed {
        secs: (end - start).as_secs_f64(),
        spans,
        window: Window {
            start: start - epoch,
            end: end - epoch,
        },
    })
}

/// What the phases of a row share: the repetitions, the devices (the CPU first) and their
/// names, and the read reference, taken after each timed run so that the prediction sees
/// the machine the measurement saw (on a shared machine it moves by half between minutes).
struct Phases<'a> {
    reps: usize,
    devices: Vec<DeviceId>,
    names: &'a [String],
    stream: &'a Stream,
    /// Bytes/s of each read pass so far.
    reads: Vec<f64>,
}

impl Phases<'_> {
    /// One warm-up and `reps` timed runs of `test`, each worth `tokens` tokens: the phase,
    /// and the last run's spans with its start.
    fn run(
        &mut self,
        r: &mut Runner,
        tokens: usize,
        test: impl Fn(&mut Runner) -> Result<(), String>,
    ) -> Result<(Phase, LastRun), String> {
        timed(r, &test)?;
        let mut time = PhaseTime::new(self.devices.clone());
        let (mut samples, mut last) = (Vec::with_capacity(self.reps), None);
        for _ in 0..self.reps {
            let t = timed(r, &test)?;
            self.reads.push(read_once(self.stream));
            samples.push(tokens as f64 / t.secs);
            time.add(&t.spans, t.window);
            last = Some((t.spans, t.window.start));
        }
        let (shares, overlap) = time.shares(self.names);
        let last = last.expect("at least one repetition");
        Ok((Phase::new(samples, shares, overlap), last))
    }

    /// The mean read bandwidth of the passes so far (one now if there were none).
    fn read_bandwidth(&self) -> f64 {
        match self.reads.len() {
            0 => read_once(self.stream),
            n => self.reads.iter().sum::<f64>() / n as f64,
        }
    }
}

/// A row for `num_gpu`, and the spans of its last tg run with that run's start.
fn sweep_one(
    args: &Args,
    file: &GgufFile,
    model: &Model,
    accels: &[Accelerator],
    names: &[String],
    point: Point,
    (stream, kernels): (&Stream, &Bandwidth),
) -> Result<(Row, Option<LastRun>), String> {
    let num_gpu = point.label();
    let n_ctx = args.n_prompt.max(args.n_gen).max(1);
    let mut settings = decode_settings(n_ctx, args.batch_size, point.num_gpu);
    settings.n_seq = args.parallel;
    settings.n_outputs = settings.step_outputs();
    if args.pose_gpus.is_some() {
        settings.margin = 0;
    }
    settings.overrides =
        overrides::from_flags(&args.override_tensor, args.cpu_moe, point.n_cpu_moe)
            .map_err(|e| e.to_string())?;
    settings.fill = AutoFill::parse(&args.fill).map_err(|e| e.to_string())?;
    settings.overlap = point.overlap;
    // Unknown host memory: no host limit.
    let host = Device::cpu(host_free_bytes().unwrap_or(u64::MAX));
    let ledger = Ledger::new();
    let loaded = load(file, model, host, accels, &settings, &ledger)
        .map_err(|e| format!("num_gpu {num_gpu}: {e}"))?;
    let (plan, mut r) = (loaded.plan, loaded.runner);
    let err = |e: strata_engine::runner::RunError| format!("num_gpu {num_gpu}: {e}");

    // The prompt: the model's own greedy text from token 1.
    let mut prompt = vec![1u32];
    while prompt.len() < args.n_prompt {
        let l = r.eval(&prompt[prompt.len() - 1..]).map_err(err)?;
        prompt.push(argmax(l));
    }
    prompt.truncate(args.n_prompt);
    let mut phases = Phases {
        reps: args.repetitions,
        devices: (0..names.len()).map(DeviceId::from_plan_index).collect(),
        names,
        stream,
        reads: Vec::new(),
    };
    let np = args.parallel;
    let pp = match args.n_prompt {
        0 => None,
        n if np == 1 => Some(phases.run(&mut r, n, |r| r.eval(&prompt).map(drop).map_err(err))?),
        n => {
            let entries: Vec<(usize, &[u32])> = (0..np).map(|s| (s, &prompt[..])).collect();
            Some(phases.run(&mut r, n * np, |r| {
                r.eval_seqs(&entries).map(drop).map_err(err)
            })?)
        }
    };
    let tg = match args.n_gen {
        0 => None,
        n if np == 1 => Some(phases.run(&mut r, n, |r| {
            let mut tok = 1;
            for _ in 0..n {
                tok = argmax(r.eval(&[tok]).map_err(err)?);
            }
            Ok(())
        })?),
        n => Some(phases.run(&mut r, n * np, |r| {
            let mut toks = vec![1u32; np];
            for _ in 0..n {
                let entries: Vec<(usize, &[u32])> = toks
                    .iter()
                    .enumerate()
                    .map(|(s, t)| (s, std::slice::from_ref(t)))
                    .collect();
                let logits = r.eval_seqs(&entries).map_err(err)?;
                toks = logits.iter().map(|l| argmax(l)).collect();
            }
            Ok(())
        })?),
    };

    let bandwidth = Bandwidth::measure(phases.read_bandwidth(), accels, stream);
    let schedule = Schedule {
        overlap: point.overlap,
        n_seq: args.parallel,
    };
    let (model_devices, copy_bytes, predicted) =
        prediction(&plan, model, names, &bandwidth, schedule);
    let (_, _, predicted_kernels) = prediction(&plan, model, names, kernels, schedule);
    let (tg, last_tg) = tg.unzip();
    let row = Row {
        model: args.model.display().to_string(),
        num_gpu,
        gpu_layers: plan.num_gpu,
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        repetitions: args.repetitions,
        pp: pp.map(|(p, _)| p),
        devices: model_devices,
        copy_bytes_per_token: copy_bytes,
        predicted_tg_tokens_per_s: predicted,
        predicted_kernels_tg_tokens_per_s: predicted_kernels,
        tg,
    };
    Ok((row, last_tg))
}

/// How a row's decode runs: devices side by side (`overlap`), and `n_seq` sequences (a step
/// of all of them one batch).
#[derive(Debug, Clone, Copy)]
struct Schedule {
    overlap: bool,
    n_seq: usize,
}

/// Bandwidths (bytes/s) a prediction divides by.
#[derive(Debug, Clone)]
struct Bandwidth {
    /// Each plan device's: the CPU's on its threads; a posing device's on its own threads
    /// if it has them (else the CPU's, whose threads it computes on); `None` for a GPU.
    devices: Vec<Option<f64>>,
    /// Every thread of the run reading at once: what devices computing side by side share.
    together: f64,
}

/// The thread counts a run's host devices compute on: each plan device's (`None` for a
/// GPU), and all of them at once.
fn device_threads(accels: &[Accelerator]) -> (Vec<Option<usize>>, usize) {
    let cpu = rayon::current_num_threads();
    let mut all = cpu;
    let mut out = vec![Some(cpu)];
    for a in accels {
        out.push(match a {
            Accelerator::Posing(p) => match p.threads {
                Some(t) => {
                    all += t;
                    Some(t)
                }
                None => Some(cpu),
            },
            Accelerator::Cuda(_) => None,
        });
    }
    (out, all)
}

/// The kernels' matvec bandwidth on each host device's threads and on all at once, for
/// the weight format of most of `model`'s bytes: the model that says what Strata's kernels
/// give, beside the read bandwidth's what the memory gives.
fn kernel_bandwidth(
    model: &Model,
    accels: &[Accelerator],
    mib: usize,
) -> Result<Bandwidth, String> {
    let mut by_type: Vec<(GgmlType, usize)> = Vec::new();
    for b in &model.blocks {
        b.each_matrix(|_, m| match by_type.iter_mut().find(|(t, _)| *t == m.ty) {
            Some((_, n)) => *n += m.data.len(),
            None => by_type.push((m.ty, m.data.len())),
        });
    }
    let ty = by_type
        .iter()
        .max_by_key(|(_, n)| *n)
        .map_or(GgmlType::Q4_0, |(t, _)| *t);
    let (threads, all) = device_threads(accels);
    let at = |t: usize| {
        matrix::matvec_bandwidth(ty, t, mib).map_err(|e| format!("kernel bandwidth of {ty}: {e}"))
    };
    // One measurement per thread count: devices on the CPU's threads share its figure.
    let mut seen: Vec<(usize, f64)> = Vec::new();
    let mut measure = |t: usize| match seen.iter().find(|(n, _)| *n == t) {
        Some(&(_, bw)) => Ok(bw),
        None => {
            let bw = at(t)?;
            seen.push((t, bw));
            Ok::<f64, String>(bw)
        }
    };
    let devices = threads
        .iter()
        .map(|t| t.map(&mut measure).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let together = measure(all)?;
    Ok(Bandwidth { devices, together })
}

impl Bandwidth {
    /// From the CPU's measured `host` bandwidth, with one pass on each posing device's own
    /// threads and one on all threads at once.
    fn measure(host: f64, accels: &[Accelerator], stream: &Stream) -> Bandwidth {
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map(|p| p.install(|| read_once(stream)))
                .unwrap_or(host)
        };
        let cpu = rayon::current_num_threads();
        let (threads, all) = device_threads(accels);
        let devices = threads
            .iter()
            .enumerate()
            .map(|(d, t)| t.map(|t| if d == 0 || t == cpu { host } else { on(t) }))
            .collect();
        let together = if all > cpu { on(all) } else { host };
        Bandwidth { devices, together }
    }
}

/// The bandwidth model for `plan`: each device's bytes per token and bandwidth, the bytes
/// copied per token, and the predicted tg tokens/s at the bandwidths `bw` — with `overlap`,
/// split experts side by side; `n_seq` sequences one batch a step (tokens/s of all of
/// them).
fn prediction(
    plan: &Plan,
    model: &Model,
    names: &[String],
    bw: &Bandwidth,
    Schedule { overlap, n_seq }: Schedule,
) -> (Vec<DeviceModel>, u64, Option<f64>) {
    let cfg = &model.cfg;
    let rule = ReadRule {
        experts: plan.experts_read,
        tied_output_on_cpu: cfg.tied_output && plan.output_device == 0,
    };
    let bytes = predict::bytes_per_device(&plan.tensors, rule, names.len());
    let k = cfg.moe.as_ref().map_or(0, |m| m.n_expert_used);
    let copies = predict::copies(
        &plan.blocks,
        plan.output_device,
        (cfg.n_embd, k),
        cfg.n_vocab,
    );
    let in_turn = predict::token_secs(&bytes, &copies, &bw.devices);
    let saved = match overlap {
        true => {
            let shares = predict::shares(&plan.tensors, &plan.blocks, rule);
            predict::overlap_saving(&shares, &bw.devices, bw.together)
        }
        false => Some(0.0),
    };
    // A step of several sequences is one batch: each weight read once for every sequence
    // (the copies between devices grow with the rows, a few KiB: left out).
    let predicted = in_turn
        .zip(saved)
        .map(|(t, s)| n_seq.max(1) as f64 / (t - s));
    let devices = names
        .iter()
        .zip(&bytes)
        .zip(&bw.devices)
        .map(|((name, &b), bw)| DeviceModel {
            name: name.clone(),
            bytes_per_token: b,
            read_gb_per_s: bw.map(|b| b / 1e9),
        })
        .collect();
    (devices, copies.iter().map(|c| c.2).sum(), predicted)
}

fn argmax(l: &[f32]) -> u32 {
    l.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .unwrap_or(0)
}
