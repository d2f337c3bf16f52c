//! `quantize IN.gguf OUT.gguf TYPE`: converts a model's weight matrices to TYPE with
//! Strata's quantizer (which tensors, and the fallbacks: `strata_engine::gguf::quantize_file`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use strata_engine::gguf::{quantize_file, GgmlType, QuantizeOptions};

#[derive(Parser)]
#[command(about = "Convert a GGUF model's weight matrices to another format")]
struct Args {
    /// The model to read.
    input: PathBuf,
    /// Where to write the converted model.
    output: PathBuf,
    /// Weight type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
    #[arg(value_parser = parse_type)]
    ty: GgmlType,
    /// Type of token_embd.weight, if not TYPE.
    #[arg(long, value_parser = parse_type)]
    token_embedding_type: Option<GgmlType>,
    /// Type of output.weight, if not TYPE.
    #[arg(long, value_parser = parse_type)]
    output_type: Option<GgmlType>,
    /// Fail on a matrix whose rows are not whole blocks of TYPE instead of falling back.
    #[arg(long)]
    no_fallback: bool,
    /// Print every tensor's conversion.
    #[arg(short, long)]
    verbose: bool,
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s)
        .filter(|t| t.is_weight())
        .ok_or_else(|| format!("'{s}' is not a weight type"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = QuantizeOptions {
        ty: args.ty,
        token_embedding: args.token_embedding_type,
        output: args.output_type,
        fallback: !args.no_fallback,
    };
    // Writing over the input would destroy the model being read (it is memory-mapped).
    if let (Ok(i), Ok(o)) = (args.input.canonicalize(), args.output.canonicalize()) {
        if i == o {
            eprintln!(
                "quantize: {} is both the input and the output; write to another file",
                args.output.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let start = Instant::now();
    let report = match quantize_file(&args.input, &args.output, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quantize: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut converted = 0;
    let mut fallbacks = 0;
    for t in &report.tensors {
        converted += usize::from(t.from != t.to);
        fallbacks += usize::from(t.fallback_from.is_some());
        if args.verbose {
            let note = t
                .fallback_from
                .map(|w| format!(" (fallback from {w})"))
                .unwrap_or_default();
            println!(
                "{:<40} {:>5} -> {:<5}{note}",
                t.name,
                t.from.name(),
                t.to.name()
            );
        }
    }
    println!(
        "{}: {} tensors, {converted} converted, {fallbacks} fell back; {:.1} MiB -> {:.1} MiB in {:.1}s",
        args.output.display(),
        report.tensors.len(),
        report.bytes_in as f64 / (1 << 20) as f64,
        report.bytes_out as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
