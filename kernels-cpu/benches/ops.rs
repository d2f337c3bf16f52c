//! Criterion benches of the f32 ops at SmolLM2-135M shapes (dim 576, ffn 1536, 9 query /
//! 3 KV heads of 64), at every ISA level this CPU has (Vnni runs the AVX-512 code: skipped).
//!
//! `cargo bench -p strata-kernels-cpu --bench ops` (add a filter, e.g. `attention`).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::ops::{self, KvCache, KvType, Rope};
use strata_kernels_cpu::{quantize, GgmlType};

const DIM: usize = 576;
const FFN: usize = 1536;
const N_HEADS: usize = 9;
const N_KV: usize = 3;
const HEAD_DIM: usize = 64;

fn levels() -> Vec<Isa> {
    Isa::supported()
        .into_iter()
        .filter(|&i| i != Isa::Vnni)
        .collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn elementwise<M: Measurement>(c: &mut Criterion<M>) {
    for rows in [1, 512] {
        let mut g = c.benchmark_group(format!("rms_norm/{rows}x{DIM}"));
        g.throughput(Throughput::Elements((rows * DIM) as u64));
        let (x, w) = (random(rows * DIM, 1), random(DIM, 2));
        let mut out = vec![0.0; rows * DIM];
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::rms_norm_rows_isa(isa, black_box(&x), &w, 1e-5, &mut out))
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("swiglu/{rows}x{FFN}"));
        g.throughput(Throughput::Elements((rows * FFN) as u64));
        let (gate, up) = (random(rows * FFN, 3), random(rows * FFN, 4));
        let mut out = vec![0.0; rows * FFN];
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::swiglu_isa(isa, black_box(&gate), &up, &mut out))
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("add/{rows}x{DIM}"));
        g.throughput(Throughput::Elements((rows * DIM) as u64));
        let (a, bb) = (random(rows * DIM, 5), random(rows * DIM, 6));
        let mut acc = a.clone();
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::add_isa(isa, black_box(&mut acc), &bb))
            });
        }
        g.finish();
    }

    for n in [512, 4096] {
        let mut g = c.benchmark_group(format!("softmax/{n}"));
        g.throughput(Throughput::Elements(n as u64));
        let x = random(n, 7);
        let mut y = x.clone();
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| {
                    y.copy_from_slice(&x);
                    ops::softmax_isa(isa, black_box(&mut y))
                })
            });
        }
        g.finish();
    }

    for neox in [false, true] {
        let rope = Rope {
            n_rot: HEAD_DIM,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox,
            yarn: None,
        };
        let mut g = c.benchmark_group(format!(
            "rope/{}/q_{N_HEADS}x{HEAD_DIM}",
            if neox { "neox" } else { "normal" }
        ));
        g.throughput(Throughput::Elements((N_HEADS * HEAD_DIM) as u64));
        let mut q = random(N_HEADS * HEAD_DIM, 8);
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::rope_isa(isa, black_box(&mut q), N_HEADS, HEAD_DIM, 1234, &rope))
            });
        }
        g.finish();
    }
}

fn filled_cache(ty: KvType, n_pos: usize) -> KvCache {
    let kv_dim = N_KV * HEAD_DIM;
    let mut cache = KvCache::new(ty, n_pos, N_KV, HEAD_DIM);
    cache
        .append(0, &random(n_pos * kv_dim, 9), &random(n_pos * kv_dim, 10))
        .unwrap();
    cache
}

fn attention<M: Measurement>(c: &mut Criterion<M>) {
    // Decode: one token against a context of n_ctx positions. Throughput: K and V bytes read.
    for ty in [KvType::F16, KvType::F32] {
        for n_ctx in [256, 4096] {
            let cache = filled_cache(ty, n_ctx);
            let q = random(N_HEADS * HEAD_DIM, 11);
            let mut out = vec![0.0; q.len()];
            let mut g = c.benchmark_group(format!("attention/decode/{ty:?}/ctx{n_ctx}"));
            g.throughput(Throughput::Bytes(
                KvCache::bytes(ty, n_ctx, N_KV, HEAD_DIM) as u64
            ));
            for isa in levels() {
                g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                    b.iter(|| {
                        ops::attention_isa(
                            isa,
                            black_box(&q),
                            &cache,
                            n_ctx - 1,
                            1,
                            N_HEADS,
                            &mut out,
                        )
                    })
                });
            }
            g.finish();
        }
    }
    // Prefill: a causal batch of n tokens from position 0. Throughput: multiply-adds.
    for n in [128, 512] {
        let cache = filled_cache(KvType::F16, n);
        let q = random(n * N_HEADS * HEAD_DIM, 12);
        let mut out = vec![0.0; q.len()];
        let mut g = c.benchmark_group(format!("attention/prefill/F16/{n}"));
        g.throughput(Throughput::Elements(
            (N_HEADS * HEAD_DIM * 2 * n * (n + 1) / 2) as u64,
        ));
        for isa in levels() {
            if isa == Isa::Reference && n > 128 {
                continue; // seconds per iteration; the 128 case shows the ratio
            }
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::attention_isa(isa, black_box(&q), &cache, 0, n, N_HEADS, &mut out))
            });
        }
        g.finish();
    }
}

fn get_rows<M: Measurement>(c: &mut Criterion<M>) {
    // SmolLM2's token embedding: 49152 × 576 in Q8_0.
    let (n_vocab, ty) = (49152, GgmlType::Q8_0);
    let x = random(n_vocab * DIM, 13);
    let mut data = vec![0u8; ty.bytes_for((n_vocab * DIM) as u64).unwrap() as usize];
    quantize(ty, &x, &mut data).unwrap();
    for n in [1usize, 512] {
        let rows: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % n_vocab as u32).collect();
        let mut out = vec![0.0; n * DIM];
        let mut g = c.benchmark_group(format!("get_rows/Q8_0/{n}x{DIM}"));
        g.throughput(Throughput::Elements((n * DIM) as u64));
        g.bench_function("fast", |b| {
            b.iter(|| ops::get_rows(ty, &data, DIM, black_box(&rows), &mut out).unwrap())
        });
        g.bench_function("reference", |b| {
            b.iter(|| ops::get_rows_ref(ty, &data, DIM, black_box(&rows), &mut out).unwrap())
        });
        g.finish();
    }
}

fn weighted_rows<M: Measurement>(c: &mut Criterion<M>) {
    // One head of DeepSeek-V2-Lite's `attn_kv_b` read transposed: 128 rows of 512.
    let (rows, cols) = (128, 512);
    let p = random(rows, 14);
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let mut w = vec![0u8; ty.bytes_for((rows * cols) as u64).unwrap() as usize];
        quantize(ty, &random(rows * cols, 15), &mut w).unwrap();
        let mut out = vec![0.0; cols];
        let mut g = c.benchmark_group(format!("weighted_rows/{ty}/{rows}x{cols}"));
        g.throughput(Throughput::Bytes(w.len() as u64));
        for isa in levels() {
            g.bench_function(BenchmarkId::from_parameter(isa), |b| {
                b.iter(|| ops::weighted_rows_isa(isa, ty, &w, black_box(&p), &mut out).unwrap())
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .sample_size(20)
}

fn all<M: Measurement>(c: &mut Criterion<M>) {
    elementwise(c);
    attention(c);
    get_rows(c);
    weighted_rows(c);
}

/// With `STRATA_BENCH_CPU_TIME=1` (Linux), iterations are timed by the CPU time of the whole
/// process instead of the wall clock: on a machine shared with other work the wall clock
/// counts the time this process waits to be scheduled. Run it with `RAYON_NUM_THREADS=1`
/// (idle rayon workers spin and would be counted).
fn main() {
    if std::env::var_os("STRATA_BENCH_CPU_TIME").is_some() && cfg!(target_os = "linux") {
        let mut c = config()
            .with_measurement(ProcessCpuTime)
            .configure_from_args();
        all(&mut c);
        c.final_summary();
    } else {
        let mut c = config().configure_from_args();
        all(&mut c);
        c.final_summary();
    }
}

struct ProcessCpuTime;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

impl ProcessCpuTime {
    /// Nanoseconds of CPU time used by this process (CLOCK_PROCESS_CPUTIME_ID = 2).
    fn now() -> u64 {
        let mut t = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a pointer to a live timespec.
        let rc = unsafe { clock_gettime(2, &mut t) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }
}

impl Measurement for ProcessCpuTime {
    type Intermediate = u64;
    type Value = Duration;
    fn start(&self) -> u64 {
        Self::now()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(Self::now() - start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as the wall clock's: reuse its formatting.
        (&WallTime as &'static WallTime).formatter()
    }
}
