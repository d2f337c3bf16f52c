//! matvec at every ISA level this CPU runs against golden y = W·x (golden/gen/matvec.py:
//! gguf's dequantized W times x in f64) and y_q (the ggml way: x quantized to the weight's
//! activation format first, then the block formula in f64).
//!
//! ## Tolerances
//!
//! *Against y_q.* Our kernels compute the same per-block integer dots exactly and differ
//! from y_q only by f32 rounding: at most (nb + 21)·u·M, u = 2⁻²⁴, nb blocks per row, M the
//! sum of the magnitudes of the float terms a kernel forms (derivation in
//! kernels-cpu/tests/dot_twins.rs; M ≤ Σ_b S_b·Σ_{i∈b}|a_i| with S_b from the block's scales,
//! see `block_bound`). Float weights: (cols + 21)·u·Σ|w_i·x_i|.
//!
//! *Against y.* y − y_q = Σ_i w_i·(x_i − a_i) (a_i the dequantized quantized activation),
//! plus, for Q4_1/Q5_1, Σ_b m_b·(s_b − d_b·Σq_b) because y_q takes the min through the
//! block's f16 `s`. Per element, Q8_0/Q8_1 round x·(1/d) to the nearest integer (error
//! ≤ d/2 in f32 d, plus f32 rounding of the product: ≤ 127·u·d) and dequantize with the f16
//! d16 (|d − d16| ≤ 2⁻¹¹·d, times |q| ≤ 127): |x_i − a_i| ≤ (0.5 + 127·2⁻¹¹ + 127·u)·d
//! ≤ 0.563·d. Q8_K keeps d in f32: |x_i − a_i| ≤ (0.5 + 2·127·u)·|d| ≤ 0.501·|d|. For s:
//! |s − d16·Σq| ≤ 2⁻¹¹·|d·Σq| + 2⁻¹¹·d·|Σq| = 2⁻¹⁰·d·|Σq|. So
//! |ours − y| ≤ tol_q + Σ_i |w_i|·e_b + Σ_b |m_b|·2⁻¹⁰·d_b·|Σq_b|.
//!
//! ## The packed path
//!
//! Formats with packed kernels at this CPU's best level (`packed::supports`) also run the
//! golden cases through `matvec_packed` and `matmul_packed`. The golden matrices have fewer
//! than 16 rows (one packed group), so the packed matrix is the golden rows repeated to
//! 16 + rows rows: one group on the packed kernel, then the `rows` tail rows on the row
//! kernel (row i checks against golden row i mod rows). matmul runs the golden token 13
//! times (tiles of 8, 4 and 1) and must give matvec's bits for every copy.
//!
//! *Tolerance of the group rows.* Per token, one accumulator takes k FMA terms a block
//! (k = 1; Q4_1, Q4_K, Q5_K, Q2_K: 2, the scale term and the min term), blocks in order,
//! starting at 0. A legacy block's integer dot is exact and converts to f32 exactly
//! (|Σ| ≤ 32·128·127 < 2²⁴), the scale product d_w·d_a rounds once, the min product m·s
//! is exact inside its FMA, and each FMA rounds once. Recursive summation of N = k·nb terms
//! with one rounding each is within γ_{N+1}·Σ|terms| ≤ (N + 2)·u·M of y_q (γ_n =
//! n·u/(1 − n·u) ≤ (n + 1)·u for n ≤ 4000; M as above bounds Σ|terms|, the doubled
//! offset/min of S_b covering the f16 s). So tol_q = (k·nb + 2)·u·M. K-quants (a block is a
//! super-block): the sub-block scales are applied exactly in i32, but the super-block's sum
//! can pass 2²⁴, so its conversion rounds too, and the min term's product of the f32 sums
//! rounds once: at most 2 more roundings of a term of size ≤ its share of M, so
//! tol_q = (k·nb + 4)·u·M. F16: two FMA chains (even and odd k) of ⌈cols/2⌉ exact products
//! each, then one add: within γ_{⌈cols/2⌉+1}·Σ|w_i·x_i|, so tol = (⌈cols/2⌉ + 2)·u·Σ|w_i·x_i|.
//! Against y, the same quantization error as the row kernels is added (same quantized x).

use strata_engine::model::Matrix;
use strata_kernels_cpu::act::quantize_acts_isa;
use strata_kernels_cpu::isa::Isa;
use strata_kernels_cpu::matvec::matvec_isa;
use strata_kernels_cpu::packed::{self, matmul_packed, matvec_packed, PackedMatrix};
use strata_kernels_cpu::{dequantize, GgmlType, QuantizedActs};
use strata_tests::golden::{expert_case, matvec_cases, MatvecCase};

#[path = "../../kernels-cpu/tests/dot_support/mod.rs"]
mod dot_support;
use dot_support::{block_bound, f16_at};

const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Per activation block: (d as dequantized, |Σq|), and the per-element quantization error
/// bound e_b of the derivation.
fn act_blocks(acts: &QuantizedActs) -> Vec<(f64, f64, f64)> {
    let sum = |q: &[i8]| q.iter().map(|&v| f64::from(v)).sum::<f64>().abs();
    match acts.ty() {
        Some(GgmlType::Q8_0) => acts
            .q8_0_blocks()
            .iter()
            .map(|b| {
                (
                    f64::from(b.d.to_f32()),
                    sum(&b.qs),
                    0.563 * f64::from(b.d.to_f32()),
                )
            })
            .collect(),
        Some(GgmlType::Q8_1) => acts
            .q8_1_blocks()
            .iter()
            .map(|b| {
                (
                    f64::from(b.d.to_f32()),
                    sum(&b.qs),
                    0.563 * f64::from(b.d.to_f32()),
                )
            })
            .collect(),
        Some(GgmlType::Q8_K) => acts
            .q8_k_blocks()
            .iter()
            .map(|b| (f64::from(b.d), sum(&b.qs), 0.501 * f64::from(b.d).abs()))
            .collect(),
        _ => Vec::new(),
    }
}

/// |a_i|, the dequantized quantized activations' magnitudes.
fn act_abs(acts: &QuantizedActs) -> Vec<f64> {
    let mag = |d: f32, q: &[i8]| {
        q.iter()
            .map(move |&q| f64::from(d).abs() * f64::from(q).abs())
            .collect::<Vec<_>>()
    };
    match acts.ty() {
        Some(GgmlType::Q8_0) => acts
            .q8_0_blocks()
            .iter()
            .flat_map(|b| mag(b.d.to_f32(), &b.qs))
            .collect(),
        Some(GgmlType::Q8_1) => acts
            .q8_1_blocks()
            .iter()
            .flat_map(|b| mag(b.d.to_f32(), &b.qs))
            .collect(),
        Some(GgmlType::Q8_K) => acts
            .q8_k_blocks()
            .iter()
            .flat_map(|b| mag(b.d, &b.qs))
            .collect(),
        _ => Vec::new(),
    }
}

/// The quantized activations' bytes, as ggml lays them out.
fn act_bytes(acts: &QuantizedActs) -> Vec<u8> {
    match acts.ty() {
        Some(GgmlType::Q8_0) => bytemuck_bytes(acts.q8_0_blocks()),
        Some(GgmlType::Q8_1) => bytemuck_bytes(acts.q8_1_blocks()),
        Some(GgmlType::Q8_K) => bytemuck_bytes(acts.q8_k_blocks()),
        _ => Vec::new(),
    }
}

fn bytemuck_bytes<T: Copy>(v: &[T]) -> Vec<u8> {
    // SAFETY: the block types are `#[repr(C)]` plain data without padding (their sizes are
    // asserted against ggml's); viewing them as bytes reads initialized memory only.
    unsafe {
        std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)).to_vec()
    }
}

/// The kernel a row ran on: their float sums round differently (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// A row kernel (`dot`): matvec at every level, and the packed matrices' tail rows.
    Rows,
    /// A packed group's rows.
    Packed,
}

/// (tol_q, tol_y) for row `r` of `case` computed on `path`.
fn tolerances(case: &MatvecCase, acts: &QuantizedActs, r: usize, path: Path) -> (f64, f64) {
    let ty = case.ty;
    let row_bytes = case.w.len() / case.rows;
    let w = &case.w[r * row_bytes..(r + 1) * row_bytes];
    if ty.block_size() == 1 {
        let roundings = match path {
            Path::Rows => case.cols as f64 + 21.0,
            Path::Packed => case.cols.div_ceil(2) as f64 + 2.0,
        };
        let tol = roundings * U * case.abs_dot[r];
        return (tol, tol);
    }
    let bs = ty.block_size();
    let ab = act_blocks(acts);
    let ab_size = acts.ty().expect("quantized").block_size();
    let a_abs = act_abs(acts);
    let mut wf = vec![0f32; case.cols];
    dequantize(ty, w, &mut wf).expect("golden weights dequantize");
    let (mut m, mut act_err) = (0.0f64, 0.0f64);
    for (b, blk) in w.chunks_exact(ty.type_size()).enumerate() {
        let s_b = block_bound(ty, blk);
        for i in b * bs..(b + 1) * bs {
            let e = ab[i / ab_size].2;
            m += s_b * a_abs[i];
            act_err += f64::from(wf[i]).abs() * e;
        }
        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            let (d, qsum, _) = ab[b];
            act_err += f16_at(blk, 2).abs() * (2.0f64).powi(-10) * d.abs() * qsum;
        }
    }
    let nb = (case.cols / bs) as f64;
    let roundings = match (path, ty) {
        (Path::Rows, _) => nb + 21.0,
        (Path::Packed, GgmlType::Q4_1) => 2.0 * nb + 2.0,
        (Path::Packed, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q2_K) => 2.0 * nb + 4.0,
        (Path::Packed, GgmlType::Q3_K | GgmlType::Q6_K) => nb + 4.0,
        (Path::Packed, _) => nb + 2.0,
    };
    let tol_q = roundings * U * m;
    (tol_q, tol_q + act_err)
}

/// Checks `y` (row `r` of golden row `r % case.rows`, computed on `path(r)`) against the
/// golden y_q and y; `what` names the run.
fn check_rows(
    case: &MatvecCase,
    acts: &QuantizedActs,
    y: &[f32],
    path: impl Fn(usize) -> Path,
    what: &str,
) {
    let (ty, rows, cols) = (case.ty, case.rows, case.cols);
    for (r, &yr) in y.iter().enumerate() {
        let g = r % rows;
        let (tol_q, tol_y) = tolerances(case, acts, g, path(r));
        let got = f64::from(yr);
        assert!(
            (got - case.y_q[g]).abs() <= tol_q,
            "{ty} {rows}x{cols} {what} row {r}: {got} vs y_q {} (tolerance {tol_q:e})",
            case.y_q[g]
        );
        assert!(
            (got - case.y[g]).abs() <= tol_y,
            "{ty} {rows}x{cols} {what} row {r}: {got} vs y {} (tolerance {tol_y:e})",
            case.y[g]
        );
    }
}

/// The golden case through the packed kernels at `isa` (see the module docs).
fn check_packed(case: &MatvecCase, isa: Isa) {
    let (ty, cols) = (case.ty, case.cols);
    let row_bytes = case.w.len() / case.rows;
    let rows = packed::GROUP_ROWS + case.rows;
    let w: Vec<u8> = (0..rows)
        .flat_map(|r| {
            let g = r % case.rows;
            case.w[g * row_bytes..(g + 1) * row_bytes].iter().copied()
        })
        .collect();
    let m = PackedMatrix::new(isa, ty, &w, rows, cols)
        .unwrap()
        .expect("supported format packs");
    let m = m.view();
    let path = |r: usize| {
        if r < packed::GROUP_ROWS {
            Path::Packed
        } else {
            Path::Rows
        }
    };
    let acts = quantize_acts_isa(isa, case.act, &case.x, 1, cols).unwrap();
    let mut y = vec![0f32; rows];
    matvec_packed(&m, &acts, &mut y).unwrap();
    check_rows(case, &acts, &y, path, &format!("packed matvec {isa}"));

    let n = 13;
    let x: Vec<f32> = case.x.iter().copied().cycle().take(n * cols).collect();
    let batch = quantize_acts_isa(isa, case.act, &x, n, cols).unwrap();
    let mut yn = vec![0f32; n * rows];
    matmul_packed(&m, &batch, &mut yn).unwrap();
    for (t, yt) in yn.chunks_exact(rows).enumerate() {
        assert_eq!(
            yt, y,
            "{ty} {}x{cols} packed matmul token {t} vs matvec",
            case.rows
        );
    }
}

fn check_format(ty: GgmlType) {
    let cases = matvec_cases(ty).unwrap_or_else(|e| panic!("golden matvec data for {ty}: {e}"));
    for case in &cases {
        let (rows, cols) = (case.rows, case.cols);
        for isa in Isa::supported() {
            let acts = quantize_acts_isa(isa, case.act, &case.x, 1, cols).unwrap();
            if case.act != GgmlType::F32 {
                assert!(
                    act_bytes(&acts) == case.xq,
                    "{ty} {rows}x{cols}: {isa} quantized x differs from golden xq"
                );
            }
            let mut y = vec![0f32; rows];
            matvec_isa(isa, ty, &case.w, rows, cols, &case.x, &mut y).unwrap();
            check_rows(case, &acts, &y, |_| Path::Rows, isa.name());
        }
    }
    let best = Isa::best();
    if packed::supports(ty, best) {
        for case in &cases {
            check_packed(case, best);
        }
    } else {
        eprintln!("{ty}: no packed kernels at {best} on this CPU; packed cases skipped");
    }
}

/// A 3-D expert stack (golden/data/moe/experts/) read as the engine reads it: one matrix of
/// every expert's rows, an expert being `Matrix::part`; its product with each token's
/// chosen experts at every level, and through the packed kernels with the stack packed
/// expert by expert (as a device copy is), against the golden y_q and y.
fn check_experts(ty: GgmlType) {
    let mut c = expert_case(ty).unwrap_or_else(|e| panic!("golden expert data for {ty}: {e}"));
    for (_, _, _, case) in &mut c.chosen {
        // ggml rounds an F16 weight's activations to f16 (y_q); our F16 kernels take them
        // in f32, so their ggml-way result is the exact product y.
        if case.act != ty.vec_dot_type() {
            case.act = ty.vec_dot_type();
            case.y_q = case.y.clone();
            case.xq = bytemuck_bytes(&case.x);
        }
    }
    let (_, _, _, first) = &c.chosen[0];
    let (rows, cols) = (first.rows, first.cols);
    let stack = Matrix {
        ty,
        rows: c.experts * rows,
        cols,
        data: &c.stack,
        packed: false,
    };
    for (t, j, e, case) in &c.chosen {
        let part = stack.part(*e, c.experts);
        assert_eq!(part.data, &case.w[..], "{ty}: expert {e} is its own bytes");
        for isa in Isa::supported() {
            let acts = quantize_acts_isa(isa, case.act, &case.x, 1, cols).unwrap();
            if case.act != GgmlType::F32 {
                assert!(act_bytes(&acts) == case.xq, "{ty} {isa}: quantized x[{t}]");
            }
            let mut y = vec![0f32; rows];
            matvec_isa(isa, ty, part.data, rows, cols, &case.x, &mut y).unwrap();
            check_rows(
                case,
                &acts,
                &y,
                |_| Path::Rows,
                &format!("{isa} token {t} choice {j}"),
            );
        }
    }
    let best = Isa::best();
    if !packed::supports(ty, best) {
        eprintln!("{ty}: no packed kernels at {best} on this CPU; packed experts skipped");
        return;
    }
    let mut packed_stack = c.stack.clone();
    for part in packed_stack.chunks_exact_mut(c.stack.len() / c.experts) {
        assert!(packed::pack_in_place(best, ty, part, rows, cols).unwrap());
    }
    let stack = Matrix {
        data: &packed_stack,
        packed: true,
        ..stack
    };
    for (t, j, e, case) in &c.chosen {
        let part = stack.part(*e, c.experts);
        let m = packed::Packed::new(ty, rows, cols, part.data).unwrap();
        let acts = quantize_acts_isa(best, case.act, &case.x, 1, cols).unwrap();
        let mut y = vec![0f32; rows];
        matvec_packed(&m, &acts, &mut y).unwrap();
        check_rows(
            case,
            &acts,
            &y,
            |_| Path::Packed,
            &format!("packed token {t} choice {j}"),
        );
    }
}

macro_rules! golden_tests {
    ($($name:ident: $ty:ident),* $(,)?) => {
        $(#[test] fn $name() { check_format(GgmlType::$ty); })*
    };
}

macro_rules! expert_tests {
    ($($name:ident: $ty:ident),* $(,)?) => {
        $(#[test] fn $name() { check_experts(GgmlType::$ty); })*
    };
}

expert_tests!(
    f16_experts_match_golden: F16, q4_0_experts_match_golden: Q4_0,
    q4_1_experts_match_golden: Q4_1, q5_0_experts_match_golden: Q5_0,
    q5_1_experts_match_golden: Q5_1, q8_0_experts_match_golden: Q8_0,
    q2_k_experts_match_golden: Q2_K, q3_k_experts_match_golden: Q3_K,
    q4_k_experts_match_golden: Q4_K, q5_k_experts_match_golden: Q5_K,
    q6_k_experts_match_golden: Q6_K,
);

golden_tests!(
    f32_matches_golden: F32, f16_matches_golden: F16, bf16_matches_golden: BF16,
    q4_0_matches_golden: Q4_0, q4_1_matches_golden: Q4_1, q5_0_matches_golden: Q5_0,
    q5_1_matches_golden: Q5_1, q8_0_matches_golden: Q8_0, q2_k_matches_golden: Q2_K,
    q3_k_matches_golden: Q3_K, q4_k_matches_golden: Q4_K, q5_k_matches_golden: Q5_K,
    q6_k_matches_golden: Q6_K,
);
