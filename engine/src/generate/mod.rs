//! The `generate` command: load a model, stream a completion of the prompt to stdout,
//! report timings on stderr (and as JSON with `--timings-json`).

pub mod args;
pub mod chat;
pub mod timings;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::devices::{Accelerator, CudaAccel, PseudoAccel};
use crate::gguf::GgufFile;
use crate::ledger::{DeviceId, Ledger};
use crate::load::LoadError;
use crate::model::Model;
use crate::plan::{host_free_bytes, Device, NumGpu};
use crate::sampler::{Sampler, SamplerParams};
use crate::tokenizer::{Tokenizer, Utf8Stream};
use args::{normalize_argv, Args, DEFAULT_MODEL};
use timings::Timings;

/// Runs `generate` with these arguments (the first is the program name); returns the
/// process exit code.
pub fn main_with(argv: impl IntoIterator<Item = String>) -> i32 {
    let args = match Args::try_parse_from(normalize_argv(argv)) {
        Ok(a) => a,
        Err(e) => {
            // Help and version go to stdout with code 0, usage errors to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(&args) {
        Ok(Ended::Done) => 0,
        // What shells and llama.cpp use for a run ended by SIGINT.
        Ok(Ended::Interrupted) => 130,
        Err(msg) => {
            eprintln!("error: {msg}");
            1
        }
    }
}

/// How a run that did not fail ended.
enum Ended {
    Done,
    /// Ctrl-C: what was generated so far is printed, with the timings.
    Interrupted,
}

fn run(args: &Args) -> Result<Ended, String> {
    let threads = crate::pool::thread_count(args.threads)?;
    // The whole run on a pool worker (`pool::on_pool`: a parallel op started from outside
    // the pool costs a handoff; with one thread that took 18% of decode).
    crate::pool::on_pool(Some(threads), || run_in_pool(args, threads))
}

fn run_in_pool(args: &Args, threads: usize) -> Result<Ended, String> {
    // Posing devices when asked for, else the CUDA devices the driver shows (unless
    // `-ngl 0`); none usable means everything runs on the CPU.
    let posing = args.pose_gpus.is_some();
    let accels: Vec<Accelerator> = match &args.pose_gpus {
        Some(text) => PseudoAccel::parse_list(text)?
            .into_iter()
            .map(Accelerator::from)
            .collect(),
        None if args.num_gpu == NumGpu::Layers(0) => Vec::new(),
        None => match CudaAccel::discover() {
            Ok(found) => found.into_iter().map(Accelerator::from).collect(),
            Err(e) => {
                match args.num_gpu {
                    NumGpu::Layers(n) => {
                        eprintln!("note: --num-gpu {n} ignored ({e}): every layer runs on the CPU")
                    }
                    // No GPU at all is a CPU run; a GPU this build cannot use is said.
                    NumGpu::Auto if CudaAccel::present_but_unusable() => {
                        eprintln!("note: {e}: every layer runs on the CPU")
                    }
                    NumGpu::Auto => {}
                }
                Vec::new()
            }
        },
    };
    // A directory or a device is the reader's to name; a missing path is said here, with
    // how to fetch the default model.
    if !args.model.exists() {
        let mut msg = format!("model file not found: {}", args.model.display());
        if args.model.as_os_str() == DEFAULT_MODEL {
            msg.push_str(
                "\n  the default model is SmolLM2-135M-Instruct (98 MB): fetch it with scripts/fetch-model.sh, \
                 or pass another GGUF file with -m",
            );
        }
        return Err(msg);
    }
    let prompt = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read prompt file {}: {e}", f.display()))?,
        (None, None) => return Err("no prompt: give one with -p TEXT or -f FILE".into()),
    };
    if !args.temp.is_finite() {
        return Err(format!("--temp {}: must be a number", args.temp));
    }
    for (name, v) in [("--top-p", args.top_p), ("--min-p", args.min_p)] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{name} {v}: must be a number ≥ 0"));
        }
    }
    if args.repeat_penalty <= 0.0 || !args.repeat_penalty.is_finite() {
        return Err(format!(
            "--repeat-penalty {}: must be a number > 0",
            args.repeat_penalty
        ));
    }
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    if args.parallel == 0 {
        return Err("--parallel 0: at least one sequence".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while stopping kills the process the usual way.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }

    let t_load = Instant::now();
    // The reader's errors name the file already.
    let file = GgufFile::open(&args.model).map_err(|e| e.to_string())?;
    let n_layer_hint = file
        .metadata()
        .get_str("general.architecture")
        .and_then(|a| file.metadata().get_u64(&format!("{a}.block_count")))
        .unwrap_or(0);
    let bar = ProgressBar::new(n_layer_hint).with_style(
        ProgressStyle::with_template("loading {bar:40} {pos}/{len} blocks")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let model = Model::bind(&file, |i| bar.set_position(i as u64)).map_err(|e| e.to_string())?;
    // Read the weights in now (with the bar moving) rather than during the first tokens.
    for (i, b) in model.blocks.iter().enumerate() {
        b.prefault();
        bar.set_position(i as u64 + 1);
    }
    bar.finish_and_clear();
    let tok = Tokenizer::from_metadata(file.metadata())
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    let cfg = &model.cfg;
    let n_ctx = if args.ctx_size == 0 {
        cfg.n_ctx_train
    } else {
        if args.ctx_size > cfg.n_ctx_train {
            eprintln!(
                "note: -c {} is beyond the model's training context; using {}",
                args.ctx_size, cfg.n_ctx_train
            );
        }
        args.ctx_size.min(cfg.n_ctx_train)
    };
    // Planned and allocated up front by the loader: on the CPU, or split onto the GPUs
    // (posing ones have no driver to keep a margin for).
    // A model the GPU kernels cannot run yet, or whose CUDA forward pass no GPU has run
    // yet, stays on the CPU unless layers were asked for (then the loader says why it
    // cannot, or runs it).
    let mut accels = accels;
    let cuda = crate::backend::cuda::CudaBackend::unsupported(cfg)
        .or_else(|| crate::backend::cuda::CudaBackend::untried(cfg));
    if let (false, NumGpu::Auto, false, Some(why)) = (posing, args.num_gpu, accels.is_empty(), cuda)
    {
        eprintln!("note: {why}: every layer runs on the CPU");
        accels.clear();
    }
    let num_gpu = if accels.is_empty() {
        NumGpu::Layers(0)
    } else {
        args.num_gpu
    };
    // No pass holds more tokens than the context (as llama.cpp clamps n_batch).
    let n_batch = args.batch_size.min(n_ctx);
    let mut settings = crate::load::decode_settings(n_ctx, n_batch, num_gpu);
    // -np N: N caches of n_ctx positions, a row of logits each in a step.
    settings.n_seq = args.parallel;
    settings.n_outputs = settings.step_outputs();
    if posing {
        settings.margin = 0;
    }
    settings.overrides = args.placement.rules().map_err(|e| e.to_string())?;
    settings.fill = args.placement.fill;
    settings.overlap = !args.no_overlap;
    // The host's budget: what the system says is available, unless the user says; with
    // neither, no limit (and a note).
    let host_free = match args.host_mem {
        Some(b) => b,
        None => host_free_bytes().unwrap_or_else(|e| {
            eprintln!("note: {e}; host memory is not checked");
            u64::MAX
        }),
    };
    let host = Device::cpu(host_free);
    // Copying, repacking (CPU) and uploading (GPUs) the blocks' weights, with a bar.
    let bar = ProgressBar::new(cfg.n_layer as u64).with_style(
        ProgressStyle::with_template("placing {bar:40} {pos}/{len} blocks")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let loaded = crate::load::load_with_progress(
        &file,
        &model,
        host,
        &accels,
        &settings,
        &Ledger::new(),
        &mut |i| bar.set_position(i as u64),
    )
    .map_err(|e| match &e {
        LoadError::Alloc(a) if a.device == DeviceId::Cpu => format!(
            "{e}\nThe host is out of memory: lower -c/--ctx-size (now {n_ctx}), or put layers \
             on a GPU (-ngl)."
        ),
        LoadError::HostMemory { .. } => format!(
            "{e}\nTo fit: lower -c/--ctx-size (now {n_ctx}), put layers on a GPU (-ngl), or \
             free memory; --host-mem SIZE loads it anyway."
        ),
        _ => e.to_string(),
    })?;
    bar.finish_and_clear();
    if args.verbose {
        eprint!("{}", crate::plan::table::render(&loaded.plan));
    }
    if !accels.is_empty() {
        // As llama.cpp's "offloaded 31/31 layers to GPU": where the layers went.
        let p = &loaded.plan;
        let on: Vec<String> = p
            .gpus()
            .map(|d| format!("{} on {}", d.layers(), d.device.name))
            .collect();
        let models: Vec<String> = accels
            .iter()
            .filter_map(|a| match a {
                Accelerator::Cuda(c) => Some(format!("{}: {}", c.name(), c.model)),
                Accelerator::Posing(_) => None,
            })
            .collect();
        let (on_gpus, all) = p.expert_bytes_on_gpus();
        let experts = if all > 0 {
            format!(
                "; routed experts {} of {} on GPUs",
                crate::plan::Bytes(on_gpus),
                crate::plan::Bytes(all)
            )
        } else {
            String::new()
        };
        eprintln!(
            "offloaded {}/{} layers to GPUs ({}){experts}{}",
            p.num_gpu,
            p.n_layer + 1,
            on.join(", "),
            if models.is_empty() {
                String::new()
            } else {
                format!("; {}", models.join(", "))
            }
        );
    }
    let mut runner = loaded.runner;
    let load_ms = t_load.elapsed().as_secs_f64() * 1000.0;

    let text = if args.chat {
        let template = file
            .metadata()
            .get_str("tokenizer.chat_template")
            .ok_or_else(|| {
                format!(
                    "--chat: {} has no tokenizer.chat_template",
                    args.model.display()
                )
            })?;
        let name = |id: Option<u32>| id.and_then(|i| tok.token_str(i)).unwrap_or("").to_string();
        chat::render(template, &prompt, &name(tok.bos()), &name(tok.eos()))?
    } else {
        prompt
    };
    let mut tokens = tok.encode(&text).map_err(|e| e.to_string())?;
    if tokens.is_empty() {
        tokens.extend(tok.bos());
    }
    if tokens.is_empty() {
        return Err("the prompt is empty and the model has no BOS token to start from".into());
    }
    if tokens.len() >= n_ctx {
        return Err(format!(
            "the prompt has {} tokens, the context only {n_ctx} (raise -c/--ctx-size)",
            tokens.len()
        ));
    }
    let seed = args.seed.unwrap_or_else(args::clock_seed);
    let params = SamplerParams {
        // Below 0 is greedy, as 0 is (llama.cpp's convention).
        temperature: args.temp.max(0.0),
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed,
    };
    if args.verbose {
        eprintln!(
            "model: {} | {} blocks, n_embd {}, heads {}/{} | vocab {} ({:?}, pre {}) | n_ctx {n_ctx}",
            cfg.arch, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.n_vocab,
            tok.spec().kind, tok.spec().pre
        );
        if let Some(m) = &cfg.moe {
            eprintln!(
                "experts: {} used of {} (width {}), {} shared, {} leading dense blocks",
                m.n_expert_used, m.n_expert, m.n_ff_exp, m.n_shared, m.n_dense_lead
            );
        }
        eprintln!("prompt tokens: {tokens:?}");
        eprintln!("sampling: {params:?}");
    }
    let mut sampler = Sampler::new(params.clone());

    let mut timings = Timings {
        load_ms,
        prompt_tokens: tokens.len(),
        threads,
        bytes_per_token: model.bytes_per_token(),
        sequences: args.parallel,
        ..Default::default()
    };
    // The prompt a batch at a time (as the runner would cut it), so that Ctrl-C stops a
    // long prefill between batches.
    let t_prompt = Instant::now();
    let mut logits = Vec::new();
    for chunk in tokens.chunks(n_batch) {
        if stop.load(Ordering::SeqCst) {
            eprintln!("interrupted during the prompt");
            return Ok(Ended::Interrupted);
        }
        logits = runner.eval(chunk).map_err(|e| e.to_string())?.to_vec();
    }
    timings.prompt_ms = t_prompt.elapsed().as_secs_f64() * 1000.0;

    let limit = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };
    if args.parallel > 1 {
        let run = Parallel {
            args,
            tok: &tok,
            n_ctx,
            limit,
            stop: &stop,
        };
        let ended = run.decode(&mut runner, &tokens, logits, &params, &mut timings)?;
        return finish_run(args, &timings, ended);
    }
    let mut stream = Utf8Stream::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let t_gen = Instant::now();
    let mut interrupted = false;
    while timings.gen_tokens < limit {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let next = sampler.sample(&logits, &tokens);
        if !args.ignore_eos && tok.is_end_of_generation(next) {
            break;
        }
        tokens.push(next);
        timings.gen_tokens += 1;
        let piece = stream.push(tok.token_bytes(next));
        // A closed stdout (e.g. `| head`) ends generation quietly.
        if out
            .write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            break;
        }
        if runner.pos() >= n_ctx {
            eprintln!("\nnote: context full ({n_ctx} tokens); stopping");
            break;
        }
        // Each generated token is fed back (also the last one, so that the timing counts
        // one forward pass per generated token, as llama-bench's tg does).
        logits.copy_from_slice(runner.eval(&[next]).map_err(|e| e.to_string())?);
    }
    timings.gen_ms = t_gen.elapsed().as_secs_f64() * 1000.0;
    let _ = write!(out, "{}", stream.finish());
    let _ = writeln!(out);
    let _ = out.flush();
    let ended = if interrupted {
        Ended::Interrupted
    } else {
        Ended::Done
    };
    finish_run(args, &timings, ended)
}

/// The end of a run: "interrupted" if it was, the timings on stderr and in
/// `--timings-json`.
fn finish_run(args: &Args, timings: &Timings, ended: Ended) -> Result<Ended, String> {
    if matches!(ended, Ended::Interrupted) {
        eprintln!("interrupted");
    }
    eprintln!("{}", timings.summary());
    if let Some(path) = &args.timings_json {
        let json = serde_json::to_string_pretty(&timings.to_json()).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(ended)
}

/// `-np N`: continuations of one prompt decoded side by side.
struct Parallel<'a> {
    args: &'a Args,
    tok: &'a Tokenizer,
    n_ctx: usize,
    /// Tokens each sequence generates at most.
    limit: usize,
    stop: &'a AtomicBool,
}

/// One continuation: its sampler (seeded apart), the prompt and its tokens so far (for the
/// repeat penalty), the logits its next token is sampled from, its text.
struct Continuation {
    sampler: Sampler,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    stream: Utf8Stream,
    text: String,
    live: bool,
}

impl Parallel<'_> {
    /// The prompt (`prompt`, evaluated into sequence 0, whose last logits are `logits`)
    /// copied to every sequence; then each step samples a token for every live sequence
    /// and feeds them all in one call. The texts are printed when every sequence is done.
    fn decode(
        &self,
        runner: &mut crate::runner::Runner,
        prompt: &[u32],
        logits: Vec<f32>,
        params: &SamplerParams,
        timings: &mut Timings,
    ) -> Result<Ended, String> {
        let (args, tok) = (self.args, self.tok);
        for i in 1..args.parallel {
            runner
                .copy_seq(0, i, prompt.len())
                .map_err(|e| e.to_string())?;
        }
        let mut seqs: Vec<Continuation> = (0..args.parallel)
            .map(|i| Continuation {
                sampler: Sampler::new(SamplerParams {
                    seed: params.seed.wrapping_add(i as u64),
                    ..params.clone()
                }),
                tokens: prompt.to_vec(),
                logits: logits.clone(),
                stream: Utf8Stream::new(),
                text: String::new(),
                live: true,
            })
            .collect();
        let t_gen = Instant::now();
        let mut ended = Ended::Done;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                ended = Ended::Interrupted;
                break;
            }
            let mut step: Vec<(usize, u32)> = Vec::new();
            for (i, s) in seqs.iter_mut().enumerate().filter(|(_, s)| s.live) {
                if s.tokens.len() - prompt.len() >= self.limit {
                    s.live = false;
                    continue;
                }
                let next = s.sampler.sample(&s.logits, &s.tokens);
                if !args.ignore_eos && tok.is_end_of_generation(next) {
                    s.live = false;
                    continue;
                }
                s.tokens.push(next);
                timings.gen_tokens += 1;
                let piece = s.stream.push(tok.token_bytes(next));
                s.text.push_str(&piece);
                if runner.pos_of(i).unwrap_or(self.n_ctx) >= self.n_ctx {
                    eprintln!(
                        "note: sequence {i}: context full ({} tokens); stopping it",
                        self.n_ctx
                    );
                    s.live = false;
                    continue;
                }
                step.push((i, next));
            }
            if step.is_empty() {
                break;
            }
            // Every live sequence's token in one call (one batch: `Runner::eval_seqs`).
            let entries: Vec<(usize, &[u32])> = step
                .iter()
                .map(|(i, t)| (*i, std::slice::from_ref(t)))
                .collect();
            let out = runner.eval_seqs(&entries).map_err(|e| e.to_string())?;
            for ((i, _), l) in step.iter().zip(out) {
                seqs[*i].logits = l;
            }
        }
        timings.gen_ms = t_gen.elapsed().as_secs_f64() * 1000.0;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (i, s) in seqs.iter_mut().enumerate() {
            let tail = s.stream.finish();
            let _ = writeln!(out, "sequence {i}:\n{}{tail}\n", s.text);
        }
        let _ = out.flush();
        Ok(ended)
    }
}
