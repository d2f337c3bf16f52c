//! Every fast dot/matvec/matmul path against its scalar reference twin, and every SIMD
//! activation quantizer against the reference quantizer, at every ISA level this CPU runs.
//!
//! Weights are random bytes (every bit pattern of the quants; d/dmin fields overwritten with
//! random finite f16s), so layouts are exercised without depending on a quantizer.
//!
//! ## Tolerance (fast vs reference)
//!
//! Both paths compute each block's integer dot exactly (i32, no saturation: see the kernel
//! docs), so they differ only in f32 rounding. A path forms float terms from the block sums
//! (scale products, conversions: ≤ 5 roundings each), then adds at most nb + 16 of them
//! (lanes, horizontal sums, the offset/min side sum) in some order. By the standard bound
//! for floating-point summation, each path is within (nb + 21)·u·M of the exact value,
//! u = 2⁻²⁴, where M bounds the sum of the magnitudes of every term the path forms. So
//! |fast − reference| ≤ 2·(nb + 21)·u·M. M is bounded per block by
//! S_b·Σ_{i∈b}|a_i|, with S_b the largest |scale·u| plus twice the largest |scale·offset|
//! (or |min|) an element of that block can have (read from the block's d/dmin: see
//! `block_bound`); the offset counts twice because fast paths may subtract it separately.
//! For F32/F16/BF16, nb is the element count and S_i = |w_i|.

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_kernels_cpu::act::{quantize_acts_isa, quantize_q8_0, quantize_q8_1, quantize_q8_k};
use strata_kernels_cpu::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1};
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::matmul::matmul_quantized_isa;
use strata_kernels_cpu::matvec::matvec_quantized_isa;
use strata_kernels_cpu::packed::{self, matmul_packed, matvec_packed, Packed, PackedMatrix};
use strata_kernels_cpu::{GgmlType, QuantizedActs};

mod dot_support;
use dot_support::block_bound;

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Random weight bytes of `rows`×`cols` elements: random quants, random finite scales.
fn random_weights(rng: &mut ChaCha8Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols / ty.block_size();
    let ts = ty.type_size();
    let mut w = vec![0u8; n * ts];
    rng.fill(&mut w[..]);
    let put = |b: &mut [u8], off: usize, v: f32| {
        b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
    };
    for b in w.chunks_exact_mut(ts) {
        let s: f32 = rng.random_range(-1.0..1.0);
        let m: f32 = rng.random_range(-1.0..1.0);
        match ty {
            GgmlType::F32 => b.copy_from_slice(&s.to_le_bytes()),
            GgmlType::F16 => put(b, 0, s),
            GgmlType::BF16 => b.copy_from_slice(&((s.to_bits() >> 16) as u16).to_le_bytes()),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put(b, 0, s * 0.1),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
                put(b, 0, s * 0.1);
                put(b, 2, m * 0.1);
            }
            GgmlType::Q2_K => {
                put(b, 80, s * 0.1);
                put(b, 82, m * 0.1);
            }
            GgmlType::Q3_K => put(b, 108, s * 0.01),
            GgmlType::Q6_K => put(b, 208, s * 0.01),
            _ => unreachable!("not a weight type"),
        }
    }
    w
}

/// |a_i| of one activation row, dequantized from the reference blocks (or the f32 x).
fn act_abs(acts: &QuantizedActs, x: &[f32], t: usize) -> Vec<f64> {
    let c = acts.cols();
    match acts.ty() {
        Some(GgmlType::F32) => x[t * c..(t + 1) * c]
            .iter()
            .map(|v| f64::from(v.abs()))
            .collect(),
        Some(GgmlType::Q8_0) => acts.q8_0_blocks()[t * c / 32..(t + 1) * c / 32]
            .iter()
            .flat_map(|b| {
                b.qs.map(|q| f64::from(b.d.to_f32()).abs() * f64::from(q).abs())
            })
            .collect(),
        Some(GgmlType::Q8_1) => acts.q8_1_blocks()[t * c / 32..(t + 1) * c / 32]
            .iter()
            .flat_map(|b| {
                b.qs.map(|q| f64::from(b.d.to_f32()).abs() * f64::from(q).abs())
            })
            .collect(),
        _ => acts.q8_k_blocks()[t * c / 256..(t + 1) * c / 256]
            .iter()
            .flat_map(|b| b.qs.map(|q| f64::from(b.d).abs() * f64::from(q).abs()))
            .collect(),
    }
}

/// nb and M of the derivation above for weight row `w` and activation row `a_abs`.
fn bound(ty: GgmlType, w: &[u8], a_abs: &[f64]) -> (f64, f64) {
    if ty.block_size() == 1 {
        let mut wv = vec![0f32; a_abs.len()];
        strata_kernels_cpu::dequantize(ty, w, &mut wv).unwrap();
        let m = wv
            .iter()
            .zip(a_abs)
            .map(|(w, a)| f64::from(w.abs()) * a)
            .sum::<f64>();
        (wv.len() as f64, m)
    } else {
        let bs = ty.block_size();
        let blocks = w.chunks_exact(ty.type_size());
        let nb = blocks.len() as f64;
        let m = blocks
            .enumerate()
            .map(|(i, b)| block_bound(ty, b) * a_abs[i * bs..(i + 1) * bs].iter().sum::<f64>())
            .sum();
        (nb, m)
    }
}

/// The tolerance of the derivation above for weight row `w` and activation row `a_abs`.
fn tolerance(ty: GgmlType, w: &[u8], a_abs: &[f64]) -> f64 {
    let (nb, m) = bound(ty, w, a_abs);
    2.0 * (nb + 21.0) * U * m
}

/// Odd shapes: a single row, row counts that are not multiples of any tile, many rows;
/// one block, a few blocks, many blocks.
fn shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    let bs = ty.block_size().max(32);
    let mut v = vec![
        (1, bs),
        (3, 2 * bs),
        (7, 3 * bs),
        (17, 5 * bs),
        (1, 18 * bs),
        (65, 7 * bs),
    ];
    if ty.block_size() == 1 {
        v.extend([(5, 33), (2, 1), (9, 577)]);
    }
    v
}

fn levels() -> Vec<Isa> {
    Isa::supported()
        .into_iter()
        .filter(|&i| i != Isa::Reference)
        .collect()
}

#[test]
fn every_fast_path_matches_its_reference_twin() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for ty in GgmlType::WEIGHTS {
        for (rows, cols) in shapes(ty) {
            let w = random_weights(&mut rng, ty, rows, cols);
            // 6 tokens: one whole matmul tile of 4 tokens (`dot::TILE_TOKENS`) and 2 left.
            let n = 6;
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let acts = quantize_acts_isa(Isa::Reference, ty.vec_dot_type(), &x, n, cols).unwrap();
            let mut want = vec![0f32; n * rows];
            matmul_quantized_isa(Isa::Reference, ty, &w, rows, cols, &acts, &mut want).unwrap();
            let row_bytes = w.len() / rows;
            for isa in levels() {
                let mut got = vec![0f32; n * rows];
                matmul_quantized_isa(isa, ty, &w, rows, cols, &acts, &mut got).unwrap();
                for t in 0..n {
                    let a_abs = act_abs(&acts, &x, t);
                    for r in 0..rows {
                        let tol = tolerance(ty, &w[r * row_bytes..(r + 1) * row_bytes], &a_abs);
                        let (g, e) = (got[t * rows + r], want[t * rows + r]);
                        assert!(
                            (f64::from(g) - f64::from(e)).abs() <= tol,
                            "{ty} {isa} {rows}x{cols} token {t} row {r}: got {g}, reference {e}, tolerance {tol:e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matvec_equals_matmul_of_one_token() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for ty in GgmlType::WEIGHTS {
        let (rows, cols) = (37, 4 * ty.block_size().max(32));
        let w = random_weights(&mut rng, ty, rows, cols);
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        for isa in Isa::supported() {
            let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &x, 1, cols).unwrap();
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            matvec_quantized_isa(isa, ty, &w, rows, cols, &acts, &mut a).unwrap();
            matmul_quantized_isa(isa, ty, &w, rows, cols, &acts, &mut b).unwrap();
            // Same kernel on the same data: bit-identical.
            assert_eq!(a, b, "{ty} {isa}");
        }
    }
}

/// Activations spanning many magnitudes, with exact halves and ties to exercise rounding.
fn tricky_activations(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 7 {
            0 => rng.random_range(-1.0..1.0),
            1 => rng.random_range(-1e3..1e3),
            2 => (rng.random_range(-254i32..254) as f32) * 0.5,
            3 => 0.0,
            4 => -0.0,
            5 => rng.random_range(-1e-6..1e-6),
            _ => rng.random_range(-127i32..127) as f32,
        })
        .collect()
}

#[test]
fn simd_activation_quantizers_write_the_reference_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for len in [256usize, 512, 2048] {
        let mut x = tricky_activations(&mut rng, len);
        // One all-zero block and one with a single nonzero.
        x[..32].fill(0.0);
        x[32..64].fill(0.0);
        x[40] = -3.5;
        let mut r0 = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); len / 32];
        let mut r1 = vec![<BlockQ8_1 as bytemuck::Zeroable>::zeroed(); len / 32];
        let mut rk = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); len / 256];
        quantize_q8_0(Isa::Reference, &x, &mut r0);
        quantize_q8_1(Isa::Reference, &x, &mut r1);
        quantize_q8_k(Isa::Reference, &x, &mut rk);
        for isa in levels() {
            let mut f0 = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); len / 32];
            let mut f1 = vec![<BlockQ8_1 as bytemuck::Zeroable>::zeroed(); len / 32];
            let mut fk = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); len / 256];
            quantize_q8_0(isa, &x, &mut f0);
            quantize_q8_1(isa, &x, &mut f1);
            quantize_q8_k(isa, &x, &mut fk);
            assert_eq!(f0, r0, "Q8_0 at {isa}");
            assert_eq!(f1, r1, "Q8_1 at {isa}");
            assert_eq!(fk, rk, "Q8_K at {isa}");
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ty = GgmlType::Q4_0;
    let w = vec![0u8; 18 * 4];
    let x = vec![0f32; 64];
    let mut y = vec![0f32; 2];
    for isa in Isa::supported() {
        let acts = quantize_acts_isa(isa, GgmlType::Q8_0, &x, 1, 64).unwrap();
        assert!(matvec_quantized_isa(isa, ty, &w, 2, 64, &acts, &mut y).is_ok());
        assert!(
            matvec_quantized_isa(isa, ty, &w[..70], 2, 64, &acts, &mut y).is_err(),
            "short weights"
        );
        assert!(
            matvec_quantized_isa(isa, ty, &w, 2, 64, &acts, &mut y[..1]).is_err(),
            "short output"
        );
        assert!(
            matvec_quantized_isa(isa, GgmlType::Q8_0, &w, 2, 64, &acts, &mut y).is_err(),
            "wrong type"
        );
        assert!(
            matvec_quantized_isa(isa, GgmlType::Q8_K, &w, 2, 64, &acts, &mut y).is_err(),
            "activation-only type"
        );
        let k = quantize_acts_isa(isa, GgmlType::Q8_K, &x, 1, 64);
        assert!(k.is_err(), "64 is not whole Q8_K blocks");
        assert!(
            quantize_acts_isa(isa, GgmlType::Q8_0, &x, 2, 64).is_err(),
            "x too short"
        );
    }
}

/// The formats with packed (16-row group) kernels, at the best level this CPU has.
fn packed_formats() -> Vec<(GgmlType, Isa)> {
    let best = *Isa::supported().last().unwrap();
    GgmlType::WEIGHTS
        .into_iter()
        .filter(|&ty| packed::supports(ty, best))
        .map(|ty| (ty, best))
        .collect()
}

#[test]
fn packed_matrices_unpack_to_their_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (ty, isa) in packed_formats() {
        for (rows, cols) in shapes(ty) {
            let w = random_weights(&mut rng, ty, rows, cols);
            let p = PackedMatrix::new(isa, ty, &w, rows, cols).unwrap().unwrap();
            let v = p.view();
            assert_eq!(v.unpack(), w, "{ty} {rows}x{cols}");
            let rb = w.len() / rows;
            let mut row = vec![0u8; rb];
            for r in [0, rows / 2, rows - 1] {
                v.row(r, &mut row);
                assert_eq!(row, w[r * rb..(r + 1) * rb], "{ty} {rows}x{cols} row {r}");
            }
            // In place: the same bytes as the copy.
            let mut inplace = w.clone();
            assert!(packed::pack_in_place(isa, ty, &mut inplace, rows, cols).unwrap());
            assert_eq!(inplace, v.bytes(), "{ty} {rows}x{cols}");
        }
    }
}

/// Packed kernels against the reference twin on the same weights and activations.
///
/// Tolerance: the packed path adds, per token, at most 2 float terms a block (the scale
/// term; Q4_1, Q4_K, Q5_K and Q2_K also the min term), each rounded ≤ 3 times (scale product,
/// conversion, FMA product), into one accumulator (F16: two, then one add): within
/// (2·nb + 4)·u·M of the exact value, M as derived at the top. (K-quants: a block is a
/// super-block, whose sub-block scales are applied in i32, exactly, as the reference does;
/// the d/16 (Q4_K, Q4_0's paired blocks), d/2 (Q5_K), d/4 (Q6_K) and d/32 (Q3_K) factors
/// are powers of two, so they add no rounding.) The
/// reference is within (nb + 21)·u·M, so |packed − reference| ≤ (3·nb + 25)·u·M.
#[test]
fn packed_kernels_match_the_reference_twin() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for (ty, isa) in packed_formats() {
        for (rows, cols) in shapes(ty) {
            let w = random_weights(&mut rng, ty, rows, cols);
            let p = PackedMatrix::new(isa, ty, &w, rows, cols).unwrap().unwrap();
            let p = p.view();
            // 15 tokens: tiles of 8 and 7.
            let n = 15;
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let acts = quantize_acts_isa(Isa::Reference, ty.vec_dot_type(), &x, n, cols).unwrap();
            let mut want = vec![0f32; n * rows];
            matmul_quantized_isa(Isa::Reference, ty, &w, rows, cols, &acts, &mut want).unwrap();
            let mut got = vec![0f32; n * rows];
            matmul_packed(&p, &acts, &mut got).unwrap();
            let row_bytes = w.len() / rows;
            for t in 0..n {
                let a_abs = act_abs(&acts, &x, t);
                for r in 0..rows {
                    let (nb, m) = bound(ty, &w[r * row_bytes..(r + 1) * row_bytes], &a_abs);
                    let tol = (3.0 * nb + 25.0) * U * m;
                    let (g, e) = (got[t * rows + r], want[t * rows + r]);
                    assert!(
                        (f64::from(g) - f64::from(e)).abs() <= tol,
                        "{ty} packed {rows}x{cols} token {t} row {r}: got {g}, reference {e}, tolerance {tol:e}"
                    );
                }
                // A token alone (decode) gives the same bits as in the batch.
                let one = quantize_acts_isa(
                    Isa::Reference,
                    ty.vec_dot_type(),
                    &x[t * cols..(t + 1) * cols],
                    1,
                    cols,
                )
                .unwrap();
                let mut y = vec![0f32; rows];
                matvec_packed(&p, &one, &mut y).unwrap();
                assert_eq!(
                    y,
                    got[t * rows..(t + 1) * rows],
                    "{ty} {rows}x{cols} token {t}"
                );
            }
        }
    }
}

/// A batch of 1 to 8 tokens is one tile (a group's weights read once): each size's kernel
/// gives every token the bits its matvec gives it.
#[test]
fn every_tile_size_gives_each_token_its_matvec_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    for (ty, isa) in packed_formats() {
        // Whole groups of 16 rows (the packed kernels) and a row-major tail row.
        let (rows, cols) = (65, 7 * ty.block_size().max(32));
        let w = random_weights(&mut rng, ty, rows, cols);
        let p = PackedMatrix::new(isa, ty, &w, rows, cols).unwrap().unwrap();
        let p = p.view();
        for n in 1..=8 {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let acts = quantize_acts_isa(Isa::Reference, ty.vec_dot_type(), &x, n, cols).unwrap();
            let mut got = vec![0f32; n * rows];
            matmul_packed(&p, &acts, &mut got).unwrap();
            for t in 0..n {
                let xt = &x[t * cols..(t + 1) * cols];
                let one =
                    quantize_acts_isa(Isa::Reference, ty.vec_dot_type(), xt, 1, cols).unwrap();
                let mut y = vec![0f32; rows];
                matvec_packed(&p, &one, &mut y).unwrap();
                assert_eq!(
                    y,
                    got[t * rows..(t + 1) * rows],
                    "{ty} tile of {n}, token {t}"
                );
            }
        }
    }
}

/// A long matrix read by one thread takes Q4_0's stream kernel (front to back, sparse
/// requests; `packed::run`): the same bits as two threads give it with the decode kernel.
#[test]
fn one_thread_stream_kernel_gives_the_decode_kernels_bits() {
    let Some(&(ty, isa)) = packed_formats().iter().find(|(t, _)| *t == GgmlType::Q4_0) else {
        eprintln!("skipped: this CPU has no packed Q4_0 kernels");
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    // 811 KB of whole groups, over the stream kernel's 768 KiB, and a row-major tail row;
    // an odd number of blocks a row (a lone last block).
    let (rows, cols) = (353, 4064);
    let w = random_weights(&mut rng, ty, rows, cols);
    let p = PackedMatrix::new(isa, ty, &w, rows, cols).unwrap().unwrap();
    let p = p.view();
    let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-2.0..2.0)).collect();
    let acts = quantize_acts_isa(Isa::Reference, ty.vec_dot_type(), &x, 1, cols).unwrap();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut y = vec![0f32; rows];
        pool.install(|| matvec_packed(&p, &acts, &mut y)).unwrap();
        y
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn packed_shapes_are_checked() {
    let (ty, isa) = match packed_formats().first() {
        Some(&f) => f,
        None => {
            eprintln!("skipped: this CPU has no packed kernels");
            return;
        }
    };
    let cols = 64;
    let w = vec![0u8; 3 * cols / ty.block_size() * ty.type_size()];
    assert!(PackedMatrix::new(isa, ty, &w[1..], 3, cols).is_err());
    assert!(PackedMatrix::new(isa, GgmlType::F32, &[0u8; 128], 1, 32)
        .unwrap()
        .is_none());
    let p = PackedMatrix::new(isa, ty, &w, 3, cols).unwrap().unwrap();
    let p = p.view();
    assert!(Packed::new(ty, 3, cols, &w[1..]).is_err());
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &[0.5; 64], 1, cols).unwrap();
    assert!(matvec_packed(&p, &acts, &mut [0f32; 2]).is_err());
    let other = if ty.vec_dot_type() == GgmlType::F32 {
        GgmlType::Q8_0
    } else {
        GgmlType::F32
    };
    let wrong = quantize_acts_isa(isa, other, &[0.5; 64], 1, cols).unwrap();
    assert!(matvec_packed(&p, &wrong, &mut [0f32; 3]).is_err());
    let mut y = [0f32; 3];
    matvec_packed(&p, &acts, &mut y).unwrap();
    assert_eq!(y, [0.0; 3]);
}
