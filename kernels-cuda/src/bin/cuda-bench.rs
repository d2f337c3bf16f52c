//! Matvec bandwidth for every weight format on the first CUDA device, next to the device's
//! measured copy bandwidth in the same run.
//!
//! `cuda-bench [--iters N] [--csv] [--format NAME]`: for each format (or only NAME) and each
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
//! Then prefill: the tensor-core matmul of each format at 4096×4096 on 512 tokens (f32
//! activations), its device time and TFLOP/s (2·rows·cols·tokens per launch).

use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::{q8_1_bytes, DeviceBuffer, Gpu, GpuTimer};

const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];
/// Weight bytes touched between two uses of one weight copy (see the module comment).
const ROTATE_BYTES: usize = 512 << 20;

fn main() {
    let mut iters = 50usize;
    let mut csv = false;
    let mut only: Option<GgmlType> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => iters = n,
                _ => fail("--iters takes a positive integer"),
            },
            "--csv" => csv = true,
            "--format" => {
                let name = args.next().unwrap_or_default();
                match GgmlType::WEIGHTS
                    .into_iter()
                    .find(|t| t.name().eq_ignore_ascii_case(&name))
                {
                    Some(t) => only = Some(t),
                    None => fail(&format!("--format {name:?} is not a weight format")),
                }
            }
            "-h" | "--help" => {
                println!("usage: cuda-bench [--iters N] [--csv] [--format NAME]");
                return;
            }
            other => fail(&format!("unknown argument {other:?} (try --help)")),
        }
    }
    let gpu = match Gpu::first() {
        Ok(g) => g,
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return;
        }
    };
    if let Err(e) = run(&gpu, iters, csv, only) {
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
    only: Option<GgmlType>,
) -> Result<(), strata_kernels_cuda::CudaError> {
    let info = gpu.info()?;
    let mut busy = Busy::new(gpu)?;
    let copy = busy.bandwidth(gpu, iters)?;
    // Device time the timed launches queue behind (see `time_matvec`).
    let lead_us = QUEUE_COPIES as f64 * busy.bytes() as f64 / (copy * 1e3);
    if csv {
        println!("format,rows,cols,bytes,us,gb_per_s,ratio_to_copy,host_us_per_launch");
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
        println!(
            "matvec: launches cycle over weight copies, >= {} MiB touched between two uses \
             of one copy (not L2-resident); the timed launches queue behind {lead_us:.0} µs \
             of copies, so µs is device time, not the host's launch rate (host µs/launch: \
             the host's side; * = the host fell behind the device in that row)\n",
            ROTATE_BYTES >> 20
        );
        println!("| format | rows × cols | MiB read | µs | GB/s | % of copy | host µs/launch |");
        println!("|---|---|---|---|---|---|---|");
    }
    for ty in GgmlType::WEIGHTS {
        if only.is_some_and(|t| t != ty) {
            continue;
        }
        for (rows, cols) in SHAPES {
            let t = time_matvec(gpu, &mut busy, ty, rows, cols, iters)?;
            let gbs = t.bytes as f64 / (t.us * 1e3);
            // The host fell behind if queuing all launches took longer than the lead plus
            // the device's own time for them.
            let starved = t.host_us * iters as f64 > lead_us + t.us * iters as f64;
            if csv {
                println!(
                    "{ty},{rows},{cols},{},{:.2},{gbs:.1},{:.3},{:.2}",
                    t.bytes,
                    t.us,
                    gbs / copy,
                    t.host_us
                );
            } else {
                println!(
                    "| {ty} | {rows} × {cols} | {:.1} | {:.1} | {gbs:.0} | {:.0}% | {:.1}{} |",
                    t.bytes as f64 / (1u64 << 20) as f64,
                    t.us,
                    100.0 * gbs / copy,
                    t.host_us,
                    if starved { " *" } else { "" }
                );
            }
        }
    }
    if !csv {
        println!(
            "\nmatmul (prefill, tensor cores): {MM_ROWS} × {MM_COLS} weights on {MM_TOKENS} \
             f32 tokens\n"
        );
        println!("| format | µs | TFLOP/s |");
        println!("|---|---|---|");
    }
    for ty in GgmlType::WEIGHTS {
        if only.is_some_and(|t| t != ty) {
            continue;
        }
        let us = time_matmul(gpu, ty, iters.min(20))?;
        let tflops = 2.0 * (MM_ROWS * MM_COLS * MM_TOKENS) as f64 / (us * 1e6);
        if csv {
            println!("matmul_{ty},{MM_ROWS},{MM_COLS},{MM_TOKENS},{us:.2},{tflops:.2}");
        } else {
            println!("| {ty} | {us:.1} | {tflops:.1} |");
        }
    }
    Ok(())
}

const MM_ROWS: usize = 4096;
const MM_COLS: usize = 4096;
const MM_TOKENS: usize = 512;

/// Mean device µs of one matmul of `ty` weights (the matrix is read from L2 after the first
/// launch: at 512 tokens the kernel's arithmetic, not its reading, sets the time).
fn time_matmul(
    gpu: &Gpu,
    ty: GgmlType,
    iters: usize,
) -> Result<f64, strata_kernels_cuda::CudaError> {
    let wbytes = MM_ROWS * MM_COLS / ty.block_size() * ty.type_size();
    let w = gpu.upload(&random_bytes(wbytes, ty.id() as u64 + 7))?;
    let x = gpu.upload(&vec![0.25f32; MM_COLS * MM_TOKENS])?;
    let mut y = gpu.zeros::<f32>(MM_ROWS * MM_TOKENS)?;
    gpu.matmul(ty, &w, &x, &mut y, MM_COLS, MM_ROWS, MM_TOKENS)?; // warm-up
    let t = GpuTimer::start(gpu)?;
    for _ in 0..iters {
        gpu.matmul(ty, &w, &x, &mut y, MM_COLS, MM_ROWS, MM_TOKENS)?;
    }
    Ok(t.stop(gpu)? as f64 * 1e3 / iters as f64)
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

struct Timing {
    /// Mean device µs of one matvec.
    us: f64,
    /// Bytes one matvec reads and writes.
    bytes: usize,
    /// Mean host µs to queue one matvec.
    host_us: f64,
}

/// One matvec's device time, cycling over weight copies.
fn time_matvec(
    gpu: &Gpu,
    busy: &mut Busy,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    iters: usize,
) -> Result<Timing, strata_kernels_cuda::CudaError> {
    let wbytes = rows * cols / ty.block_size() * ty.type_size();
    // Random bytes: the timing of these kernels does not depend on the values. The copies
    // are made on the device (uploading 512 MiB per row would dominate the run).
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
    let mut y = gpu.zeros::<f32>(rows)?;
    let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    gpu.quantize_q8_1(&x, &mut xq, cols, 1)?;
    let mut once = |w: &DeviceBuffer<u8>, y: &mut DeviceBuffer<f32>| {
        if float {
            gpu.matvec(ty, w, &x, &mut xq, y, cols, rows, 1)
        } else {
            gpu.matvec_q8_1(ty, w, &xq, y, cols, rows, 1)
        }
    };
    // One full cycle first: each timed launch then reads a copy last touched a cycle ago.
    for w in &ws {
        once(w, &mut y)?;
    }
    // Device work ahead of the timer, so that the host queues launches while the device is
    // busy and the events measure the kernels back to back, not the host's launch rate.
    for _ in 0..QUEUE_COPIES {
        busy.copy(gpu)?;
    }
    let t = GpuTimer::start(gpu)?;
    let host = std::time::Instant::now();
    for i in 0..iters {
        once(&ws[i % ncopies], &mut y)?;
    }
    let host_us = host.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let ms = t.stop(gpu)? as f64;
    let act = if float { cols * 4 } else { q8_1_bytes(cols, 1) };
    Ok(Timing {
        us: ms * 1e3 / iters as f64,
        bytes: wbytes + act + rows * 4,
        host_us,
    })
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
