//! F16 and BF16, held as raw `u16` bits (the bytes a GGUF stores), to and from f32.
//!
//! F16 rounds to nearest, ties to even (`half`, as numpy's `astype(float16)`). BF16 follows
//! ggml's `ggml_compute_fp32_to_bf16` and `gguf.quants.BF16` bit for bit: a NaN is made
//! quiet (upper 16 bits kept, bit 22 set), everything else rounds to nearest, ties to even,
//! overflowing to infinity.

use half::f16;

/// The bf16 bits nearest `x` (ties to even); a NaN stays a NaN, made quiet.
pub fn bf16_bits_from_f32(x: f32) -> u16 {
    let mut n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        n = (n & 0xffff_0000) | 0x0040_0000;
    }
    // Wide sum: the rounding increment may carry past bit 31 only for NaNs, handled above,
    // but computing in u64 keeps that argument out of the safety of the code.
    ((u64::from(n) + 0x7fff + u64::from((n >> 16) & 1)) >> 16) as u16
}

/// The f32 with the same sign, exponent and top mantissa bits (exact).
pub fn f32_from_bf16_bits(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

pub fn dequantize_f16(src: &[u16], dst: &mut [f32]) {
    check(src.len(), dst.len());
    for (y, &h) in dst.iter_mut().zip(src) {
        *y = f16::from_bits(h).to_f32();
    }
}

pub fn quantize_f16(src: &[f32], dst: &mut [u16]) {
    check(dst.len(), src.len());
    for (h, &x) in dst.iter_mut().zip(src) {
        *h = f16::from_f32(x).to_bits();
    }
}

pub fn dequantize_bf16(src: &[u16], dst: &mut [f32]) {
    check(src.len(), dst.len());
    for (y, &h) in dst.iter_mut().zip(src) {
        *y = f32_from_bf16_bits(h);
    }
}

pub fn quantize_bf16(src: &[f32], dst: &mut [u16]) {
    check(dst.len(), src.len());
    for (h, &x) in dst.iter_mut().zip(src) {
        *h = bf16_bits_from_f32(x);
    }
}

fn check(halves: usize, floats: usize) {
    assert_eq!(
        halves, floats,
        "16-bit and f32 slices must have the same length"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_ties_to_even_and_quiets_nans() {
        // 1 + 2^-8 is halfway between bf16 1.0 and the next value: ties to even (down).
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3·2^-8 is halfway between two values whose upper one is even: rounds up.
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16_bits_from_f32(f32::MAX), 0x7f80, "overflows to +inf");
        assert_eq!(bf16_bits_from_f32(f32::INFINITY), 0x7f80);
        assert_eq!(
            bf16_bits_from_f32(f32::from_bits(0x7f80_0001)),
            0x7fc0,
            "sNaN quieted"
        );
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0xffff_ffff)), 0xffff);
        assert_eq!(bf16_bits_from_f32(-0.0), 0x8000);
        assert_eq!(bf16_bits_from_f32(f32::MIN), 0xff80, "overflows to −inf");
        // Subnormal halfway cases follow the same rule.
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0x0000_8000)), 0x0000);
        assert_eq!(bf16_bits_from_f32(f32::from_bits(0x0001_8000)), 0x0002);
    }

    #[test]
    fn representable_values_round_trip_exactly() {
        let halves: Vec<u16> = (0..=u16::MAX).collect();
        let mut f = vec![0.0; halves.len()];
        let mut back = vec![0u16; halves.len()];
        dequantize_bf16(&halves, &mut f);
        quantize_bf16(&f, &mut back);
        for (&h, &b) in halves.iter().zip(&back) {
            let is_nan = h & 0x7fff > 0x7f80;
            assert_eq!(b, if is_nan { h | 0x0040 } else { h }, "bf16 {h:#06x}");
        }
        dequantize_f16(&halves, &mut f);
        quantize_f16(&f, &mut back);
        for (&h, &b) in halves.iter().zip(&back) {
            if h & 0x7fff <= 0x7c00 {
                assert_eq!(b, h, "f16 {h:#06x}");
            }
        }
    }
}
