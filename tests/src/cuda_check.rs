//! Block facts the CUDA checks (on the GPU, `cuda_kernels.rs`, and as host C++,
//! `cuda_host_check.rs`) share to compare against the CPU reference.

use strata_kernels_cpu::formats::k_scales;
use strata_kernels_cpu::{dequantize, GgmlType};

/// The f16 at the start of `bytes`, as f32.
pub fn f16_value(bytes: &[u8]) -> f32 {
    let mut v = [0.0f32];
    dequantize(GgmlType::F16, &bytes[..2], &mut v).expect("2 bytes are one f16");
    v[0]
}

/// Same bits, except that any NaN equals any NaN: PTX float arithmetic returns the canonical
/// NaN 0x7fffffff where the CPU propagates 0x7fc00000, so NaN bits are not comparable.
pub fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The group offsets b (w = a·q + b) of a block of a format with mins, one per 16 elements
/// (Q4_1/Q5_1/Q4_K/Q5_K repeat theirs); zero for formats without mins.
pub fn offsets16(ty: GgmlType, b: &[u8]) -> Vec<f64> {
    let groups = ty.block_size().div_ceil(16);
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => vec![f64::from(f16_value(&b[2..])); groups],
        GgmlType::Q2_K => {
            let dmin = f64::from(f16_value(&b[82..]));
            (0..16).map(|g| -dmin * f64::from(b[g] >> 4)).collect()
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let dmin = f64::from(f16_value(&b[2..]));
            let (_, m) = k_scales::unpack(b[4..16].try_into().expect("12 scale bytes"));
            (0..16).map(|g| -dmin * f64::from(m[g / 2])).collect()
        }
        _ => vec![0.0; groups],
    }
}
