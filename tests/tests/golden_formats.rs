//! Our reference dequantize/quantize against golden data made by PyPI `gguf` (see
//! golden/README.md): dequantize of every weight format equals gguf's f32 output bit for
//! bit, and quantize of BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 equals gguf's bytes.
//!
//! No tolerance anywhere: both sides do the same f32 operations in the same order (gguf
//! computes with numpy in f32, ours in Rust, which never fuses a multiply and an add), so
//! any difference is a bug in one of them. Tie rules are exercised by crafted blocks whose
//! labels the failure messages show (golden/README.md lists them).

use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_tests::golden::{self, DequantCase, QuantCase};

/// At most this many mismatches are spelled out in a failure message.
const SHOWN: usize = 8;

fn check_dequantize(ty: GgmlType) {
    let case: DequantCase = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
    let mut got = vec![0.0f32; case.values.len()];
    dequantize(ty, &case.blocks, &mut got).unwrap_or_else(|e| panic!("dequantize {ty}: {e}"));
    let bs = ty.block_size();
    let ts = ty.type_size();
    let mut bad = Vec::new();
    for (i, (&want, &have)) in case.values.iter().zip(&got).enumerate() {
        // Bits, not values: -0.0 vs 0.0 and NaN payloads count (the data holds only
        // canonical quiet NaNs, see golden/gen/formats.py).
        if want.to_bits() != have.to_bits() {
            let b = i / bs;
            bad.push(format!(
                "block {b} ({}) bytes {:02x?}: element {}: expected {want:e} ({:#010x}), got {have:e} ({:#010x})",
                case.label(b),
                &case.blocks[b * ts..(b + 1) * ts].iter().take(8).collect::<Vec<_>>(),
                i % bs,
                want.to_bits(),
                have.to_bits()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{ty} dequantize differs from gguf in {} of {} values:\n{}",
        bad.len(),
        got.len(),
        bad.iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn check_quantize(ty: GgmlType) {
    let case: QuantCase = golden::quant_case(ty).unwrap_or_else(|e| panic!("{e}"));
    let mut got = vec![0u8; case.blocks.len()];
    quantize(ty, &case.input, &mut got).unwrap_or_else(|e| panic!("quantize {ty}: {e}"));
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let mut bad = Vec::new();
    for (b, (want, have)) in case
        .blocks
        .chunks_exact(ts)
        .zip(got.chunks_exact(ts))
        .enumerate()
    {
        if want != have {
            let input = &case.input[b * bs..(b + 1) * bs];
            bad.push(format!(
                "block {b} ({}): input {:?}\n  expected {want:02x?}\n  got      {have:02x?}",
                case.label(b),
                &input[..input.len().min(8)],
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{ty} quantize differs from gguf in {} of {} blocks:\n{}",
        bad.len(),
        case.blocks.len() / ts,
        bad.iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

macro_rules! golden_tests {
    ($($name:ident: $check:ident($ty:ident);)*) => {
        $(
            #[test]
            fn $name() {
                $check(GgmlType::$ty);
            }
        )*
    };
}

golden_tests! {
    dequantize_f32: check_dequantize(F32);
    dequantize_f16: check_dequantize(F16);
    dequantize_bf16: check_dequantize(BF16);
    dequantize_q4_0: check_dequantize(Q4_0);
    dequantize_q4_1: check_dequantize(Q4_1);
    dequantize_q5_0: check_dequantize(Q5_0);
    dequantize_q5_1: check_dequantize(Q5_1);
    dequantize_q8_0: check_dequantize(Q8_0);
    dequantize_q2_k: check_dequantize(Q2_K);
    dequantize_q3_k: check_dequantize(Q3_K);
    dequantize_q4_k: check_dequantize(Q4_K);
    dequantize_q5_k: check_dequantize(Q5_K);
    dequantize_q6_k: check_dequantize(Q6_K);
    quantize_bf16: check_quantize(BF16);
    quantize_q4_0: check_quantize(Q4_0);
    quantize_q4_1: check_quantize(Q4_1);
    quantize_q5_0: check_quantize(Q5_0);
    quantize_q5_1: check_quantize(Q5_1);
    quantize_q8_0: check_quantize(Q8_0);
}

/// Every weight format has a dequantize case and the list above misses none; the crafted
/// quantize cases are present (a regenerated data set that lost them would weaken the
/// tie checks silently).
#[test]
fn golden_data_covers_every_format_and_tie_case() {
    for ty in GgmlType::WEIGHTS {
        let case = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            case.values.len() >= 256,
            "{ty}: only {} golden values",
            case.values.len()
        );
    }
    for ty in golden::QUANT_TYPES {
        let case = golden::quant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        let labels: &[&str] = match ty {
            GgmlType::BF16 => &["special", "random"],
            GgmlType::Q4_0 | GgmlType::Q5_0 => &[
                "ties_neg_max",
                "ties_pos_max",
                "d_f16_tie_even_down",
                "d_f16_tie_even_up",
                "amax_tie_pos_first",
                "amax_tie_neg_first",
                "all_zero",
                "fma_sensitive",
            ],
            _ => &[
                "ties_neg_max",
                "ties_pos_max",
                "d_f16_tie_even_down",
                "all_zero",
                "constant",
            ],
        };
        for l in labels {
            assert!(
                case.labels.range(l).is_some(),
                "{ty}: golden quantize data lacks `{l}`"
            );
        }
    }
}

/// Activation quantization (Q8_0, Q8_1, Q8_K) of every matvec case's x equals the golden
/// `xq` bytes, which golden/gen/matvec.py made from ggml's definitions (Q8_0 by gguf).
#[test]
fn activation_quantize_matches_golden_xq() {
    for ty in GgmlType::WEIGHTS {
        for case in golden::matvec_cases(ty).unwrap_or_else(|e| panic!("{e}")) {
            let mut got = vec![0u8; case.xq.len()];
            quantize(case.act, &case.x, &mut got).unwrap_or_else(|e| panic!("{e}"));
            let bs = case.act.type_size();
            let first_bad = got
                .chunks_exact(bs)
                .zip(case.xq.chunks_exact(bs))
                .position(|(g, w)| g != w);
            if let Some(b) = first_bad {
                panic!(
                    "{ty} {}x{}: x quantized to {} differs from golden in block {b}:\n  expected {:02x?}\n  got      {:02x?}",
                    case.rows,
                    case.cols,
                    case.act,
                    &case.xq[b * bs..(b + 1) * bs],
                    &got[b * bs..(b + 1) * bs]
                );
            }
        }
    }
}

/// The matvec golden y is W·x with W as our reference dequantize gives it (bit-exact to
/// gguf's, tested above), so both sides sum the same f64 products (f32·f32 is exact in
/// f64) and differ only in summation order. Each order's error is at most
/// (n − 1)·2⁻⁵³·Σ|w·x| (the standard recursive-summation bound), so two orders differ by at
/// most 2·n·2⁻⁵³·Σ|w·x| — `abs_dot` in the data.
#[test]
fn matvec_golden_y_is_reference_dequantize_times_x() {
    for ty in GgmlType::WEIGHTS {
        for case in golden::matvec_cases(ty).unwrap_or_else(|e| panic!("{e}")) {
            let mut w = vec![0.0f32; case.rows * case.cols];
            dequantize(ty, &case.w, &mut w).unwrap_or_else(|e| panic!("{e}"));
            for (r, row) in w.chunks_exact(case.cols).enumerate() {
                let y: f64 = row
                    .iter()
                    .zip(&case.x)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let tol = 2.0 * case.cols as f64 * f64::EPSILON / 2.0 * case.abs_dot[r];
                assert!(
                    (y - case.y[r]).abs() <= tol,
                    "{ty} {}x{} row {r}: y = {y}, golden {} (tolerance {tol:e})",
                    case.rows,
                    case.cols,
                    case.y[r]
                );
            }
        }
    }
}
