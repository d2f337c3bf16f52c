//! The CUDA kernels' per-format arithmetic (kernels-cuda/kernels/formats.cuh: dequant_<fmt>
//! and the dp4a dot_<fmt> of the matvec kernels) and the quantized matvec kernels' own steps
//! (matvec_lane.cuh: each thread's staging of x, each lane's loop over its units of each
//! row) compiled as host C++ and checked against golden data, so that a layout, indexing or
//! bit-twiddling mistake shows up on machines with no GPU. The device primitives are swapped
//! for exact host equivalents (host-check/host_shim.hpp); what this cannot check (launch
//! shapes, shared memory as the hardware does it, warp shuffles, the driver's JIT) is left
//! to cuda_kernels.rs on a GPU. Skipped where no C++ compiler is installed.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_tests::cuda_check::{
    build_host_checker, offsets16, random_q8_1_case, run_host_checker, same_bits, U,
};
use strata_tests::golden;

#[test]
fn format_arithmetic_matches_golden_on_the_host() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_host_check");
    let Some(exe) = build_host_checker(&dir, "formats_check", &[]) else {
        return;
    };

    for ty in GgmlType::WEIGHTS {
        // dequant_<fmt>: bit for bit with golden (as the CPU reference is).
        let case = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        let n = case.values.len();
        let (deq, _) = run_host_checker(&exe, &dir, ty, 1, n, &case.blocks, &[]);
        for (i, (&got, &want)) in deq.iter().zip(&case.values).enumerate() {
            assert!(
                same_bits(got, want),
                "{ty} dequant element {i} (block {}): {got:e} vs golden {want:e}",
                case.label(i / ty.block_size()),
            );
        }
        assert_eq!(deq.len(), n);

        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            continue;
        }
        // The matvec kernel's steps over a row (its lanes' dot_<fmt> terms), on q8_1
        // activations.
        for case in golden::matvec_cases(ty).unwrap_or_else(|e| panic!("{e}")) {
            let (rows, cols) = (case.rows, case.cols);
            let mut xq = vec![0u8; cols / 32 * 36];
            quantize(GgmlType::Q8_1, &case.x, &mut xq).unwrap();
            let mut xhat = vec![0.0f32; cols];
            dequantize(GgmlType::Q8_1, &xq, &mut xhat).unwrap();
            let (wf, y) = run_host_checker(&exe, &dir, ty, rows, cols, &case.w, &xq);
            // Legacy formats: golden y_q (same activation blocks, Q4_1/Q5_1 with the f16
            // s). K-quants take Σxq exactly: the f64 product of dequantized W and x̂.
            let want = |r: usize, exact: f64| {
                if ty.is_k_quant() {
                    exact
                } else {
                    case.y_q[r]
                }
            };
            check_rows(ty, rows, cols, &case.w, &wf, &xhat, &y, want);
        }

        // Synthetic matrices, against the exact product (not Q4_1/Q5_1: their kernels take the
        // min times q8_1's f16-rounded s, as ggml pairs them, which the golden y_q covers):
        // rows wide enough that lanes take two or three units (the kernel's unrolled loop and
        // its remainder; 3 rows: a warp of two rows with one past the end), and for 2-byte
        // aligned blocks an odd number of them, so that the matrix ends 2 bytes past a 4-byte
        // boundary: the last block's reads must stop at its end (AddressSanitizer, where the
        // checker was built with it, fails the run on a read past the buffer).
        if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            let wide = if ty.block_size() == 32 { 71 } else { 9 } * ty.block_size();
            let mut shapes = vec![(3, wide)];
            if ty.type_size() % 4 == 2 {
                shapes.push((3, 3 * ty.block_size()));
            }
            let mut r = ChaCha8Rng::seed_from_u64(ty.id() as u64);
            for (rows, cols) in shapes {
                let (w, xq) = random_q8_1_case(&mut r, ty, rows, cols);
                let mut xhat = vec![0.0f32; cols];
                dequantize(GgmlType::Q8_1, &xq, &mut xhat).unwrap();
                let (wf, y) = run_host_checker(&exe, &dir, ty, rows, cols, &w, &xq);
                check_rows(ty, rows, cols, &w, &wf, &xhat, &y, |_, exact| exact);
            }
        }
    }
}

/// Each row's host dot product against `want(row, exact f64 product of W and x̂)`.
#[allow(clippy::too_many_arguments)]
fn check_rows(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: &[u8],
    wf: &[f32],
    xhat: &[f32],
    y: &[f32],
    want: impl Fn(usize, f64) -> f64,
) {
    for r in 0..rows {
        let wr = &wf[r * cols..(r + 1) * cols];
        let exact = wr
            .iter()
            .zip(xhat)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>();
        let want = want(r, exact);
        // nsub terms summed in order, each ≤ 4 roundings over a scale part and an offset
        // part bounded by Σ(|w| + |b|)|x̂| and |b|·Σ|x̂| (b: the offset of each group of 16,
        // w = a·q + b): (nsub + 4)·u·Σ(|w| + 2|b|)|x̂|.
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let mut mag = 0.0f64;
        for blk in 0..cols / ty.block_size() {
            let bytes = &w[r * row_bytes + blk * ty.type_size()..][..ty.type_size()];
            let b = offsets16(ty, bytes);
            for e in 0..ty.block_size() {
                let i = blk * ty.block_size() + e;
                mag += (f64::from(wr[i]).abs() + 2.0 * b[e / 16].abs()) * f64::from(xhat[i]).abs();
            }
        }
        let tol = ((cols / 32) as f64 + 4.0) * U * mag + U * want.abs() + f64::MIN_POSITIVE;
        let diff = (f64::from(y[r]) - want).abs();
        assert!(
            diff <= tol,
            "{ty} {rows}x{cols} row {r}: host dot {} vs {want} (|diff| {diff:e} > {tol:e})",
            y[r]
        );
    }
}
