//! The byte-level API: named errors for wrong lengths, any alignment, exact round trips of
//! values a format represents exactly, and the activation formats' bounds and sums.

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_kernels_cpu::formats::blocks::{BlockQ8K, BlockQ8_1};
use strata_kernels_cpu::formats::{q8_1, q8_k};
use strata_kernels_cpu::{dequantize, quantize, FormatError, GgmlType};

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0x5742_4154)
}

fn bytes_for(ty: GgmlType, n: usize) -> usize {
    ty.bytes_for(n as u64).unwrap() as usize
}

#[test]
fn wrong_lengths_are_named_errors() {
    for ty in GgmlType::ALL {
        let block = ty.block_size();
        let n = 4 * block;
        let good = bytes_for(ty, n);
        let mut out = vec![0.0f32; n];
        let src = vec![0.0f32; n];

        let mut bytes = vec![0u8; good + 1];
        let err = FormatError::ByteLength {
            ty,
            n,
            expected: good,
            got: good + 1,
        };
        assert_eq!(dequantize(ty, &bytes, &mut out), Err(err.clone()), "{ty}");
        assert_eq!(quantize(ty, &src, &mut bytes), Err(err), "{ty}");

        if block > 1 {
            let ragged = n + 1;
            let err = FormatError::NotWholeBlocks {
                ty,
                n: ragged,
                block,
            };
            let mut out = vec![0.0f32; ragged];
            assert_eq!(dequantize(ty, &bytes, &mut out), Err(err.clone()), "{ty}");
            assert_eq!(
                quantize(ty, &vec![0.0; ragged], &mut bytes),
                Err(err),
                "{ty}"
            );
        }
        // Empty input is zero whole blocks: fine.
        assert_eq!(dequantize(ty, &[], &mut []), Ok(()));
        assert_eq!(quantize(ty, &[], &mut []), Ok(()));
    }
}

#[test]
fn unaligned_buffers_give_the_same_results() {
    let mut rng = rng();
    let x: Vec<f32> = (0..512).map(|_| rng.random_range(-3.0..3.0)).collect();
    for ty in GgmlType::ALL {
        let len = bytes_for(ty, x.len());
        // One extra u64 so that a slice at offset 1 fits; u64 storage aligns offset 0.
        let mut aligned = vec![0u64; len / 8 + 2];
        let mut shifted = aligned.clone();
        let aligned: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut aligned)[..len];
        let shifted: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut shifted)[1..len + 1];
        quantize(ty, &x, aligned).unwrap();
        quantize(ty, &x, shifted).unwrap();
        assert_eq!(aligned, shifted, "{ty} quantize");
        let (mut a, mut b) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
        dequantize(ty, aligned, &mut a).unwrap();
        dequantize(ty, shifted, &mut b).unwrap();
        assert_eq!(a, b, "{ty} dequantize");
    }
}

/// A random f16 with magnitude in [2^lo, 2^hi): eleven significant bits, so products with
/// small integers and sums of such values stay exact in f32.
fn short_f16(rng: &mut ChaCha8Rng, lo: i32, hi: i32) -> f32 {
    let mag = 2f32.powi(rng.random_range(lo..hi)) * rng.random_range(1.0..2.0);
    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    f16::from_f32(sign * mag).to_f32()
}

/// Values of one block that `ty` represents exactly and that its quantizer must find: the
/// integers span the whole grid (so the scale it derives from the extremes is the one used)
/// and every f32 operation on them is exact (see `short_f16`).
fn representable_block(ty: GgmlType, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = ty.block_size();
    let mut q: Vec<i32>;
    let (d, m) = (short_f16(rng, -6, 0), short_f16(rng, -6, 1));
    let (lo, hi, offset) = match ty {
        GgmlType::Q4_0 => (-8, 7, 0.0),
        GgmlType::Q5_0 => (-16, 15, 0.0),
        GgmlType::Q4_1 => (0, 15, m),
        GgmlType::Q5_1 => (0, 31, m),
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K => (-127, 127, 0.0),
        _ => unreachable!(),
    };
    q = (0..n).map(|_| rng.random_range(lo..=hi)).collect();
    // The quantizer takes its scale from the extreme values: put them in.
    q[rng.random_range(0..n / 2)] = lo;
    if ty.block_size() == 32 && lo >= 0 {
        q[n / 2 + rng.random_range(0..n / 2)] = hi;
    }
    let d = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        d.abs()
    } else {
        d
    };
    q.iter().map(|&q| d * q as f32 + offset).collect()
}

#[test]
fn exactly_representable_values_round_trip_exactly() {
    let mut rng = rng();
    let exact_types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
    ];
    for ty in exact_types {
        let x: Vec<f32> = (0..8)
            .flat_map(|_| representable_block(ty, &mut rng))
            .collect();
        let mut bytes = vec![0u8; bytes_for(ty, x.len())];
        quantize(ty, &x, &mut bytes).unwrap();
        let mut y = vec![0.0; x.len()];
        dequantize(ty, &bytes, &mut y).unwrap();
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            panic!("{ty}: element {i}: {} became {}", x[i], y[i]);
        }
    }
    // Q8_K stores d = 1/iscale with iscale = −127/max in f32: the quants come back exact,
    // but 1/fl(1/d) can miss d by an f32 ulp (double rounding), so values agree to 2⁻²³.
    let ty = GgmlType::Q8_K;
    let x: Vec<f32> = (0..8)
        .flat_map(|_| representable_block(ty, &mut rng))
        .collect();
    let mut bytes = vec![0u8; bytes_for(ty, x.len())];
    quantize(ty, &x, &mut bytes).unwrap();
    let mut y = vec![0.0; x.len()];
    dequantize(ty, &bytes, &mut y).unwrap();
    for (a, b) in x.iter().zip(&y) {
        assert!(
            (a - b).abs() <= a.abs() * f32::EPSILON,
            "Q8_K {a} became {b}"
        );
    }

    // Every finite f16 value through F16 and F32, every finite bf16 value through BF16.
    let x: Vec<f32> = (0..=u16::MAX)
        .map(|h| f16::from_bits(h).to_f32())
        .filter(|v| v.is_finite())
        .collect();
    for ty in [GgmlType::F16, GgmlType::F32] {
        let mut bytes = vec![0u8; bytes_for(ty, x.len())];
        quantize(ty, &x, &mut bytes).unwrap();
        let mut y = vec![0.0; x.len()];
        dequantize(ty, &bytes, &mut y).unwrap();
        assert!(
            x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty}"
        );
    }
    let x: Vec<f32> = (0..=u16::MAX)
        .map(|h| f32::from_bits(u32::from(h) << 16))
        .filter(|v| v.is_finite())
        .collect();
    let mut bytes = vec![0u8; x.len() * 2];
    quantize(GgmlType::BF16, &x, &mut bytes).unwrap();
    let mut y = vec![0.0; x.len()];
    dequantize(GgmlType::BF16, &bytes, &mut y).unwrap();
    assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// Q8_0/Q8_1 round each x·(1/d) to the nearest integer with the f32 d = max|x|/127, then
/// store d as f16. So |x − q·d16| ≤ |x − q·d| + |q|·|d − d16| ≤ d/2 + 127·|d − d16|, plus
/// f32 roundings (of 1/d, x·(1/d) and q·d16: a few 2⁻²⁴ relative, covered by the factor
/// 1.001).
#[test]
fn activation_formats_stay_within_half_a_step() {
    let mut rng = rng();
    for _ in 0..50 {
        let scale = 2f32.powi(rng.random_range(-10..6));
        let x: Vec<f32> = (0..256)
            .map(|_| rng.random_range(-1.0..1.0) * scale)
            .collect();

        let mut blocks = vec![bytemuck::Zeroable::zeroed(); 8];
        q8_1::quantize(&x, &mut blocks);
        let mut y = vec![0.0; x.len()];
        q8_1::dequantize(&blocks, &mut y);
        for (i, b) in blocks.iter().enumerate() {
            let b: &BlockQ8_1 = b;
            let xb = &x[32 * i..32 * (i + 1)];
            let d = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            let d16 = b.d.to_f32();
            let bound = (0.5 * d + 127.0 * (d - d16).abs()) * 1.001;
            for (a, c) in xb.iter().zip(&y[32 * i..]) {
                assert!((a - c).abs() <= bound, "Q8_1 {a} vs {c}, bound {bound}");
            }
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            assert_eq!(
                b.s,
                f16::from_f32(sum as f32 * d),
                "s = d·Σq with the f32 d"
            );
        }

        // Q8_K keeps an f32 d, so only half a step (relative f32 rounding aside).
        let mut blocks: Vec<BlockQ8K> = vec![bytemuck::Zeroable::zeroed(); 1];
        q8_k::quantize(&x, &mut blocks);
        q8_k::dequantize(&blocks, &mut y);
        let b = &blocks[0];
        let bound = 0.5 * b.d.abs() * 1.001;
        for (a, c) in x.iter().zip(&y) {
            assert!((a - c).abs() <= bound, "Q8_K {a} vs {c}, bound {bound}");
        }
        for (j, &s) in b.bsums.iter().enumerate() {
            let want: i16 = b.qs[16 * j..16 * (j + 1)]
                .iter()
                .map(|&q| i16::from(q))
                .sum();
            assert_eq!(s, want);
        }
        assert!(b.qs.contains(&-127), "the largest magnitude maps to −127");
    }
}

#[test]
fn zero_blocks_quantize_to_zero() {
    let x = vec![0.0f32; 512];
    for ty in GgmlType::ALL {
        let mut bytes = vec![0xAAu8; bytes_for(ty, x.len())];
        quantize(ty, &x, &mut bytes).unwrap();
        let mut y = vec![1.0; x.len()];
        dequantize(ty, &bytes, &mut y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
}

#[test]
fn non_finite_input_quantizes_without_panicking() {
    let mut rng = rng();
    for special in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
    ] {
        let mut x: Vec<f32> = (0..512).map(|_| rng.random_range(-1.0..1.0)).collect();
        x[7] = special;
        x[300] = special;
        for ty in GgmlType::ALL {
            let mut bytes = vec![0u8; bytes_for(ty, x.len())];
            quantize(ty, &x, &mut bytes).unwrap();
            let mut y = vec![0.0; x.len()];
            dequantize(ty, &bytes, &mut y).unwrap();
        }
    }
}
