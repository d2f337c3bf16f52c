//! The `perplexity` command, as llama.cpp's `llama-perplexity` measures it: the text is
//! tokenized once and cut into chunks of `-c` tokens; each chunk runs from an empty
//! context (its first token replaced by BOS where the vocabulary adds one), and the
//! tokens of its second half are scored by the logits before them. It prints the running
//! perplexity after each chunk and the final one with its ± estimate.
//!
//! `--kl-divergence-base FILE` also saves every scored position's log-probabilities (16
//! bits each, [`score::Packed16`]); `--kl-divergence` with that file compares another
//! model (a quantization of the same one) against them: KL divergence, how often both
//! pick the same top token, and Δp, the change in the probability of the right token.

pub mod score;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::devices::{Accelerator, CudaAccel};
use crate::gguf::GgufFile;
use crate::ledger::Ledger;
use crate::load::load;
use crate::model::Model;
use crate::plan::{host_free_bytes, Device, NumGpu, RunSettings};
use crate::tokenizer::Tokenizer;
use score::{Nll, Packed16};

#[derive(Debug, Parser)]
#[command(
    name = "perplexity",
    about = "Perplexity of a GGUF model over a text, and KL divergence against another's"
)]
pub struct Args {
    /// Model file (GGUF).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk (each scored from an empty context).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Tokens per forward pass (at most -c).
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Score at most this many chunks (default: every whole chunk of the text).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Layers on CUDA GPUs (`-ngl`): a count, or `auto`; 0 keeps all on the CPU.
    #[arg(long = "num-gpu", default_value = "0", value_parser = parse_num_gpu)]
    pub num_gpu: NumGpu,
    /// Save (alone) or read (with --kl-divergence) the base model's log-probabilities.
    #[arg(long = "kl-divergence-base")]
    pub kl_base: Option<PathBuf>,
    /// Compare this model against the log-probabilities in --kl-divergence-base.
    #[arg(long = "kl-divergence", requires = "kl_base")]
    pub kl: bool,
}

fn parse_num_gpu(text: &str) -> Result<NumGpu, String> {
    NumGpu::parse(text).map_err(|_| "expected a layer count or `auto`".to_string())
}

/// Runs `perplexity` with these arguments (the first is the program name); returns the
/// process exit code.
pub fn main_with(argv: impl IntoIterator<Item = String>) -> i32 {
    let argv = crate::generate::args::normalize_argv(argv);
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let threads = crate::pool::thread_count(args.threads);
    match threads.and_then(|t| crate::pool::on_pool(Some(t), || run(&args))) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("error: {msg}");
            1
        }
    }
}

/// Where the scored positions' log-probabilities go or come from.
enum Kl {
    None,
    Save(Base<BufWriter<File>>),
    Compare(Base<BufReader<File>>, Comparison),
}

fn run(args: &Args) -> Result<(), String> {
    let n_ctx = args.ctx_size;
    if n_ctx < 4 {
        return Err(format!("-c {n_ctx}: a chunk needs at least 4 tokens"));
    }
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    if args.chunks == Some(0) {
        return Err("--chunks 0: nothing to score".into());
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let file = GgufFile::open(&args.model).map_err(|e| e.to_string())?;
    let model = Model::bind(&file, |_| {}).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_metadata(file.metadata())
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    let tokens = tok.encode(&text).map_err(|e| e.to_string())?;
    let available = tokens.len() / n_ctx;
    if available == 0 {
        return Err(format!(
            "{} has {} tokens, fewer than one chunk of -c {n_ctx}",
            args.file.display(),
            tokens.len()
        ));
    }
    let n_chunk = args.chunks.map_or(available, |c| c.min(available));
    let n_vocab = model.cfg.n_vocab;

    let accels: Vec<Accelerator> = match args.num_gpu {
        NumGpu::Layers(0) => Vec::new(),
        _ => CudaAccel::discover()
            .map_err(|e| format!("--num-gpu {}: {e}", args.num_gpu))?
            .into_iter()
            .map(Accelerator::from)
            .collect(),
    };
    let n_batch = args.batch_size.min(n_ctx);
    let settings = RunSettings {
        n_ctx,
        n_batch,
        n_ubatch: n_batch,
        // Every position's logits: a chunk's second half is scored.
        n_outputs: n_batch,
        num_gpu: if accels.is_empty() {
            NumGpu::Layers(0)
        } else {
            args.num_gpu
        },
        ..RunSettings::default()
    };
    let host = Device::cpu(host_free_bytes().unwrap_or(u64::MAX));
    let t_load = Instant::now();
    let mut runner = load(&file, &model, host, &accels, &settings, &Ledger::new())
        .map_err(|e| e.to_string())?
        .runner;
    let first = n_ctx / 2;
    let scored = n_ctx - 1 - first;
    let head = header(n_vocab, n_ctx, n_chunk, &tokens);
    let mut kl = match (&args.kl_base, args.kl) {
        (None, _) => Kl::None,
        (Some(p), false) => Kl::Save(Base::create(p, &head)?),
        (Some(p), true) => Kl::Compare(Base::open(p, &head)?, Comparison::default()),
    };
    eprintln!(
        "perplexity: {} tokens, {n_chunk} chunks of {n_ctx} (of {available}), {scored} scored \
         each; loaded in {:.0} ms",
        tokens.len(),
        t_load.elapsed().as_secs_f64() * 1000.0
    );

    let t = Instant::now();
    let mut nll = Nll::default();
    let mut lp = vec![0.0f64; n_vocab];
    let mut base_lp = vec![0.0f64; n_vocab];
    for c in 0..n_chunk {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if tok.spec().add_bos {
            if let Some(bos) = tok.bos() {
                chunk[0] = bos;
            }
        }
        runner.reset();
        let logits = runner.eval_all(&chunk).map_err(|e| e.to_string())?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let next = chunk[j + 1] as usize;
            // The whole distribution only where it is stored or compared; its value at
            // `next` is the same number log_prob gives.
            match &mut kl {
                Kl::None => nll.add(-score::log_prob(row, next)),
                Kl::Save(base) => {
                    score::log_probs(row, &mut lp);
                    nll.add(-lp[next]);
                    base.write(&Packed16::pack(&lp))?;
                }
                Kl::Compare(base, cmp) => {
                    score::log_probs(row, &mut lp);
                    nll.add(-lp[next]);
                    base.read(&mut base_lp)?;
                    cmp.add(&base_lp, &lp, next);
                }
            }
        }
        print!("[{}]{:.4},", c + 1, nll.ppl());
        let _ = std::io::stdout().flush();
        if c == 0 {
            let per_chunk = t.elapsed().as_secs_f64();
            eprintln!(
                "\n{per_chunk:.2} s per chunk, about {:.0} s in all",
                per_chunk * n_chunk as f64
            );
        }
    }
    println!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        nll.ppl(),
        nll.ppl_error()
    );
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} tokens in {secs:.1} s ({:.1} tokens/s)",
        n_chunk * n_ctx,
        (n_chunk * n_ctx) as f64 / secs
    );
    match kl {
        Kl::None => {}
        Kl::Save(base) => {
            let path = base.path.clone();
            base.finish()?;
            eprintln!("log-probabilities saved to {}", path.display());
        }
        Kl::Compare(_, cmp) => print!("{}", cmp.report(&nll)),
    }
    Ok(())
}

const MAGIC: &[u8; 16] = b"STRATA-LOGPROBS1";

/// A file of log-probabilities: a header (vocabulary, chunk size and count, the tokens, so
/// that a comparison checks it scores the same text the same way), then per scored
/// position the [`Packed16`] values.
struct Base<S> {
    path: PathBuf,
    io: S,
}

fn header(n_vocab: usize, n_ctx: usize, n_chunk: usize, tokens: &[u32]) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    for v in [n_vocab, n_ctx, n_chunk, tokens.len()] {
        h.extend_from_slice(&(v as u64).to_le_bytes());
    }
    for t in tokens {
        h.extend_from_slice(&t.to_le_bytes());
    }
    h
}

impl Base<BufWriter<File>> {
    /// A new file at `path` that starts with `head` (see [`header`]).
    fn create(path: &Path, head: &[u8]) -> Result<Self, String> {
        let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        let mut io = BufWriter::new(File::create(path).map_err(err)?);
        io.write_all(head).map_err(err)?;
        Ok(Base {
            path: path.to_path_buf(),
            io,
        })
    }

    fn write(&mut self, p: &Packed16) -> Result<(), String> {
        let mut b = Vec::with_capacity(8 + 2 * p.q.len());
        b.extend_from_slice(&p.min.to_le_bytes());
        b.extend_from_slice(&p.step.to_le_bytes());
        for q in &p.q {
            b.extend_from_slice(&q.to_le_bytes());
        }
        self.io
            .write_all(&b)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    fn finish(mut self) -> Result<(), String> {
        self.io
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

impl Base<BufReader<File>> {
    /// The file at `path`, which must start with `want` (see [`header`]).
    fn open(path: &Path, want: &[u8]) -> Result<Self, String> {
        let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut io = BufReader::new(File::open(path).map_err(err)?);
        let mut got = vec![0u8; want.len()];
        io.read_exact(&mut got).map_err(err)?;
        if got[..16] != MAGIC[..] {
            return Err(format!(
                "{}: not a log-probabilities file of --kl-divergence-base",
                path.display()
            ));
        }
        if got != want {
            return Err(format!(
                "{}: saved for another text, vocabulary, -c or --chunks (run the base model \
                 again with the same ones)",
                path.display()
            ));
        }
        Ok(Base {
            path: path.to_path_buf(),
            io,
        })
    }

    fn read(&mut self, out: &mut [f64]) -> Result<(), String> {
        let mut b = vec![0u8; 8 + 2 * out.len()];
        self.io
            .read_exact(&mut b)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let f = |i: usize| f32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let p = Packed16 {
            min: f(0),
            step: f(4),
            q: b[8..]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        };
        p.unpack(out);
        Ok(())
    }
}

/// Per scored position: KL divergence from the base, whether the top tokens agree, and
/// the change in the probability of the right token.
#[derive(Default)]
struct Comparison {
    kld: Vec<f64>,
    same_top: Vec<f64>,
    dp: Vec<f64>,
    base_nll: Nll,
}

impl Comparison {
    fn add(&mut self, base: &[f64], this: &[f64], right: usize) {
        self.kld.push(score::kl_divergence(base, this));
        let same = score::argmax(base) == score::argmax(this);
        self.same_top.push(if same { 1.0 } else { 0.0 });
        self.dp.push(this[right].exp() - base[right].exp());
        self.base_nll.add(-base[right]);
    }

    fn report(mut self, this: &Nll) -> String {
        let (kld, kld_e) = score::mean_and_error(&self.kld);
        let (same, same_e) = score::mean_and_error(&self.same_top);
        let (dp, dp_e) = score::mean_and_error(&self.dp);
        let rms_dp = (self.dp.iter().map(|d| d * d).sum::<f64>() / self.dp.len() as f64).sqrt();
        self.kld.sort_by(f64::total_cmp);
        self.dp.sort_by(f64::total_cmp);
        let q = score::quantile;
        let mut r = String::new();
        let mut line = |s: String| {
            r.push_str(&s);
            r.push('\n');
        };
        line(format!(
            "PPL(base)         {:10.4} +/- {:.5}",
            self.base_nll.ppl(),
            self.base_nll.ppl_error()
        ));
        line(format!(
            "PPL(this)         {:10.4} +/- {:.5}",
            this.ppl(),
            this.ppl_error()
        ));
        line(format!(
            "PPL ratio         {:10.6}",
            this.ppl() / self.base_nll.ppl()
        ));
        line(format!("Mean KLD          {kld:10.6} +/- {kld_e:.6}"));
        line(format!("Maximum KLD       {:10.6}", q(&self.kld, 1.0)));
        line(format!("99.0% KLD         {:10.6}", q(&self.kld, 0.99)));
        line(format!("Median KLD        {:10.6}", q(&self.kld, 0.5)));
        line(format!(
            "Same top token    {:9.3}% +/- {:.3}%",
            100.0 * same,
            100.0 * same_e
        ));
        line(format!(
            "Mean Δp           {:9.3}% +/- {:.3}%",
            100.0 * dp,
            100.0 * dp_e
        ));
        line(format!("RMS Δp            {:9.3}%", 100.0 * rms_dp));
        line(format!(
            "Minimum Δp        {:9.3}%",
            100.0 * q(&self.dp, 0.0)
        ));
        line(format!(
            "Median Δp         {:9.3}%",
            100.0 * q(&self.dp, 0.5)
        ));
        line(format!(
            "Maximum Δp        {:9.3}%",
            100.0 * q(&self.dp, 1.0)
        ));
        r
    }
}
