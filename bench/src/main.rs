//! `bench`: Strata's measurements. One subcommand per module; to add one, add a `mod`, a
//! variant of [`Command`] holding that module's `Args`, and a match arm calling its `run`.

use clap::{Parser, Subcommand};

mod bandwidth;
mod kernels;
mod matrix;
mod peak;
mod plan;
mod split;

#[derive(Parser)]
#[command(name = "bench", about = "Strata's measurements")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CPU kernel bandwidth: matvec GB/s against the measured memory read bandwidth, matmul GFLOP/s.
    Kernels(kernels::Args),
    /// The memory plan for a GGUF (the header is enough) on real or hypothetical devices.
    Plan(plan::Args),
    /// Generation speed (pp/tg tokens/s) for several num_gpu values, with per-device busy time.
    Split(split::Args),
}

fn main() -> std::process::ExitCode {
    // Output piped into a reader that stops early (`bench kernels | head`) ends the run
    // quietly, as it does for other command-line tools, instead of a panic at the next
    // print (Rust ignores SIGPIPE, so that print would fail with a broken pipe).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `-ngl`, `-ot`: llama.cpp's multi-letter short flags.
    let argv = strata_engine::generate::args::normalize_argv(std::env::args());
    let result = match Cli::parse_from(argv).command {
        Command::Kernels(args) => kernels::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Split(args) => split::run(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
