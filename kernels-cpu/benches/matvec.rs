//! Criterion benches of matvec (one token) and matmul (prefill) per weight format, at the
//! active ISA level (set STRATA_ISA to compare levels).
//!
//! Shapes: 4096×4096, and SmolLM2-135M's 576×576 (attention), 1536×576 and 576×1536 (FFN),
//! 49152×576 (output layer); matmul at 128 and 512 tokens on the 576×1536 FFN matrix.
//! K-quants skip the 576-column shapes (576 is not whole 256-element super-blocks; llama.cpp
//! falls back to other types for such tensors too).
//! Formats with packed kernels at the active level (`packed::supports`: 16-row groups, as
//! the engine loads them) get a `<shape>/packed` case after each row-kernel case, and a
//! `pack/<format>` group: repacking a ~64 MiB matrix in place on one thread (what the
//! engine does at load, there over every thread).
//! Throughput is weight bytes per second for matvec and packing, multiply-adds (elements)
//! for matmul. Filter with e.g. `cargo bench -p strata-kernels-cpu --bench matvec -- Q4_0`.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use strata_kernels_cpu::act::quantize_acts;
use strata_kernels_cpu::isa;
use strata_kernels_cpu::matmul::matmul_quantized;
use strata_kernels_cpu::matvec::matvec_quantized;
use strata_kernels_cpu::packed::{self, matmul_packed, matvec_packed, PackedMatrix};
use strata_kernels_cpu::{quantize, GgmlType};

const MATVEC_SHAPES: [(usize, usize); 5] = [
    (4096, 4096),
    (576, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
];
const MATMUL_SHAPE: (usize, usize) = (576, 1536);
const MATMUL_TOKENS: [usize; 2] = [128, 512];
/// Packing: about this many bytes of weights, at these column counts (SmolLM2's and an
/// 8B model's hidden size).
const PACK_BYTES: usize = 64 << 20;
const PACK_COLS: [usize; 2] = [576, 4096];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// `rows`×`cols` weights of `ty`: 16 quantized rows repeated (quantizing 28M elements with
/// the K-quant search would dominate the bench's start-up; repeated rows read the same).
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let row_bytes = cols / ty.block_size() * ty.type_size();
    let mut seed_rows = vec![0u8; 16 * row_bytes];
    quantize(ty, &values(16 * cols, 1), &mut seed_rows).expect("quantize bench weights");
    seed_rows
        .iter()
        .copied()
        .cycle()
        .take(rows * row_bytes)
        .collect()
}

fn bench(c: &mut Criterion) {
    for ty in GgmlType::WEIGHTS {
        let mut g = c.benchmark_group(format!("matvec/{ty}"));
        g.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
        for (rows, cols) in MATVEC_SHAPES {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let w = weights(ty, rows, cols);
            let acts = quantize_acts(ty.vec_dot_type(), &values(cols, 2), 1, cols).unwrap();
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(w.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{rows}x{cols}")), |b| {
                b.iter(|| matvec_quantized(ty, &w, rows, cols, &acts, &mut y).unwrap())
            });
            if let Some(p) = packed_copy(ty, &w, rows, cols) {
                let p = p.view();
                let id = format!("{rows}x{cols}/packed");
                g.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| matvec_packed(&p, &acts, &mut y).unwrap())
                });
            }
        }
        g.finish();

        let mut g = c.benchmark_group(format!("matmul/{ty}"));
        g.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
        let (rows, cols) = MATMUL_SHAPE;
        let w = weights(ty, rows, cols);
        let p = packed_copy(ty, &w, rows, cols);
        for n in MATMUL_TOKENS {
            let acts = quantize_acts(ty.vec_dot_type(), &values(n * cols, 3), n, cols).unwrap();
            let mut y = vec![0f32; n * rows];
            g.throughput(Throughput::Elements((rows * cols * n) as u64));
            g.bench_function(
                BenchmarkId::from_parameter(format!("{rows}x{cols}x{n}")),
                |b| b.iter(|| matmul_quantized(ty, &w, rows, cols, &acts, &mut y).unwrap()),
            );
            // The packed matmul at 128 tokens only (512 tokens adds run time, not insight).
            if let (Some(p), 128) = (&p, n) {
                let p = p.view();
                let id = format!("{rows}x{cols}x{n}/packed");
                g.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| matmul_packed(&p, &acts, &mut y).unwrap())
                });
            }
        }
        g.finish();

        if packed::supports(ty, isa::active()) {
            bench_pack(c, ty);
        }
    }
}

/// A packed copy of `w` if `ty` has packed kernels at the active level.
fn packed_copy(ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Option<PackedMatrix> {
    PackedMatrix::new(isa::active(), ty, w, rows, cols).expect("pack bench weights")
}

/// Repacking ~`PACK_BYTES` in place on one thread (packing an already packed buffer is
/// the same work: the same permutation of the same number of bytes).
fn bench_pack(c: &mut Criterion, ty: GgmlType) {
    let mut g = c.benchmark_group(format!("pack/{ty}"));
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for cols in PACK_COLS.into_iter().filter(|c| c % ty.block_size() == 0) {
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let rows = PACK_BYTES / row_bytes / packed::GROUP_ROWS * packed::GROUP_ROWS;
        let mut w = weights(ty, rows, cols);
        g.throughput(Throughput::Bytes(w.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{rows}x{cols}")), |b| {
            b.iter(|| {
                one.install(|| packed::pack_in_place(isa::active(), ty, &mut w, rows, cols))
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
