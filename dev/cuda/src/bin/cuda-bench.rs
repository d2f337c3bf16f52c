//! Matvec bandwidth for every weight format on the first CUDA device, next to the device's
//! measured copy bandwidth in the same run.
//!
//! `cuda-bench [--iters N] [--csv] [--format NAME,...] [--prefetch B,B,...]`: for each format
//! (or only those named) and each
//! shape (4096×4096, 14336×4096), the time of one matvec on q8_1 (or f32) activations already
//! on the device, and the bytes it must read (weights + activations + output) per second.
//! The ratio is to a 256 MiB device-to-device copy in the same run, counted as read + write
//! bytes.
//!
//! HBM, not L2: consecutive launches cycle over enough distinct copies of the weights that at
//! least [`ROTATE_BYTES`] (512 MiB, ≥ 4× the L2 of any current GPU: 50 MB on an H100) are
//! touched between two uses of one copy, and one full cycle runs before the timing starts.
//! (Timing one copy again and again let 4096×4096 matrices sit in L2: F16 showed 128% of
//! the copy bandwidth.) Without a device it says so and exits 0.
//!
//! Beside each matvec, on the same weight copies: `read`, a kernel that only reads the same
//! bytes (coalesced 16-byte loads, probe.cu), so "% of read" is what the matvec's own work
//! costs over reading; the matvec replayed from a CUDA graph (as decode runs); and the launch
//! floor, an empty kernel back to back, eagerly and in a graph. Then the matvec
//! again with each `--prefetch` setting (bytes of each row asked of L2 before the kernel's
//! first wait, dev/cuda's `Matvec::Trial`; default 0, 1024 and 8192; 0 is the product's
//! kernel): every setting and the read are timed in two alternating rounds, and each cell is
//! the faster round's mean. On a device of compute capability 9.0 or later every setting is
//! timed a second time with programmatic dependent launch (each matvec may start while the
//! one before it finishes, prefetching, and waits for it before reading x), and the graph
//! too. Each quantized format is also timed in every other shape of its kernels
//! (`shapes::VARIANTS`: warps per CTA, rows per warp, iterations in flight; build.rs
//! compiles each as its own module), in the same alternating rounds.
//!
//! First, validation: on a small matrix of each format, every one of those kernels must give
//! the product kernel's bits, and the product's result must match a CPU reference (the f64
//! product of the CPU's dequantized W and x); a failure ends the run with exit status 1.
//!
//! Then prefill: the tensor-core matmul of each format at 4096×4096 on 512 tokens (f32
//! activations), its device time and TFLOP/s (2·rows·cols·tokens per launch); and, where
//! libcublas loads, the alternative of dequantizing W and x to f16 and multiplying with
//! cuBLAS's f16 GEMM (f32 sums): the three launches together, and the GEMM alone (W kept in
//! f16, at twice or more the memory of a quantized W).

use strata_dev_cuda::blas::{Blas, BlasError};
use strata_dev_cuda::probe::{self, read_probe_sums};
use strata_dev_cuda::{pdl_unsupported, shapes, Matvec};
use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_kernels_cuda::{q8_1_bytes, DeviceBuffer, Gpu, GpuTimer};

const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];
/// Weight bytes touched between two uses of one weight copy (see the module comment).
const ROTATE_BYTES: usize = 512 << 20;
/// Timed rounds per cell (alternating between the read and the prefetch settings).
const ROUNDS: usize = 2;

fn main() {
    let mut iters = 50usize;
    let mut csv = false;
    let mut only: Option<Vec<GgmlType>> = None;
    let mut prefetch = vec![0u32, 1024, 8192];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => iters = n,
                _ => fail("--iters takes a positive integer"),
            },
            "--csv" => csv = true,
            "--format" => {
                let list = args.next().unwrap_or_default();
                let mut v = Vec::new();
                for name in list.split(',').map(str::trim) {
                    match GgmlType::WEIGHTS
                        .into_iter()
                        .find(|t| t.name().eq_ignore_ascii_case(name))
                    {
                        Some(t) => v.push(t),
                        None => fail(&format!("--format {name:?} is not a weight format")),
                    }
                }
                only = Some(v);
            }
            "--prefetch" => {
                let list = args.next().unwrap_or_default();
                match list
                    .split(',')
                    .map(|v| v.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(mut v) if !v.is_empty() => {
                        // The first setting is the table's (the product's kernel: 0).
                        if v[0] != 0 {
                            v.insert(0, 0);
                        }
                        prefetch = v;
                    }
                    _ => fail(&format!(
                        "--prefetch takes bytes per row as a comma-separated list, not {list:?}"
                    )),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: cuda-bench [--iters N] [--csv] [--format NAME,...] [--prefetch B,B,...]"
                );
                return;
            }
            other => fail(&format!("unknown argument {other:?} (try --help)")),
        }
    }
    let gpu = match Gpu::first() {
        Ok(g) => g,
        // "skipped: no CUDA device: <why>"; a device that is there but fails is an error.
        Err(e @ strata_kernels_cuda::CudaError::Unavailable(_)) => {
            println!("skipped: {e}");
            return;
        }
        Err(e) => fail(&e.to_string()),
    };
    if let Err(e) = run(&gpu, iters, csv, only.as_deref(), &prefetch) {
        fail(&e.to_string());
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("cuda-bench: {msg}");
    std::process::exit(1)
}

fn run(
    gpu: &Gpu,
    iters: usize,
    csv: bool,
    only: Option<&[GgmlType]>,
    prefetch: &[u32],
) -> Result<(), Box<dyn std::error::Error>> {
    let info = gpu.info()?;
    let pdl_why = pdl_unsupported(gpu);
    let pdl_ok = pdl_why.is_none();
    let settings: Vec<Kernel> = [false, true]
        .into_iter()
        .filter(|&pdl| !pdl || pdl_ok)
        .flat_map(|pdl| {
            prefetch.iter().map(move |&prefetch| {
                Kernel::Matvec(if prefetch == 0 && !pdl {
                    Matvec::Product
                } else {
                    Matvec::Trial { prefetch, pdl }
                })
            })
        })
        .collect();
    // The quantized kernels' other shapes (build.rs compiles each as a module), prefetch 0.
    let variants: Vec<Kernel> = shapes::VARIANTS
        .iter()
        .map(|v| Kernel::Matvec(Matvec::Shape(v)))
        .collect();
    let launches: Vec<Matvec> = settings
        .iter()
        .chain(&variants)
        .filter_map(|k| match k {
            Kernel::Matvec(m) => Some(*m),
            Kernel::Read => None,
        })
        .collect();
    validate(gpu, only, &launches, csv)?;
    let mut busy = Busy::new(gpu)?;
    let copy = busy.bandwidth(gpu, iters)?;
    // Device time the timed launches queue behind (see `Rotation::time`).
    let lead_us = QUEUE_COPIES as f64 * busy.bytes() as f64 / (copy * 1e3);
    let (empty_us, empty_graph_us) = time_empty(gpu, &mut busy, iters)?;
    if csv {
        println!(
            "format,rows,cols,bytes,kernel,us,gb_per_s,ratio_to_copy,ratio_to_read,\
             host_us_per_launch"
        );
        println!("empty,0,0,0,empty,{empty_us:.2},0,0,0,0");
        println!("empty,0,0,0,empty_graph,{empty_graph_us:.2},0,0,0,0");
    } else {
        println!(
            "device {} ({}, cc {}.{}, {:.1} GiB)\n",
            info.ordinal,
            info.name,
            info.compute_capability.0,
            info.compute_capability.1,
            info.total_bytes as f64 / (1u64 << 30) as f64
        );
        println!("device copy bandwidth (256 MiB, read + write): {copy:.1} GB/s");
        if let Some(why) = &pdl_why {
            println!("no PDL columns: {why}");
        }
        println!(
            "empty kernel, back to back: {empty_us:.2} µs a launch; {empty_graph_us:.2} µs \
             inside a CUDA graph"
        );
        println!(
            "matvec: launches cycle over weight copies, >= {} MiB touched between two uses \
             of one copy (not L2-resident); the timed launches queue behind {lead_us:.0} µs \
             of copies, so µs is device time, not the host's launch rate (host µs/launch: \
             the host's side; * = the host fell behind the device in that row)\n",
            ROTATE_BYTES >> 20
        );
        println!(
            "read = a kernel that only reads the same weight bytes (coalesced 16-byte loads); \
             % of read = read µs / matvec µs; graph µs = the matvec's launches replayed from \
             one CUDA graph, as decode runs them. Each cell: the faster of {ROUNDS} \
             alternating rounds of {iters} launches\n"
        );
        println!(
            "| format | rows × cols | MiB read | µs | GB/s | % of copy | read µs | % of read \
             | graph µs |{} host µs/launch |",
            if pdl_ok { " graph µs, PDL |" } else { "" }
        );
        println!(
            "|---|---|---|---|---|---|---|---|---|{}---|",
            if pdl_ok { "---|" } else { "" }
        );
    }
    let mut trials = Vec::new();
    for ty in GgmlType::WEIGHTS {
        if only.is_some_and(|o| !o.contains(&ty)) {
            continue;
        }
        for (rows, cols) in SHAPES {
            let mut rot = Rotation::new(gpu, ty, rows, cols)?;
            let mut row_settings = settings.clone();
            if !rot.float() {
                row_settings.extend(&variants);
            }
            let mut best = vec![f64::INFINITY; row_settings.len()];
            let mut read_us = rot.can_read().then_some(f64::INFINITY);
            let mut host_us = 0.0f64;
            let mut graph_us = [f64::INFINITY; 2];
            for _ in 0..ROUNDS {
                if let Some(r) = read_us.as_mut() {
                    *r = r.min(rot.time(gpu, &mut busy, Kernel::Read, iters)?.0);
                }
                for (b, &k) in best.iter_mut().zip(&row_settings) {
                    let (us, host) = rot.time(gpu, &mut busy, k, iters)?;
                    *b = b.min(us);
                    if k == settings[0] {
                        host_us = host_us.max(host);
                    }
                }
                // After the eager launches: capture must find the kernels' modules loaded.
                for (g, pdl) in graph_us.iter_mut().zip([false, true]) {
                    if !pdl || pdl_ok {
                        *g = g.min(rot.time_graph(gpu, &mut busy, iters, pdl)?);
                    }
                }
            }
            let us = best[0];
            let bytes = rot.bytes();
            let gbs = bytes as f64 / (us * 1e3);
            // The host fell behind if queuing all launches took longer than the lead plus
            // the device's own time for them.
            let starved = host_us * iters as f64 > lead_us + us * iters as f64;
            if csv {
                let line = |kernel: &str, us: f64| {
                    let gbs = bytes as f64 / (us * 1e3);
                    let of_read = read_us.map_or(0.0, |r| r / us);
                    println!(
                        "{ty},{rows},{cols},{bytes},{kernel},{us:.2},{gbs:.1},{:.3},{of_read:.3},\
                         {host_us:.2}",
                        gbs / copy
                    );
                };
                if let Some(r) = read_us {
                    line("read", r);
                }
                line("matvec_graph", graph_us[0]);
                if pdl_ok {
                    line("matvec_graph_pdl", graph_us[1]);
                }
                for (k, &us) in row_settings.iter().zip(&best) {
                    line(&k.csv_name(), us);
                }
            } else {
                let (read, of_read) = match read_us {
                    Some(r) => (format!("{r:.1}"), format!("{:.0}%", 100.0 * r / us)),
                    None => ("-".to_string(), "-".to_string()),
                };
                let graph_pdl = if pdl_ok {
                    format!(" {:.1} |", graph_us[1])
                } else {
                    String::new()
                };
                println!(
                    "| {ty} | {rows} × {cols} | {:.1} | {us:.1} | {gbs:.0} | {:.0}% | {read} | \
                     {of_read} | {:.1} |{graph_pdl} {host_us:.1}{} |",
                    bytes as f64 / (1u64 << 20) as f64,
                    100.0 * gbs / copy,
                    graph_us[0],
                    if starved { " *" } else { "" }
                );
                trials.push((ty, rows, cols, bytes, best));
            }
        }
    }
    if !csv && !variants.is_empty() {
        println!(
            "\nquantized matvec µs by kernel shape (dev/cuda's variants of matvec.cu, prefetch \
             0, plain launches; % of copy in brackets):\n"
        );
        println!("- default: the product's shape");
        for v in shapes::VARIANTS {
            println!("- {}: {}", v.name, v.why);
        }
        let head: Vec<&str> = std::iter::once("default")
            .chain(shapes::VARIANTS.iter().map(|v| v.name))
            .collect();
        println!("\n| format | rows × cols | {} |", head.join(" | "));
        println!("|---|---|{}", "---|".repeat(head.len()));
        for (ty, rows, cols, bytes, best) in &trials {
            if best.len() == settings.len() {
                continue; // float weights: one shape
            }
            let cells: Vec<String> = std::iter::once(best[0])
                .chain(best[settings.len()..].iter().copied())
                .map(|us| {
                    format!(
                        "{us:.1} ({:.0}%)",
                        100.0 * *bytes as f64 / (us * 1e3) / copy
                    )
                })
                .collect();
            println!("| {ty} | {rows} × {cols} | {} |", cells.join(" | "));
        }
    }
    if !csv && settings.len() > 1 {
        println!(
            "\nmatvec µs by prefetch (bytes of each row asked of L2 before the kernel's first \
             wait) and launch (PDL = programmatic dependent launch); % of copy in brackets\n"
        );
        let head: Vec<String> = settings.iter().map(Kernel::column).collect();
        println!("| format | rows × cols | {} |", head.join(" | "));
        println!("|---|---|{}", "---|".repeat(settings.len()));
        for (ty, rows, cols, bytes, best) in trials {
            let cells: Vec<String> = best[..settings.len()]
                .iter()
                .map(|&us| format!("{us:.1} ({:.0}%)", 100.0 * bytes as f64 / (us * 1e3) / copy))
                .collect();
            println!("| {ty} | {rows} × {cols} | {} |", cells.join(" | "));
        }
    }
    // No libcublas here: the table without its columns; one that loads but fails: an error.
    let (blas, no_blas) = match Blas::new(gpu) {
        Ok(b) => (Some(b), None),
        Err(e @ BlasError::Missing(_)) => (None, Some(e)),
        Err(e) => return Err(e.into()),
    };
    if !csv {
        println!(
            "\nmatmul (prefill, tensor cores): {MM_ROWS} × {MM_COLS} weights on {MM_TOKENS} \
             f32 tokens\n"
        );
        match &no_blas {
            None => {
                println!(
                    "cuBLAS = W and x dequantized to f16 by Strata's kernels, then cuBLAS's \
                     f16 GEMM with f32 sums (µs of the three launches); GEMM only = W already \
                     f16\n"
                );
                println!(
                    "| format | µs | TFLOP/s | cuBLAS µs | TFLOP/s | GEMM only µs | TFLOP/s |"
                );
                println!("|---|---|---|---|---|---|---|");
            }
            Some(e) => {
                println!("no cuBLAS columns: {e}\n");
                println!("| format | µs | TFLOP/s |");
                println!("|---|---|---|");
            }
        }
    }
    let tflops = |us: f64| 2.0 * (MM_ROWS * MM_COLS * MM_TOKENS) as f64 / (us * 1e6);
    for ty in GgmlType::WEIGHTS {
        if only.is_some_and(|o| !o.contains(&ty)) {
            continue;
        }
        let mut mm = Matmul::new(gpu, ty)?;
        let n = iters.min(20);
        let us = mm.time(gpu, n, |m| m.strata(gpu))?;
        let cublas = match &blas {
            Some(b) => Some((
                mm.time(gpu, n, |m| m.cublas(gpu, b, true))?,
                mm.time(gpu, n, |m| m.cublas(gpu, b, false))?,
            )),
            None => None,
        };
        if csv {
            println!(
                "matmul_{ty},{MM_ROWS},{MM_COLS},{MM_TOKENS},{us:.2},{:.2}",
                tflops(us)
            );
            if let Some((all, gemm)) = cublas {
                println!(
                    "matmul_cublas_{ty},{MM_ROWS},{MM_COLS},{MM_TOKENS},{all:.2},{:.2}",
                    tflops(all)
                );
                println!(
                    "matmul_cublas_gemm_{ty},{MM_ROWS},{MM_COLS},{MM_TOKENS},{gemm:.2},{:.2}",
                    tflops(gemm)
                );
            }
        } else {
            let more = cublas.map_or(String::new(), |(all, gemm)| {
                format!(
                    " {all:.1} | {:.1} | {gemm:.1} | {:.1} |",
                    tflops(all),
                    tflops(gemm)
                )
            });
            println!("| {ty} | {us:.1} | {:.1} |{more}", tflops(us));
        }
    }
    Ok(())
}

/// Rows and columns of the validation matrices: a last CTA with spare warps and partial
/// row groups in every shape; 21 K-quant super-blocks (84 units) or 168 legacy blocks, so
/// that each lane takes several units, the unrolled loops running whole and partly.
const VALIDATE_SHAPE: (usize, usize) = (37, 5376);

/// Every kernel in `launches` on a small matrix of each format (all of them, or `only`): each
/// must give the product kernel's bits, and the product's y must be within a bound of the CPU
/// reference (the f64 product of the CPU's dequantized W and of x as the kernels take it:
/// q8_1 for quantized weights). The bound, 2⁻⁸ of Σ|w·x|, is far above rounding (the derived
/// tolerances are tests/tests/cuda_kernels.rs's) and far below a wrong block or lane.
fn validate(
    gpu: &Gpu,
    only: Option<&[GgmlType]>,
    launches: &[Matvec],
    csv: bool,
) -> Result<(), strata_kernels_cuda::CudaError> {
    let (rows, cols) = VALIDATE_SHAPE;
    let mut worst = 0.0f64;
    for ty in GgmlType::WEIGHTS {
        if only.is_some_and(|o| !o.contains(&ty)) {
            continue;
        }
        let floats = random_floats(rows * cols, ty.id() as u64 + 11);
        let mut wbytes = vec![0u8; rows * cols / ty.block_size() * ty.type_size()];
        quantize(ty, &floats, &mut wbytes).unwrap_or_else(|e| fail(&format!("{ty}: {e}")));
        let x = random_floats(cols, ty.id() as u64 + 13);
        let w = gpu.upload(&wbytes)?;
        let xd = gpu.upload(&x)?;
        let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, 1))?;
        let mut run = |m: Matvec| {
            let mut y = gpu.zeros::<f32>(rows)?;
            m.run(gpu, ty, &w, &xd, &mut xq, &mut y, (cols, rows, 1))?;
            y.to_host(gpu)
        };
        let want_bits = run(Matvec::Product)?;
        for &m in launches {
            let got = run(m)?;
            if let Some(r) = (0..rows).find(|&r| got[r].to_bits() != want_bits[r].to_bits()) {
                fail(&format!(
                    "validation: {ty} {m:?} row {r}: {} vs the product's {}",
                    got[r], want_bits[r]
                ));
            }
        }
        // x as the kernel takes it: the q8_1 blocks the product kernel made, or f32.
        let xhat = if ty.is_float() {
            x
        } else {
            let mut xhat = vec![0.0f32; cols];
            dequantize(GgmlType::Q8_1, &xq.to_host(gpu)?, &mut xhat)
                .unwrap_or_else(|e| fail(&format!("q8_1: {e}")));
            xhat
        };
        let mut wf = vec![0.0f32; rows * cols];
        dequantize(ty, &wbytes, &mut wf).unwrap_or_else(|e| fail(&format!("{ty}: {e}")));
        for (r, wr) in wf.chunks_exact(cols).enumerate() {
            let terms = wr
                .iter()
                .zip(&xhat)
                .map(|(&a, &b)| f64::from(a) * f64::from(b));
            let (want, mag) = terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()));
            let err = (f64::from(want_bits[r]) - want).abs() / mag.max(f64::MIN_POSITIVE);
            if err > 1.0 / 256.0 {
                fail(&format!(
                    "validation: {ty} row {r}: the product kernel gives {}, the CPU reference \
                     {want} (error {err:.2e} of Σ|w·x|)",
                    want_bits[r]
                ));
            }
            worst = worst.max(err);
        }
    }
    if csv {
        return Ok(());
    }
    println!(
        "validation ({rows} × {cols}): {} kernels give the product's bits in every format; \
         product vs CPU reference: at most {worst:.1e} of Σ|w·x|\n",
        launches.len()
    );
    Ok(())
}

/// Uniform in [-1, 1), from [`random_bytes`].
fn random_floats(n: usize, seed: u64) -> Vec<f32> {
    random_bytes(4 * n, seed)
        .chunks_exact(4)
        .map(|c| {
            let u = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8;
            u as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

const MM_ROWS: usize = 4096;
const MM_COLS: usize = 4096;
const MM_TOKENS: usize = 512;

/// One format's prefill operands: W (random bytes), x (f32, also as bytes for the f16
/// conversion), y, and the f16 copies of W and x that the cuBLAS path makes.
struct Matmul {
    ty: GgmlType,
    w: DeviceBuffer<u8>,
    x: DeviceBuffer<f32>,
    xbytes: DeviceBuffer<u8>,
    w16: DeviceBuffer<u16>,
    x16: DeviceBuffer<u16>,
    y: DeviceBuffer<f32>,
}

impl Matmul {
    fn new(gpu: &Gpu, ty: GgmlType) -> Result<Matmul, strata_kernels_cuda::CudaError> {
        let wbytes = MM_ROWS * MM_COLS / ty.block_size() * ty.type_size();
        let x = vec![0.25f32; MM_COLS * MM_TOKENS];
        let xbytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(Matmul {
            ty,
            w: gpu.upload(&random_bytes(wbytes, ty.id() as u64 + 7))?,
            x: gpu.upload(&x)?,
            xbytes: gpu.upload(&xbytes)?,
            w16: gpu.zeros::<u16>(MM_ROWS * MM_COLS)?,
            x16: gpu.zeros::<u16>(MM_COLS * MM_TOKENS)?,
            y: gpu.zeros::<f32>(MM_ROWS * MM_TOKENS)?,
        })
    }

    /// Strata's tensor-core matmul.
    fn strata(&mut self, gpu: &Gpu) -> Result<(), strata_kernels_cuda::CudaError> {
        let (ty, (c, r, t)) = (self.ty, (MM_COLS, MM_ROWS, MM_TOKENS));
        gpu.matmul(ty, &self.w, &self.x, &mut self.y, c, r, t)
    }

    /// cuBLAS's f16 GEMM, after dequantizing W and x to f16 when `convert`.
    fn cublas(&mut self, gpu: &Gpu, blas: &Blas, convert: bool) -> Result<(), BlasError> {
        let (c, r, t) = (MM_COLS, MM_ROWS, MM_TOKENS);
        if convert {
            gpu.dequantize_to_f16(self.ty, &self.w, &mut self.w16, r * c)?;
            gpu.dequantize_to_f16(GgmlType::F32, &self.xbytes, &mut self.x16, c * t)?;
        }
        blas.gemm_f16(gpu, &self.w16, &self.x16, &mut self.y, c, r, t)
    }

    /// Mean device µs of `op` over `iters` runs, after one untimed run (the same W each run,
    /// so partly from L2: at 512 tokens the arithmetic, not the reading, sets the time).
    fn time<E: From<strata_kernels_cuda::CudaError>>(
        &mut self,
        gpu: &Gpu,
        iters: usize,
        mut op: impl FnMut(&mut Matmul) -> Result<(), E>,
    ) -> Result<f64, E> {
        op(self)?;
        let t = GpuTimer::start(gpu)?;
        for _ in 0..iters {
            op(self)?;
        }
        Ok(t.stop(gpu)? as f64 * 1e3 / iters as f64)
    }
}

/// Copies queued before the timed launches of one row.
const QUEUE_COPIES: usize = 4;

/// A 256 MiB device-to-device copy: the bandwidth reference, and device work that the
/// timed launches queue behind.
struct Busy {
    src: DeviceBuffer<u8>,
    dst: DeviceBuffer<u8>,
}

impl Busy {
    fn new(gpu: &Gpu) -> Result<Busy, strata_kernels_cuda::CudaError> {
        let n = 256usize << 20;
        Ok(Busy {
            src: gpu.zeros::<u8>(n)?,
            dst: gpu.zeros::<u8>(n)?,
        })
    }

    fn bytes(&self) -> usize {
        2 * self.src.len()
    }

    fn copy(&mut self, gpu: &Gpu) -> Result<(), strata_kernels_cuda::CudaError> {
        gpu.stream()
            .memcpy_dtod(self.src.slice(), self.dst.slice_mut())
            .map_err(|e| strata_kernels_cuda::CudaError::Unavailable(format!("copy failed: {e}")))
    }

    /// GB/s of the copy, counting the bytes read and written.
    fn bandwidth(
        &mut self,
        gpu: &Gpu,
        iters: usize,
    ) -> Result<f64, strata_kernels_cuda::CudaError> {
        self.copy(gpu)?; // warm-up
        let t = GpuTimer::start(gpu)?;
        for _ in 0..iters {
            self.copy(gpu)?;
        }
        let ms = t.stop(gpu)? as f64;
        Ok(self.bytes() as f64 * iters as f64 / (ms * 1e6))
    }
}

/// Mean device µs of one empty kernel launched back to back behind the copies, and of one
/// inside a CUDA graph of `iters` of them.
fn time_empty(
    gpu: &Gpu,
    busy: &mut Busy,
    iters: usize,
) -> Result<(f64, f64), strata_kernels_cuda::CudaError> {
    probe::empty_kernel(gpu)?; // loads the module
    for _ in 0..QUEUE_COPIES {
        busy.copy(gpu)?;
    }
    let t = GpuTimer::start(gpu)?;
    for _ in 0..iters {
        probe::empty_kernel(gpu)?;
    }
    let eager = t.stop(gpu)? as f64 * 1e3 / iters as f64;
    let graph = gpu.capture(|| (0..iters).try_for_each(|_| probe::empty_kernel(gpu)))?;
    Ok((eager, time_graph_launch(gpu, busy, &graph)? / iters as f64))
}

/// Device µs of one launch of `graph` (after one untimed launch), queued behind the copies.
fn time_graph_launch(
    gpu: &Gpu,
    busy: &mut Busy,
    graph: &strata_kernels_cuda::GpuGraph,
) -> Result<f64, strata_kernels_cuda::CudaError> {
    graph.launch()?;
    for _ in 0..QUEUE_COPIES {
        busy.copy(gpu)?;
    }
    let t = GpuTimer::start(gpu)?;
    graph.launch()?;
    Ok(t.stop(gpu)? as f64 * 1e3)
}

/// What [`Rotation::time`] launches.
#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    /// The read probe over the weight bytes.
    Read,
    /// A matvec: the product's, or one of dev/cuda's trials.
    Matvec(Matvec),
}

impl Kernel {
    /// The column of the prefetch and PDL table.
    fn column(&self) -> String {
        match self {
            Kernel::Matvec(Matvec::Trial { prefetch, pdl }) => {
                format!("{}{prefetch} B", if *pdl { "PDL, " } else { "" })
            }
            Kernel::Matvec(Matvec::Product) => "0 B".to_string(),
            Kernel::Matvec(Matvec::Shape(v)) => v.name.to_string(),
            Kernel::Read => "read".to_string(),
        }
    }

    /// The CSV's kernel column (the names the kernels had before they left the product).
    fn csv_name(&self) -> String {
        match self {
            Kernel::Read => "read".to_string(),
            Kernel::Matvec(Matvec::Product) => "matvec_prefetch_0".to_string(),
            Kernel::Matvec(Matvec::Shape(v)) => format!("matvec_shape_{}_prefetch_0", v.name),
            Kernel::Matvec(Matvec::Trial { prefetch, pdl }) => format!(
                "matvec_{}prefetch_{prefetch}",
                if *pdl { "pdl_" } else { "" }
            ),
        }
    }
}

/// One format and shape: enough copies of random weights to rotate over (see the module
/// comment), and the activations and output.
struct Rotation {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    ws: Vec<DeviceBuffer<u8>>,
    x: DeviceBuffer<f32>,
    xq: DeviceBuffer<u8>,
    y: DeviceBuffer<f32>,
    sums: DeviceBuffer<u32>,
}

impl Rotation {
    fn new(
        gpu: &Gpu,
        ty: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<Rotation, strata_kernels_cuda::CudaError> {
        let wbytes = rows * cols / ty.block_size() * ty.type_size();
        // Random bytes: the timing of these kernels does not depend on the values. The
        // copies are made on the device (uploading 512 MiB per row would dominate the run).
        let first = gpu.upload(&random_bytes(wbytes, ty.id() as u64 + 1))?;
        let ncopies = ROTATE_BYTES.div_ceil(wbytes).max(2);
        let mut ws = Vec::with_capacity(ncopies);
        for _ in 1..ncopies {
            let mut c = gpu.zeros::<u8>(wbytes)?;
            c.copy_within_device(gpu, 0, &first, 0, wbytes)?;
            ws.push(c);
        }
        ws.push(first);
        let x = gpu.upload(&vec![0.5f32; cols])?;
        let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, 1))?;
        gpu.quantize_q8_1(&x, &mut xq, cols, 1)?;
        Ok(Rotation {
            ty,
            rows,
            cols,
            ws,
            x,
            xq,
            y: gpu.zeros::<f32>(rows)?,
            sums: gpu.zeros::<u32>(read_probe_sums(wbytes))?,
        })
    }

    fn float(&self) -> bool {
        self.ty.is_float()
    }

    /// Whether the read probe can take the weights (a whole number of 16-byte words).
    fn can_read(&self) -> bool {
        self.ws[0].len().is_multiple_of(16)
    }

    /// Bytes one matvec reads and writes: weights, activations, output.
    fn bytes(&self) -> usize {
        let act = if self.float() {
            self.cols * 4
        } else {
            q8_1_bytes(self.cols, 1)
        };
        self.ws[0].len() + act + self.rows * 4
    }

    fn once(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        i: usize,
    ) -> Result<(), strata_kernels_cuda::CudaError> {
        let (ty, rows, cols) = (self.ty, self.rows, self.cols);
        let w = &self.ws[i % self.ws.len()];
        match kernel {
            Kernel::Read => probe::read_words(gpu, w, &mut self.sums),
            Kernel::Matvec(m) if self.float() => m.run(
                gpu,
                ty,
                w,
                &self.x,
                &mut self.xq,
                &mut self.y,
                (cols, rows, 1),
            ),
            Kernel::Matvec(m) => m.run_q8_1(gpu, ty, w, &self.xq, &mut self.y, (cols, rows, 1)),
        }
    }

    /// Mean device µs of one matvec (prefetch 0, with programmatic dependent launch or
    /// without) when `iters` of them, cycling over the copies, are replayed from one CUDA
    /// graph.
    fn time_graph(
        &mut self,
        gpu: &Gpu,
        busy: &mut Busy,
        iters: usize,
        pdl: bool,
    ) -> Result<f64, strata_kernels_cuda::CudaError> {
        let k = Kernel::Matvec(if pdl {
            Matvec::Trial { prefetch: 0, pdl }
        } else {
            Matvec::Product
        });
        // Called after `time`: the module is loaded (no loading during a capture) and the
        // copies cycled.
        let graph = gpu.capture(|| (0..iters).try_for_each(|i| self.once(gpu, k, i)))?;
        Ok(time_graph_launch(gpu, busy, &graph)? / iters as f64)
    }

    /// Mean device µs and host µs of one launch of `kernel`, cycling over the copies.
    fn time(
        &mut self,
        gpu: &Gpu,
        busy: &mut Busy,
        kernel: Kernel,
        iters: usize,
    ) -> Result<(f64, f64), strata_kernels_cuda::CudaError> {
        // One full cycle first: each timed launch then reads a copy last touched a cycle ago.
        for i in 0..self.ws.len() {
            self.once(gpu, kernel, i)?;
        }
        // Device work ahead of the timer, so that the host queues launches while the device
        // is busy and the events measure the kernels back to back, not the host's launch rate.
        for _ in 0..QUEUE_COPIES {
            busy.copy(gpu)?;
        }
        let t = GpuTimer::start(gpu)?;
        let host = std::time::Instant::now();
        for i in 0..iters {
            self.once(gpu, kernel, i)?;
        }
        let host_us = host.elapsed().as_secs_f64() * 1e6 / iters as f64;
        let ms = t.stop(gpu)? as f64;
        Ok((ms * 1e3 / iters as f64, host_us))
    }
}

/// xorshift64*: fast, reproducible filler.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        v.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}
