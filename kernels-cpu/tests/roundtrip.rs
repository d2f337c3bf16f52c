//! Round-trip error of every format on ggml's synthetic data, against published limits.
//!
//! Data and metrics are those of llama.cpp's `tests/test-quantize-fns.cpp` (also used by
//! candle's `candle-core/tests/quantized_tests.rs`):
//! - data: `x[i] = 0.1 + 2·cos(i + offset)` for i < 4096 (32·128), offset 0 for the
//!   weights and 1 for the activations of the dot-product test;
//! - "total quantization error": sqrt(Σ(x − dequantize(quantize(x)))²) / n (note: divided
//!   by n, not √n); ggml's limits `MAX_QUANTIZATION_TOTAL_ERROR` = 0.002, `_2BITS` = 0.0075
//!   (Q2_K), `_3BITS` = 0.0040 (Q3_K);
//! - "dot product error": |dot(quantized weights, activations quantized to the paired
//!   format) − dot(x, y)| / n; ggml's limit `MAX_DOT_PRODUCT_ERROR` = 0.02, and candle's
//!   `ggml_reference_matmul_error` table lists the error ggml's reference code reaches per
//!   format (Q4_0 0.001143, Q4_K 0.002425, Q6_K 0.000952, Q8_0 0.000092, …), which candle
//!   then uses as its limits. We hold our code to both.
//!
//! The per-format numbers in candle's table are dot-product errors, not round-trip errors:
//! the round-trip limits are ggml's three constants above.

use strata_kernels_cpu::{dequantize, quantize, GgmlType};

const TEST_SIZE: usize = 32 * 128;

/// ggml's `MAX_QUANTIZATION_TOTAL_ERROR*` for `ty` (test-quantize-fns.cpp).
fn total_error_limit(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q2_K => 0.0075,
        GgmlType::Q3_K => 0.0040,
        _ => 0.002,
    }
}

/// ggml's `MAX_DOT_PRODUCT_ERROR`.
const MAX_DOT_PRODUCT_ERROR: f64 = 0.02;

/// candle's `ggml_reference_matmul_error`: the dot-product error ggml's own code reaches on
/// this data (Q3_K is 0.016148 in ggml's output, rounded up to 0.017 by candle; Q8_K is
/// candle's own measurement, "not from the ggml repo").
fn reference_dot_error(ty: GgmlType) -> f64 {
    use GgmlType::*;
    match ty {
        F32 => 0.0,
        F16 => 0.000010,
        BF16 => 0.000200,
        Q2_K => 0.004086,
        Q3_K => 0.017,
        Q4_K => 0.002425,
        Q5_K => 0.000740,
        Q6_K => 0.000952,
        Q4_0 => 0.001143,
        Q4_1 => 0.008,
        Q5_0 => 0.001353,
        Q5_1 => 0.00149,
        Q8_0 => 0.000092,
        Q8_1 => 0.000092,
        Q8_K => 0.00065,
    }
}

/// ggml's `generate_data`: the index and offset add in f32, cos and the rest in double,
/// stored as f32.
fn ggml_data(offset: f32) -> Vec<f32> {
    (0..TEST_SIZE)
        .map(|i| (0.1 + 2.0 * f64::from(i as f32 + offset).cos()) as f32)
        .collect()
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
    quantize(ty, x, &mut bytes).unwrap();
    let mut y = vec![0.0; x.len()];
    dequantize(ty, &bytes, &mut y).unwrap();
    y
}

fn total_error(x: &[f32], y: &[f32]) -> f64 {
    let sum: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    sum.sqrt() / x.len() as f64
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

#[test]
fn total_quantization_error_within_ggml_limits() {
    let x = ggml_data(0.0);
    let mut report = String::new();
    let mut failures = Vec::new();
    for ty in GgmlType::ALL {
        let err = total_error(&x, &round_trip(ty, &x));
        let limit = total_error_limit(ty);
        report += &format!("{ty:5} total error {err:.6} (limit {limit})\n");
        if err.is_nan() || err > limit {
            failures.push(ty);
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "over the limit: {failures:?}\n{report}"
    );
}

/// The dot-product error of `ty` weights `w` against activations `a` quantized to the
/// paired format.
fn dot_error(ty: GgmlType, w: &[f32], a: &[f32]) -> f64 {
    let exact = dot(w, a);
    let wq = round_trip(ty, w);
    let aq = round_trip(ty.vec_dot_type(), a);
    (dot(&wq, &aq) - exact).abs() / w.len() as f64
}

#[test]
fn dot_product_error_within_ggml_and_candle_limits() {
    let weights = ggml_data(0.0);
    let activations = ggml_data(1.0);
    // candle's second case, "more likely to trigger the overflow reported in #1526":
    // both operands i/n, with its limit twice the table entry.
    let ramp: Vec<f32> = (0..TEST_SIZE)
        .map(|i| i as f32 / TEST_SIZE as f32)
        .collect();
    let mut report = String::new();
    let mut failures = Vec::new();
    for ty in GgmlType::ALL {
        let reference = reference_dot_error(ty);
        for (case, w, a, limit) in [
            ("cos", &weights, &activations, reference),
            ("ramp", &ramp, &ramp, 2.0 * reference),
        ] {
            let err = dot_error(ty, w, a);
            report += &format!(
                "{ty:5} x {:5} {case:4} dot error {err:.6} (limits: candle {limit}, ggml {MAX_DOT_PRODUCT_ERROR})\n",
                ty.vec_dot_type().name()
            );
            if err.is_nan() || err > limit || err > MAX_DOT_PRODUCT_ERROR {
                failures.push((ty, case));
            }
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "over the limit: {failures:?}\n{report}"
    );
}
