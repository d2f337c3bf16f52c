//! The per-block weight bound of the dot-product tolerance derivations, shared by
//! `dot_twins.rs` here and `tests/tests/matvec_golden.rs` (which includes this file by path).

use strata_kernels_cpu::{dequantize, GgmlType};

/// The f16 stored at byte `off` of a block.
pub fn f16_at(b: &[u8], off: usize) -> f64 {
    let mut v = [0f32];
    dequantize(GgmlType::F16, &b[off..off + 2], &mut v).expect("2 bytes are one f16");
    f64::from(v[0])
}

/// S_b: largest |scale·u| plus twice the largest |scale·offset| or |min| of an element
/// (the offset counts twice because fast paths may subtract it separately).
pub fn block_bound(ty: GgmlType, b: &[u8]) -> f64 {
    use GgmlType::*;
    match ty {
        Q4_0 => f16_at(b, 0).abs() * (15.0 + 2.0 * 8.0),
        Q5_0 => f16_at(b, 0).abs() * (31.0 + 2.0 * 16.0),
        Q8_0 => f16_at(b, 0).abs() * (255.0 + 2.0 * 128.0),
        Q4_1 => f16_at(b, 0).abs() * 15.0 + 2.0 * f16_at(b, 2).abs(),
        Q5_1 => f16_at(b, 0).abs() * 31.0 + 2.0 * f16_at(b, 2).abs(),
        Q2_K => f16_at(b, 80).abs() * 15.0 * 3.0 + 2.0 * f16_at(b, 82).abs() * 15.0,
        Q3_K => f16_at(b, 108).abs() * 32.0 * (7.0 + 2.0 * 4.0),
        Q4_K => f16_at(b, 0).abs() * 63.0 * 15.0 + 2.0 * f16_at(b, 2).abs() * 63.0,
        Q5_K => f16_at(b, 0).abs() * 63.0 * 31.0 + 2.0 * f16_at(b, 2).abs() * 63.0,
        Q6_K => f16_at(b, 208).abs() * 128.0 * (63.0 + 2.0 * 32.0),
        _ => unreachable!("float formats are bounded per element"),
    }
}
