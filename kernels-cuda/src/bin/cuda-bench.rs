//! Matvec bandwidth for every weight format on the first CUDA device, next to the device's
//! measured copy bandwidth in the same run.
//!
//! `cuda-bench [--iters N] [--csv]`: for each format and each shape (4096×4096, 14336×4096),
//! the time of one matvec on q8_1 (or f32) activations already on the device, and the bytes
//! it must read (weights + activations + output) per second. The ratio is to a device-to-
//! device copy, counted as read + write bytes. Without a device it says so and exits 0.

use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::{q8_1_bytes, DeviceBuffer, Gpu, GpuTimer};

const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];

fn main() {
    let mut iters = 50usize;
    let mut csv = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => iters = n,
                _ => fail("--iters takes a positive integer"),
            },
            "--csv" => csv = true,
            "-h" | "--help" => {
                println!("usage: cuda-bench [--iters N] [--csv]");
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
    if let Err(e) = run(&gpu, iters, csv) {
        fail(&e.to_string());
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("cuda-bench: {msg}");
    std::process::exit(1)
}

fn run(gpu: &Gpu, iters: usize, csv: bool) -> Result<(), strata_kernels_cuda::CudaError> {
    let info = gpu.info()?;
    let copy = copy_bandwidth(gpu, iters)?;
    if csv {
        println!("format,rows,cols,bytes,us,gb_per_s,ratio_to_copy");
    } else {
        println!(
            "device {} ({}, cc {}.{}, {:.1} GiB)\n",
            info.ordinal,
            info.name,
            info.compute_capability.0,
            info.compute_capability.1,
            info.total_bytes as f64 / (1u64 << 30) as f64
        );
        println!("device copy bandwidth (read + write): {copy:.1} GB/s\n");
        println!("| format | rows × cols | MiB read | µs | GB/s | % of copy |");
        println!("|---|---|---|---|---|---|");
    }
    for ty in GgmlType::WEIGHTS {
        for (rows, cols) in SHAPES {
            let (us, bytes) = time_matvec(gpu, ty, rows, cols, iters)?;
            let gbs = bytes as f64 / (us * 1e3);
            if csv {
                println!(
                    "{ty},{rows},{cols},{bytes},{us:.2},{gbs:.1},{:.3}",
                    gbs / copy
                );
            } else {
                println!(
                    "| {ty} | {rows} × {cols} | {:.1} | {us:.1} | {gbs:.0} | {:.0}% |",
                    bytes as f64 / (1u64 << 20) as f64,
                    100.0 * gbs / copy
                );
            }
        }
    }
    Ok(())
}

/// GB/s of a 256 MiB device-to-device copy, counting the bytes read and written.
fn copy_bandwidth(gpu: &Gpu, iters: usize) -> Result<f64, strata_kernels_cuda::CudaError> {
    let n = 256usize << 20;
    let src = gpu.zeros::<u8>(n)?;
    let mut dst = gpu.zeros::<u8>(n)?;
    let copy = |dst: &mut DeviceBuffer<u8>| -> Result<(), strata_kernels_cuda::CudaError> {
        gpu.stream()
            .memcpy_dtod(src.slice(), dst.slice_mut())
            .map_err(|e| strata_kernels_cuda::CudaError::Unavailable(format!("copy failed: {e}")))
    };
    copy(&mut dst)?; // warm-up
    let t = GpuTimer::start(gpu)?;
    for _ in 0..iters {
        copy(&mut dst)?;
    }
    let ms = t.stop(gpu)? as f64;
    Ok(2.0 * n as f64 * iters as f64 / (ms * 1e6))
}

/// Mean µs of one matvec and the bytes it reads and writes.
fn time_matvec(
    gpu: &Gpu,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    iters: usize,
) -> Result<(f64, usize), strata_kernels_cuda::CudaError> {
    let wbytes = rows * cols / ty.block_size() * ty.type_size();
    // Random bytes: the timing of these kernels does not depend on the values.
    let w = gpu.upload(&random_bytes(wbytes, ty.id() as u64 + 1))?;
    let x = gpu.upload(&vec![0.5f32; cols])?;
    let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, 1))?;
    let mut y = gpu.zeros::<f32>(rows)?;
    let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    gpu.quantize_q8_1(&x, &mut xq, cols, 1)?;
    let mut once = |y: &mut DeviceBuffer<f32>| {
        if float {
            gpu.matvec(ty, &w, &x, &mut xq, y, cols, rows, 1)
        } else {
            gpu.matvec_q8_1(ty, &w, &xq, y, cols, rows, 1)
        }
    };
    for _ in 0..3 {
        once(&mut y)?;
    }
    let t = GpuTimer::start(gpu)?;
    for _ in 0..iters {
        once(&mut y)?;
    }
    let ms = t.stop(gpu)? as f64;
    let act = if float { cols * 4 } else { q8_1_bytes(cols, 1) };
    Ok((ms * 1e3 / iters as f64, wbytes + act + rows * 4))
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
