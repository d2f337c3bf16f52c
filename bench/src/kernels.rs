//! `bench kernels`: for each weight format and thread count, the GB/s of weights a matvec
//! reads from a matrix far larger than the last-level cache, next to the machine's read
//! bandwidth measured in the same run (a STREAM-like read of a large buffer), and matmul
//! GFLOP/s. Prints a markdown table. Formats with packed kernels (16-row groups, as the
//! engine loads them) get a second line, "packed".

use std::time::Instant;

use clap::Args as ClapArgs;
use strata_kernels_cpu::act::quantize_acts_isa;
use strata_kernels_cpu::isa::{self, Isa};
use strata_kernels_cpu::packed;
use strata_kernels_cpu::{registry, GgmlType};

use crate::bandwidth::{read_pass, Stream};
use crate::matrix::{sample_row, Weights};

#[derive(ClapArgs)]
pub struct Args {
    /// MiB of weights per matvec matrix (make it several times the last-level cache).
    #[arg(long, default_value_t = 1024)]
    matvec_mib: usize,
    /// MiB of the buffer the read-bandwidth reference streams through.
    #[arg(long, default_value_t = 1024)]
    stream_mib: usize,
    /// Columns of the matvec matrix (rows follow from --matvec-mib).
    #[arg(long, default_value_t = 4096)]
    cols: usize,
    /// Matmul shape: rows×cols weights times this many tokens.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    #[arg(long, default_value_t = 4096)]
    matmul_rows: usize,
    /// Timed repetitions (the best is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Formats to measure (default: all 13 weight formats).
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,
    /// ISA level (default: the best this CPU has, or STRATA_ISA).
    #[arg(long)]
    isa: Option<String>,
    /// Skip matmul (bandwidth only).
    #[arg(long)]
    no_matmul: bool,
    /// Print every timed pass's read and matvec GB/s to stderr (the table keeps the best).
    #[arg(long)]
    passes: bool,
}

type BoxError = Box<dyn std::error::Error>;

/// Per thread count: matvec bytes/s, reference read bytes/s and how far the reference
/// moved between passes ((max − min) / max); then matmul FLOP/s.
type Measured = (Vec<f64>, Vec<(f64, f64)>, Vec<f64>);

/// A read reference that moves more than this between the passes of one cell measured a
/// changing machine (other work, or pages merged under it): its ratios are flagged.
const MAX_READ_SPREAD: f64 = 0.05;

/// Refuses values that would divide by zero, make an empty matrix or overflow a size.
fn check(args: &Args) -> Result<(), BoxError> {
    // 256 is the largest block of any format (the K-quants').
    if args.cols == 0 || !args.cols.is_multiple_of(256) {
        return Err(format!("--cols {}: must be a positive multiple of 256", args.cols).into());
    }
    for (flag, v) in [
        ("--matvec-mib", args.matvec_mib),
        ("--stream-mib", args.stream_mib),
        ("--tokens", args.tokens),
        ("--matmul-rows", args.matmul_rows),
        ("--reps", args.reps),
    ] {
        if v == 0 {
            return Err(format!("{flag} 0: must be positive").into());
        }
    }
    if let Some(t) = args.threads.iter().find(|&&t| t == 0) {
        return Err(format!("--threads {t}: must be positive").into());
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<(), BoxError> {
    check(args)?;
    let isa = match &args.isa {
        Some(name) => {
            let isa = Isa::parse(name)?;
            isa::force(isa)?;
            isa
        }
        None => isa::active(),
    };
    let formats: Vec<GgmlType> = if args.formats.is_empty() {
        GgmlType::WEIGHTS.to_vec()
    } else {
        args.formats
            .iter()
            .map(|f| {
                GgmlType::from_name(f)
                    .filter(|t| t.is_weight())
                    .ok_or_else(|| format!("unknown weight format {f:?}"))
            })
            .collect::<Result<_, _>>()?
    };
    let pools: Vec<(usize, rayon::ThreadPool)> = args
        .threads
        .iter()
        .map(|&t| Ok((t, rayon::ThreadPoolBuilder::new().num_threads(t).build()?)))
        .collect::<Result<_, BoxError>>()?;

    let stream = Stream::new(args.stream_mib, "--stream-mib")?;
    let stream = stream.words();
    println!(
        "ISA level: {isa}; matvec {} MiB of weights, {} columns; read reference: {} MiB buffer, \
         measured alternately with each format's matvecs (same thread count)",
        args.matvec_mib, args.cols, args.stream_mib
    );
    println!();
    let mut header = String::from("| format | kernel level |");
    let mut rule = String::from("|---|---|");
    for (t, _) in &pools {
        header += &format!(" read GB/s ({t}T) | matvec GB/s ({t}T) | ratio ({t}T) |");
        rule += "---:|---:|---:|";
    }
    header += " in-cache GB/s (1T) |";
    rule += "---:|";
    let mut peaks: Vec<Option<f64>> = Vec::new();
    if !args.no_matmul {
        for (t, pool) in &pools {
            header += &format!(" matmul GFLOP/s, of int8 peak ({t}T) |");
            rule += "---:|";
            peaks.push(crate::peak::int8_peak(pool));
        }
        let said: Vec<String> = pools
            .iter()
            .zip(&peaks)
            .map(|((t, _), p)| match p {
                Some(p) => format!("{:.0} GOP/s on {t} thread(s)", p / 1e9),
                None => format!("- on {t} thread(s) (no AVX-512 VNNI)"),
            })
            .collect();
        println!(
            "int8 peak (AVX-512 VNNI vpdpbusd on registers, a multiply-add as 2 ops, measured): \
             {}; matmul: {} × {} weights times {} tokens",
            said.join(", "),
            args.matmul_rows,
            args.cols,
            args.tokens
        );
        println!();
    }
    println!("{header}\n{rule}");
    let mut unsteady = Vec::new();
    for ty in formats {
        let level = registry::kernel_level(ty, isa).map_or("-".into(), |l| l.to_string());
        let layouts: &[bool] = if packed::supports(ty, isa) {
            &[false, true]
        } else {
            &[false]
        };
        for &packed in layouts {
            let name = if packed {
                format!("{ty} packed")
            } else {
                ty.to_string()
            };
            // Packed kernels are written for the level asked for (`packed::supports`).
            let level = if packed {
                isa.to_string()
            } else {
                level.clone()
            };
            let mut line = format!("| {name} | {level} |");
            let (gbs, read_bw, gflops) = measure_format(ty, isa, packed, args, &pools, stream)?;
            for (g, (bw, spread)) in gbs.iter().zip(&read_bw) {
                let flag = if *spread > MAX_READ_SPREAD {
                    unsteady.push(format!("{name} {:.0}%", 100.0 * spread));
                    " †"
                } else {
                    ""
                };
                line += &format!(
                    " {:.1}{flag} | {:.1} | {:.0}%{flag} |",
                    bw / 1e9,
                    g / 1e9,
                    100.0 * g / bw
                );
            }
            line += &format!(" {:.1} |", in_cache(ty, isa, packed, args.cols)? / 1e9);
            for (f, peak) in gflops.iter().zip(&peaks) {
                match peak {
                    Some(p) => line += &format!(" {:.1} ({:.0}%) |", f / 1e9, 100.0 * f / p),
                    None => line += &format!(" {:.1} |", f / 1e9),
                }
            }
            println!("{line}");
        }
    }
    if !unsteady.is_empty() {
        println!(
            "\n† the read reference moved by more than {:.0}% between the passes of that cell \
             ({}): the machine changed under the measurement; rerun those rows when it is quiet",
            100.0 * MAX_READ_SPREAD,
            unsteady.join(", ")
        );
    }
    Ok(())
}

/// Single-thread matvec GB/s on a 512 KiB matrix, half of one core's L2 here: the kernel's
/// own speed, the ceiling it would put on the DRAM figure. The best of half a second of
/// runs: short runs on a shared host swing by a third from one moment to the next.
fn in_cache(ty: GgmlType, isa: Isa, packed: bool, cols: usize) -> Result<f64, BoxError> {
    let row = sample_row(ty, cols)?;
    let rows = (1usize << 19).div_ceil(row.len());
    let w = Weights::new(isa, ty, &row, rows, cols, packed)?;
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &x, 1, cols)?;
    let mut y = vec![0f32; rows];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // Timed inside the pool: entering it costs two thread wake-ups, tens of µs in a VM,
    // longer than the matvec itself (it made every kernel look 30-45% slower).
    let best = pool.install(|| -> Result<f64, String> {
        let (mut best, began) = (f64::INFINITY, Instant::now());
        while began.elapsed().as_secs_f64() < 0.5 {
            let start = Instant::now();
            w.mul(isa, &acts, &mut y).map_err(|e| e.to_string())?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    })?;
    Ok(w.bytes() as f64 / best)
}

/// Matvec GB/s per pool, and matmul FLOP/s per pool (empty with --no-matmul).
fn measure_format(
    ty: GgmlType,
    isa: Isa,
    packed: bool,
    args: &Args,
    pools: &[(usize, rayon::ThreadPool)],
    stream: &[u64],
) -> Result<Measured, BoxError> {
    let cols = args.cols;
    let row = sample_row(ty, cols)?;
    let bytes = args
        .matvec_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| format!("--matvec-mib {}: too large", args.matvec_mib))?;
    let rows = bytes.div_ceil(row.len());
    let w = Weights::new(isa, ty, &row, rows, cols, packed)?;
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &x, 1, cols)?;
    let mut y = vec![0f32; rows];
    let (mut gbs, mut read_bw) = (Vec::new(), Vec::new());
    for (_, pool) in pools {
        // Reference reads and matvecs alternate, so both see the same machine state (other
        // processes come and go); the best of each is kept.
        let (mut best, mut reads) = (f64::INFINITY, Vec::new());
        for pass in 0..args.reps.max(1) + 1 {
            let read = pool.install(|| read_pass(stream));
            reads.push(read[0].max(read[1]));
            let start = Instant::now();
            pool.install(|| w.mul(isa, &acts, &mut y))?;
            let secs = start.elapsed().as_secs_f64();
            best = best.min(secs);
            if args.passes {
                eprintln!(
                    "{ty}{} {}T pass {pass}: read {:.1} GB/s plain, {:.1} prefetched; matvec {:.1}",
                    if packed { " packed" } else { "" },
                    pool.current_num_threads(),
                    read[0] / 1e9,
                    read[1] / 1e9,
                    w.bytes() as f64 / secs / 1e9
                );
            }
        }
        gbs.push(w.bytes() as f64 / best);
        // The first pass warms the pages up; the spread is over the timed ones.
        let timed = &reads[1.min(reads.len() - 1)..];
        let (lo, hi) = timed.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
        read_bw.push((hi, (hi - lo) / hi));
    }
    drop(w);
    let mut gflops = Vec::new();
    if !args.no_matmul {
        let (mrows, n) = (args.matmul_rows, args.tokens);
        let w = Weights::new(isa, ty, &row, mrows, cols, packed)?;
        let xs: Vec<f32> = x.iter().copied().cycle().take(n * cols).collect();
        let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &xs, n, cols)?;
        let mut y = vec![0f32; n * mrows];
        for (_, pool) in pools {
            let mut best = f64::INFINITY;
            for _ in 0..args.reps.clamp(1, 3) {
                let start = Instant::now();
                pool.install(|| w.mul(isa, &acts, &mut y))?;
                best = best.min(start.elapsed().as_secs_f64());
            }
            gflops.push(2.0 * (mrows * cols * n) as f64 / best);
        }
    }
    Ok((gbs, read_bw, gflops))
}
