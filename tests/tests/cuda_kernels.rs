//! Every CUDA kernel against golden data and against the CPU reference on the same inputs.
//!
//! Without a GPU (or without the driver, or a build without kernels) each GPU test prints
//! "skipped: no CUDA device (why)" and passes; the discovery test runs everywhere.
//!
//! Tolerances are derived, not tuned. u = 2⁻²⁴ is f32's unit roundoff; a sum of n terms in
//! any order is within (n − 1)·u·Σ|terms| of exact (the standard bound γₙ), and each f32
//! product adds u relative. Where a kernel and its reference round the same way, the test
//! asks for bit equality.

use strata_kernels_cpu::ops::{self, Gating, KvCache, KvType, KvView, MlaShape, Rope, Router};
use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_kernels_cuda::MlaDims;
use strata_kernels_cuda::{
    q8_1_bytes, AttentionShape, CacheRows, DeviceBuffer, ExpertSlots, ExpertStack, Gpu, RopeParams,
};
use strata_tests::cuda_check::{
    check_f16_product, check_route, gpu, offsets16, randn, random_expert_ids, rng, route_cases,
    same_bits, sort_ref, weighted_sum_ref, weights, AbsorbCase, MlaCase, MlaPrepCase, U,
};
use strata_tests::golden;

#[test]
fn discovery_never_panics() {
    // Runs on every machine: with no driver these are errors, never panics.
    let count = strata_kernels_cuda::device_count();
    let devices = strata_kernels_cuda::devices();
    match (&count, &devices) {
        (Ok(n), Ok(d)) => {
            assert_eq!(*n, d.len());
            for dev in d {
                assert!(dev.free_bytes <= dev.total_bytes, "{dev:?}");
                println!("{dev:?}");
            }
        }
        (Err(e), Err(_)) => println!("no CUDA: {e}"),
        _ => panic!("device_count {count:?} and devices {devices:?} disagree"),
    }
    let reason = strata_kernels_cuda::unavailable_reason();
    assert_eq!(reason.is_none(), Gpu::first().is_ok(), "{reason:?}");
    if !strata_kernels_cuda::driver_present() {
        assert!(count.is_err());
    }
}

#[test]
fn dequantize_matches_golden_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    for ty in GgmlType::WEIGHTS {
        let case = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        let n = case.values.len();
        let src = gpu.upload(&case.blocks).unwrap();
        let mut dst = gpu.zeros::<f32>(n).unwrap();
        gpu.dequantize(ty, &src, &mut dst, n).unwrap();
        let got = dst.to_host(&gpu).unwrap();
        let bad: Vec<usize> = (0..n)
            .filter(|&i| !same_bits(got[i], case.values[i]))
            .collect();
        assert!(
            bad.is_empty(),
            "{ty}: {} of {n} values differ from golden, first at {}: got {:e}, want {:e} (block {})",
            bad.len(),
            bad[0],
            got[bad[0]],
            case.values[bad[0]],
            case.label(bad[0] / ty.block_size())
        );

        // The f16 variant is the f32 result rounded to nearest even (the CPU's F16 quantize).
        let mut dst16 = gpu.zeros::<u16>(n).unwrap();
        gpu.dequantize_to_f16(ty, &src, &mut dst16, n).unwrap();
        let got16 = dst16.to_host(&gpu).unwrap();
        let mut want16 = vec![0u8; 2 * n];
        quantize(GgmlType::F16, &case.values, &mut want16).unwrap();
        for i in 0..n {
            let w = u16::from_le_bytes([want16[2 * i], want16[2 * i + 1]]);
            let nan = |h: u16| h & 0x7c00 == 0x7c00 && h & 0x03ff != 0;
            assert!(
                got16[i] == w || (nan(got16[i]) && nan(w)),
                "{ty} f16 element {i}: {:#06x} vs {w:#06x}",
                got16[i]
            );
        }
    }
}

#[test]
fn get_rows_matches_cpu_dequantize() {
    let Some(gpu) = gpu() else { return };
    for ty in GgmlType::WEIGHTS {
        let case = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        // View the golden blocks as a matrix of rows of one K-quant block or 8 legacy blocks.
        let ncols = if ty.block_size() == 1 { 64 } else { 256 };
        let nrows = case.values.len() / ncols;
        assert!(nrows >= 2, "{ty}: golden case too small");
        let ids: Vec<u32> = vec![nrows as u32 - 1, 0, (nrows / 2) as u32, 0];
        let w = gpu
            .upload(&case.blocks[..nrows * ncols / ty.block_size() * ty.type_size()])
            .unwrap();
        let mut dst = gpu.zeros::<f32>(ids.len() * ncols).unwrap();
        gpu.get_rows(ty, &w, &ids, &mut dst, ncols, nrows).unwrap();
        let got = dst.to_host(&gpu).unwrap();
        for (k, &id) in ids.iter().enumerate() {
            let want = &case.values[id as usize * ncols..(id as usize + 1) * ncols];
            for c in 0..ncols {
                assert!(
                    same_bits(got[k * ncols + c], want[c]),
                    "{ty} id {id} col {c}"
                );
            }
        }
        // A bad id is an error that names it, not a read out of bounds.
        let err = gpu
            .get_rows(ty, &w, &[nrows as u32], &mut dst, ncols, nrows)
            .unwrap_err();
        assert!(err.to_string().contains(&nrows.to_string()), "{err}");
    }
}

#[test]
fn quantize_q8_1_matches_cpu_bytes() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(1);
    let (ncols, nrows) = (512, 3);
    let mut x = randn(&mut r, ncols * nrows, 3.0);
    x[..32].fill(0.0); // an all-zero block: d = 0, every q = 0
    x[40] = 1e-3; // a tiny value in a block of normal ones
    let xd = gpu.upload(&x).unwrap();
    let mut q = gpu.zeros::<u8>(q8_1_bytes(ncols, nrows)).unwrap();
    gpu.quantize_q8_1(&xd, &mut q, ncols, nrows).unwrap();
    let got = q.to_host(&gpu).unwrap();
    let mut want = vec![0u8; got.len()];
    quantize(GgmlType::Q8_1, &x, &mut want).unwrap();
    assert_eq!(got, want, "q8_1 bytes differ from the CPU reference");
}

#[test]
fn matvec_matches_golden_for_every_format() {
    let Some(gpu) = gpu() else { return };
    for ty in GgmlType::WEIGHTS {
        for case in golden::matvec_cases(ty).unwrap_or_else(|e| panic!("{e}")) {
            check_matvec(&gpu, &case);
        }
    }
}

fn check_matvec(gpu: &Gpu, case: &golden::MatvecCase) {
    let (ty, rows, cols) = (case.ty, case.rows, case.cols);
    let w = gpu.upload(&case.w).unwrap();
    let x = gpu.upload(&case.x).unwrap();
    let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, 1).max(1)).unwrap();
    let mut y = gpu.zeros::<f32>(rows).unwrap();
    gpu.matvec(ty, &w, &x, &mut xq, &mut y, cols, rows, 1)
        .unwrap();
    let got = y.to_host(gpu).unwrap();

    let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    // The activations the kernel multiplied: x itself, or its q8_1 blocks dequantized.
    let xhat: Vec<f32> = if float {
        case.x.clone()
    } else {
        let bytes = xq.to_host(gpu).unwrap();
        let mut want = vec![0u8; bytes.len()];
        quantize(GgmlType::Q8_1, &case.x, &mut want).unwrap();
        assert_eq!(
            bytes, want,
            "{ty} {rows}x{cols}: q8_1 activations differ from the CPU's"
        );
        let mut v = vec![0.0f32; cols];
        dequantize(GgmlType::Q8_1, &bytes, &mut v).unwrap();
        v
    };
    let mut wf = vec![0.0f32; rows * cols];
    dequantize(ty, &case.w, &mut wf).unwrap();
    let row_bytes = cols / ty.block_size() * ty.type_size();
    let nsub = cols.div_ceil(32);

    for r in 0..rows {
        let wr = &wf[r * cols..(r + 1) * cols];
        // Reference. Legacy formats: golden y_q (x quantized the ggml way: Q8_0 shares d and
        // qs with q8_1; Q4_1/Q5_1 use q8_1's f16 s exactly as the kernel does). K-quants: the
        // kernel takes Σxq exactly, so the exact product of dequantized W and q8_1 x. Float
        // weights: golden y.
        let want = if float || ty.is_k_quant() {
            wr.iter()
                .zip(&xhat)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
        } else {
            case.y_q[r]
        };
        // Error scale: each 32-weight term is formed from a scale part and (formats with
        // mins) an offset part, |Σ a·q·x̂| ≤ Σ (|w| + |b|)|x̂| and |b·Σx̂| ≤ |b|·Σ|x̂|, with ≤ 4
        // roundings each. Float kernels sum the terms over 128 threads (⌈nsub/128⌉ each)
        // and a 7-level tree (8 counted); quantized kernels over the 32 lanes of a warp
        // (⌈nsub/32⌉ each) and a 5-level shuffle. So |err| ≤ (4 + per-thread + levels)·u·
        // Σ(|w| + 2|b|)|x̂|, and an f32 result adds u·|y|.
        let mut mag = 0.0f64;
        for blk in 0..cols / ty.block_size() {
            let bytes = &case.w[r * row_bytes + blk * ty.type_size()..][..ty.type_size()];
            let b = offsets16(ty, bytes);
            for e in 0..ty.block_size() {
                let i = blk * ty.block_size() + e;
                let bo = b[e / 16].abs();
                mag += (f64::from(wr[i]).abs() + 2.0 * bo) * f64::from(xhat[i]).abs();
            }
        }
        let sums = if float {
            nsub.div_ceil(128) + 8
        } else {
            nsub.div_ceil(32) + 5
        };
        let tol = (4 + sums) as f64 * U * mag + U * want.abs() + f64::MIN_POSITIVE;
        let diff = (f64::from(got[r]) - want).abs();
        assert!(
            diff <= tol,
            "{ty} {rows}x{cols} row {r}: got {}, want {want}, |diff| {diff:e} > tol {tol:e}",
            got[r]
        );
    }
}

#[test]
fn matvec_batch_equals_one_vector_at_a_time() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(2);
    let (rows, cols, nvec) = (37, 512, 3);
    for ty in GgmlType::WEIGHTS {
        let wbytes: Vec<u8> = weights(&mut r, ty, rows, cols);
        let w = gpu.upload(&wbytes).unwrap();
        let x = randn(&mut r, cols * nvec, 1.0);
        let xd = gpu.upload(&x).unwrap();
        let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, nvec)).unwrap();
        let mut y = gpu.zeros::<f32>(rows * nvec).unwrap();
        gpu.matvec(ty, &w, &xd, &mut xq, &mut y, cols, rows, nvec)
            .unwrap();
        let batch = y.to_host(&gpu).unwrap();
        for v in 0..nvec {
            let xv = gpu.upload(&x[v * cols..(v + 1) * cols]).unwrap();
            let mut yv = gpu.zeros::<f32>(rows).unwrap();
            gpu.matvec(ty, &w, &xv, &mut xq, &mut yv, cols, rows, 1)
                .unwrap();
            // Same kernel, same order of operations: identical bits.
            assert_eq!(
                yv.to_host(&gpu).unwrap(),
                batch[v * rows..(v + 1) * rows],
                "{ty} vector {v}"
            );
        }
    }
}

#[test]
fn matmul_matches_dequantized_product() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(3);
    // 70 tokens and 130 rows cross tile edges (64); 512 columns are 16 k-steps.
    let (rows, cols, ntok) = (130, 512, 70);
    for ty in GgmlType::WEIGHTS {
        let wbytes = weights(&mut r, ty, rows, cols);
        let mut wf = vec![0.0f32; rows * cols];
        dequantize(ty, &wbytes, &mut wf).unwrap();
        let x = randn(&mut r, cols * ntok, 1.0);
        let (w, xd) = (gpu.upload(&wbytes).unwrap(), gpu.upload(&x).unwrap());
        let mut y = gpu.zeros::<f32>(rows * ntok).unwrap();
        gpu.matmul(ty, &w, &xd, &mut y, cols, rows, ntok).unwrap();
        let got = y.to_host(&gpu).unwrap();
        check_f16_product(&format!("{ty}"), &wf, &x, &got, (rows, cols, ntok));
    }
}

#[test]
fn rms_norm_softmax_swiglu_add_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(4);
    let (ncols, nrows) = (576, 5);
    let x = randn(&mut r, ncols * nrows, 2.0);
    let w = randn(&mut r, ncols, 1.0);
    let eps = 1e-5f32;

    let (xd, wd) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
    let mut out = gpu.zeros::<f32>(ncols * nrows).unwrap();
    gpu.rms_norm(&xd, &wd, &mut out, nrows, eps).unwrap();
    let got = out.to_host(&gpu).unwrap();
    for row in 0..nrows {
        let mut want = vec![0.0f32; ncols];
        ops::rms_norm_ref(&x[row * ncols..][..ncols], &w, eps, &mut want);
        // Σx² in f32 (⌈n/256⌉ per thread + 8 tree levels) vs the CPU's f64: relative
        // (⌈n/256⌉ + 8)·u; halved by the square root, plus sqrt, divide and two products:
        // ≤ (⌈n/256⌉ + 8)/2 + 4 u relative.
        let rel = ((ncols.div_ceil(256) + 8) as f64 / 2.0 + 4.0) * U;
        for c in 0..ncols {
            let (g, h) = (f64::from(got[row * ncols + c]), f64::from(want[c]));
            assert!(
                (g - h).abs() <= rel * h.abs() + U * h.abs(),
                "rms_norm row {row} col {c}: {g} vs {h}"
            );
        }
    }

    let mut sd = gpu.upload(&x).unwrap();
    gpu.softmax(&mut sd, ncols, nrows).unwrap();
    let got = sd.to_host(&gpu).unwrap();
    for row in 0..nrows {
        let mut want = x[row * ncols..][..ncols].to_vec();
        ops::softmax_ref(&mut want);
        // expf within 2 ulp (CUDA's documented bound) vs Rust's ≤ 1 ulp; sum in f32 vs f64:
        // (⌈n/256⌉ + 8)·u; one reciprocal and one product: ≤ 2·3 + ⌈n/256⌉ + 8 + 2 u relative.
        let rel = (16.0 + ncols.div_ceil(256) as f64) * U;
        for c in 0..ncols {
            let (g, h) = (f64::from(got[row * ncols + c]), f64::from(want[c]));
            assert!(
                (g - h).abs() <= rel * h.abs(),
                "softmax row {row} col {c}: {g} vs {h}"
            );
        }
    }

    let n = ncols * nrows;
    let (gate, up) = (randn(&mut r, n, 6.0), randn(&mut r, n, 2.0));
    let (gd, ud) = (gpu.upload(&gate).unwrap(), gpu.upload(&up).unwrap());
    let mut od = gpu.zeros::<f32>(n).unwrap();
    gpu.swiglu(&gd, &ud, &mut od, n).unwrap();
    let got = od.to_host(&gpu).unwrap();
    let mut want = vec![0.0f32; n];
    ops::swiglu_ref(&gate, &up, &mut want);
    for i in 0..n {
        // g / (1 + e^−g) · u: exp ≤ 2 ulp (GPU) and ≤ 1 ulp (CPU), then add, divide and
        // multiply: ≤ 3 + 3 + 3 roundings' worth, 2·u each in ulps: 18·u relative.
        let (g, h) = (f64::from(got[i]), f64::from(want[i]));
        assert!(
            (g - h).abs() <= 18.0 * U * h.abs(),
            "swiglu {i}: {g} vs {h}"
        );
    }

    let b = randn(&mut r, n, 1.0);
    let mut ad = gpu.upload(&x).unwrap();
    // Only the first n − 7 values: the rest must stay as they were.
    gpu.add(&mut ad, &gpu.upload(&b).unwrap(), n - 7).unwrap();
    let mut want = x.clone();
    ops::add_ref(&mut want[..n - 7], &b[..n - 7]);
    // One IEEE addition on both sides: identical bits.
    assert_eq!(ad.to_host(&gpu).unwrap(), want);

    // A bias on each of the first nrows − 1 rows.
    let bias = randn(&mut r, ncols, 1.0);
    let mut ad = gpu.upload(&x).unwrap();
    let rows = (nrows - 1) * ncols;
    gpu.add_rows(&mut ad, &gpu.upload(&bias).unwrap(), rows)
        .unwrap();
    let mut want = x.clone();
    for row in want[..rows].chunks_exact_mut(ncols) {
        ops::add_ref(row, &bias);
    }
    assert_eq!(ad.to_host(&gpu).unwrap(), want);
    assert!(gpu
        .add_rows(&mut ad, &gpu.upload(&bias).unwrap(), rows + 1)
        .is_err());
}

#[test]
fn partial_copies_touch_only_their_range() {
    let Some(gpu) = gpu() else { return };
    let host: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let mut a = gpu.upload(&host).unwrap();
    a.write_at(&gpu, 10, &[-1.0, -2.0, -3.0]).unwrap();
    let mut want = host.clone();
    want[10..13].copy_from_slice(&[-1.0, -2.0, -3.0]);
    assert_eq!(a.to_host(&gpu).unwrap(), want);

    let mut got = [0.0f32; 4];
    a.read_at(&gpu, 9, &mut got).unwrap();
    assert_eq!(got, [9.0, -1.0, -2.0, -3.0]);

    let mut b = gpu.zeros::<f32>(20).unwrap();
    b.copy_within_device(&gpu, 5, &a, 95, 5).unwrap();
    let mut want_b = vec![0.0f32; 20];
    want_b[5..10].copy_from_slice(&host[95..100]);
    assert_eq!(b.to_host(&gpu).unwrap(), want_b);

    // A sum into rows further down, and zeros at the front: nothing else moves.
    let mut c = gpu.upload(&host).unwrap();
    gpu.add_at(&mut c, 40, &gpu.upload(&[0.5f32, 1.5, 2.5]).unwrap(), 3)
        .unwrap();
    c.zero_prefix(&gpu, 4).unwrap();
    let mut want_c = host.clone();
    want_c[40..43].copy_from_slice(&[40.5, 42.5, 44.5]);
    want_c[..4].fill(0.0);
    assert_eq!(c.to_host(&gpu).unwrap(), want_c);

    // Out of range: errors, nothing queued.
    assert!(gpu
        .add_at(&mut c, 98, &gpu.upload(&[0.0f32; 3]).unwrap(), 3)
        .is_err());
    assert!(c.zero_prefix(&gpu, 101).is_err());
    assert!(a.write_at(&gpu, 98, &[0.0; 3]).is_err());
    assert!(a.read_at(&gpu, usize::MAX, &mut got).is_err());
    assert!(b.copy_within_device(&gpu, 16, &a, 0, 5).is_err());
    assert!(b.copy_within_device(&gpu, 0, &a, 96, 5).is_err());
}

#[test]
fn rope_normal_and_neox_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(5);
    let (ntok, nhead, head_dim) = (4, 3, 64);
    let start_pos = 1000; // large angles exercise the argument reduction

    // Plain, and YaRN as DeepSeek-R1 sets it (factor 40 of a 4096 context): the ramp's mix
    // and mscale (≈ 1.37, so the bound below grows by that factor).
    let yarn = |n_rot| Some(ops::Yarn::new(n_rot, 4096, 10000.0, 1.0 + 0.1 * 40f32.ln()));
    for (neox, n_rot, with_yarn) in [
        (false, 64, false),
        (false, 32, false),
        (true, 64, false),
        (true, 32, false),
        (false, 64, true),
        (true, 32, true),
    ] {
        let rope = Rope {
            n_rot,
            freq_base: 10000.0,
            freq_scale: if with_yarn { 1.0 / 40.0 } else { 1.0 },
            neox,
            yarn: if with_yarn { yarn(n_rot) } else { None },
        };
        let x = randn(&mut r, ntok * nhead * head_dim, 1.0);
        let mut want = x.clone();
        ops::rope_rows(&mut want, ntok, nhead, head_dim, start_pos, &rope);
        let mut xd = gpu.upload(&x).unwrap();
        let pos: Vec<i32> = (0..ntok as i32).map(|t| start_pos as i32 + t).collect();
        let p = RopeParams {
            n_rot,
            freq_base: rope.freq_base,
            freq_scale: rope.freq_scale,
            neox,
            yarn: rope.yarn,
        };
        gpu.rope(
            &mut xd,
            &gpu.upload(&pos).unwrap(),
            ntok,
            nhead,
            head_dim,
            &p,
        )
        .unwrap();
        let got = xd.to_host(&gpu).unwrap();
        for (i, (&g, &h)) in got.iter().zip(&want).enumerate() {
            // Angles are bit-identical (same f32 recurrence, YaRN's mix rounded product by
            // product on both sides). sin/cos: ≤ 2 ulp on the GPU, ≤ 1 ulp on the CPU;
            // times mscale (one rounding each); x0·c − x1·s: two products and a
            // difference. |err| ≤ (4 + 4)·2u·mscale·(|x0| + |x1|) ≤ 32u·mscale, max|x| ≤ 1.
            let mscale = f64::from(rope.yarn.map_or(1.0, |y| y.mscale));
            let tol = 32.0 * U * mscale;
            assert!(
                (f64::from(g) - f64::from(h)).abs() <= tol,
                "rope neox={neox} n_rot={n_rot} yarn={with_yarn} element {i}: {g} vs {h}"
            );
        }
    }
}

fn upload_kv(gpu: &Gpu, view: KvView<'_>) -> DeviceBuffer<u16> {
    let bits: Vec<u16> = view
        .as_bytes()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    gpu.upload(&bits).unwrap()
}

#[test]
fn attention_one_token_and_causal_batch_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(6);
    let (nhead, nkv, head_dim, n_ctx) = (9, 3, 64, 300);
    // (start_pos, ntok): decode after a long prompt, and a causal prefill batch.
    for (start_pos, ntok) in [(257, 1), (0, 33), (100, 7)] {
        let kv_dim = nkv * head_dim;
        let mut cache = KvCache::new(KvType::F16, n_ctx, nkv, head_dim);
        let total = start_pos + ntok;
        let (k, v) = (
            randn(&mut r, total * kv_dim, 1.0),
            randn(&mut r, total * kv_dim, 1.0),
        );
        cache.append(0, &k, &v).unwrap();
        let q = randn(&mut r, ntok * nhead * head_dim, 1.0);
        let mut want = vec![0.0f32; q.len()];
        ops::attention_ref(&q, &cache, start_pos, ntok, nhead, &mut want);

        let (kd, vd) = (
            upload_kv(&gpu, cache.keys()),
            upload_kv(&gpu, cache.values()),
        );
        let qd = gpu.upload(&q).unwrap();
        let mut od = gpu.zeros::<f32>(q.len()).unwrap();
        let shape = AttentionShape {
            ntok,
            nhead,
            nkv,
            head_dim,
        };
        let pos: Vec<i32> = (0..ntok).map(|t| (start_pos + t) as i32).collect();
        let pos = gpu.upload(&pos).unwrap();
        let base = gpu.zeros::<i32>(ntok).unwrap();
        let at = CacheRows {
            pos: &pos,
            base: &base,
            n_ctx,
        };
        gpu.attention(&qd, &kd, &vd, &at, &mut od, &shape).unwrap();
        let got = od.to_host(&gpu).unwrap();

        // The fused q8_1 output: the same values, and quantize_q8_1's bytes of them.
        let width = nhead * head_dim;
        let qbytes = strata_kernels_cuda::q8_1_bytes(width, ntok);
        let (mut of, mut oq) = (
            gpu.zeros::<f32>(q.len()).unwrap(),
            gpu.zeros::<u8>(qbytes).unwrap(),
        );
        gpu.attention_q8_1(&qd, &kd, &vd, &at, &mut of, &mut oq, &shape)
            .unwrap();
        assert_eq!(of.to_host(&gpu).unwrap(), got, "attention_q8_1 values");
        let mut want_q = gpu.zeros::<u8>(qbytes).unwrap();
        gpu.quantize_q8_1(&od, &mut want_q, width, ntok).unwrap();
        assert_eq!(
            oq.to_host(&gpu).unwrap(),
            want_q.to_host(&gpu).unwrap(),
            "attention_q8_1 blocks"
        );

        // A score's error: a dot of head_dim products, (head_dim + 2)·u·scale·Σ|q·k|, here
        // ≤ (head_dim + 2)·u·√head_dim (|q|, |k| ≤ 1). A weight p_j's relative error is at most
        // twice the score error plus exp (2 ulp) and the normalisation ((n + 8)·u); the
        // output Σ p_j·v_j with |v| ≤ 1 then errs by at most that relative error.
        let hd = head_dim as f64;
        let score = (hd + 2.0) * U * hd.sqrt();
        let tol = 2.0 * score + ((total + 8) as f64 + 4.0) * U;
        for (i, (&g, &h)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - f64::from(h)).abs() <= tol,
                "attention start {start_pos} ntok {ntok} element {i}: {g} vs {h} (tol {tol:e})"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let Some(gpu) = gpu() else { return };
    let w = gpu.zeros::<u8>(18).unwrap();
    let x = gpu.zeros::<f32>(32).unwrap();
    let mut xq = gpu.zeros::<u8>(36).unwrap();
    let mut y = gpu.zeros::<f32>(2).unwrap();
    // Two Q4_0 rows need 36 bytes; 18 were given.
    let e = gpu
        .matvec(GgmlType::Q4_0, &w, &x, &mut xq, &mut y, 32, 2, 1)
        .unwrap_err();
    assert!(e.to_string().contains("w (bytes)"), "{e}");
    let e = gpu
        .matvec(GgmlType::Q8_K, &w, &x, &mut xq, &mut y, 256, 1, 1)
        .unwrap_err();
    assert!(e.to_string().contains("Q8_K"), "{e}");
}

#[test]
fn rope_store_kv_equals_rope_then_f16_rows() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(7);
    let (nhead, nkv, head_dim, n_ctx) = (6, 2, 64, 12);
    let kv_dim = nkv * head_dim;
    // Tokens to rows 7, 2 and 11; the last to 12, past the cache: rotated, not stored.
    let pos = [7, 2, 11, 12];
    let ntok = pos.len();
    let shape = AttentionShape {
        ntok,
        nhead,
        nkv,
        head_dim,
    };
    for (neox, n_rot) in [(false, head_dim), (true, head_dim), (false, 32), (true, 48)] {
        let p = RopeParams {
            n_rot,
            freq_base: 10000.0,
            freq_scale: 1.0,
            neox,
            yarn: None,
        };
        let q = randn(&mut r, ntok * nhead * head_dim, 1.0);
        let k = randn(&mut r, ntok * kv_dim, 1.0);
        let mut v = randn(&mut r, ntok * kv_dim, 70000.0); // some beyond f16: ±inf
        v[1] = 1e-7; // f16 subnormal
        let posd = gpu.upload(&pos).unwrap();
        let base = gpu.zeros::<i32>(pos.len()).unwrap();
        let at = CacheRows {
            pos: &posd,
            base: &base,
            n_ctx,
        };
        let (mut qd, mut kd, vd) = (
            gpu.upload(&q).unwrap(),
            gpu.upload(&k).unwrap(),
            gpu.upload(&v).unwrap(),
        );
        let mut kc = gpu.zeros::<u16>(n_ctx * kv_dim).unwrap();
        let mut vc = gpu.zeros::<u16>(n_ctx * kv_dim).unwrap();
        gpu.rope_store_kv(&mut qd, &mut kd, &vd, &mut kc, &mut vc, &at, &shape, &p)
            .unwrap();

        // q and k: bit for bit what the rope kernel gives (checked against the CPU above).
        let (mut qr, mut kr) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap());
        gpu.rope(&mut qr, &posd, ntok, nhead, head_dim, &p).unwrap();
        gpu.rope(&mut kr, &posd, ntok, nkv, head_dim, &p).unwrap();
        let what = format!("neox={neox} n_rot={n_rot}");
        assert_eq!(
            qd.to_host(&gpu).unwrap(),
            qr.to_host(&gpu).unwrap(),
            "q {what}"
        );
        let k_rot = kr.to_host(&gpu).unwrap();
        assert_eq!(kd.to_host(&gpu).unwrap(), k_rot, "k {what}");

        // The caches: the CPU's f16 bits (round to nearest even) of rotated k and of v at
        // the rows of the first three tokens, zero elsewhere.
        let f16_bits = |x: &[f32]| -> Vec<u16> {
            let mut b = vec![0u8; 2 * x.len()];
            quantize(GgmlType::F16, x, &mut b).unwrap();
            b.chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]]))
                .collect()
        };
        for (cache, src, name) in [(&kc, &k_rot, "k"), (&vc, &v, "v")] {
            let bits = f16_bits(src);
            let mut want = vec![0u16; n_ctx * kv_dim];
            for (t, &row) in pos.iter().enumerate().take(3) {
                want[row as usize * kv_dim..][..kv_dim]
                    .copy_from_slice(&bits[t * kv_dim..][..kv_dim]);
            }
            assert_eq!(cache.to_host(&gpu).unwrap(), want, "{name} cache {what}");
        }
    }
    // A cache that is not whole rows is a shape error.
    let mut odd = gpu.zeros::<u16>(kv_dim + 1).unwrap();
    let mut odd2 = gpu.zeros::<u16>(kv_dim + 1).unwrap();
    let (mut qd, mut kd) = (
        gpu.zeros::<f32>(ntok * nhead * head_dim).unwrap(),
        gpu.zeros::<f32>(ntok * kv_dim).unwrap(),
    );
    let vd = gpu.zeros::<f32>(ntok * kv_dim).unwrap();
    let p = RopeParams {
        n_rot: head_dim,
        freq_base: 10000.0,
        freq_scale: 1.0,
        neox: false,
        yarn: None,
    };
    let posd = gpu.upload(&pos).unwrap();
    let base = gpu.zeros::<i32>(pos.len()).unwrap();
    let at = CacheRows {
        pos: &posd,
        base: &base,
        n_ctx: 1,
    };
    assert!(gpu
        .rope_store_kv(&mut qd, &mut kd, &vd, &mut odd, &mut odd2, &at, &shape, &p)
        .is_err());
}

#[test]
fn fused_q8_1_outputs_equal_the_separate_kernels() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(8);
    let (ncols, nrows) = (576, 3);
    let n = ncols * nrows;
    let qbytes = strata_kernels_cuda::q8_1_bytes(ncols, nrows);

    // rms_norm_q8_1 = rms_norm, then quantize_q8_1 of its output.
    let x = randn(&mut r, n, 3.0);
    let w = randn(&mut r, ncols, 1.0);
    let (xd, wd) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
    let (mut y1, mut q1) = (
        gpu.zeros::<f32>(n).unwrap(),
        gpu.zeros::<u8>(qbytes).unwrap(),
    );
    gpu.rms_norm_q8_1(&xd, &wd, &mut y1, &mut q1, nrows, 1e-5)
        .unwrap();
    let (mut y2, mut q2) = (
        gpu.zeros::<f32>(n).unwrap(),
        gpu.zeros::<u8>(qbytes).unwrap(),
    );
    gpu.rms_norm(&xd, &wd, &mut y2, nrows, 1e-5).unwrap();
    gpu.quantize_q8_1(&y2, &mut q2, ncols, nrows).unwrap();
    assert_eq!(y1.to_host(&gpu).unwrap(), y2.to_host(&gpu).unwrap());
    assert_eq!(q1.to_host(&gpu).unwrap(), q2.to_host(&gpu).unwrap());

    // swiglu_q8_1 = swiglu, then quantize_q8_1 of its output.
    let (gate, up) = (randn(&mut r, n, 4.0), randn(&mut r, n, 2.0));
    let (gd, ud) = (gpu.upload(&gate).unwrap(), gpu.upload(&up).unwrap());
    gpu.swiglu_q8_1(&gd, &ud, &mut y1, &mut q1, ncols, nrows)
        .unwrap();
    gpu.swiglu(&gd, &ud, &mut y2, n).unwrap();
    gpu.quantize_q8_1(&y2, &mut q2, ncols, nrows).unwrap();
    assert_eq!(y1.to_host(&gpu).unwrap(), y2.to_host(&gpu).unwrap());
    assert_eq!(q1.to_host(&gpu).unwrap(), q2.to_host(&gpu).unwrap());

    // Widths that are not whole q8_1 blocks are shape errors.
    let w33 = gpu.zeros::<f32>(33).unwrap();
    assert!(gpu
        .rms_norm_q8_1(&xd, &w33, &mut y1, &mut q1, 1, 1e-5)
        .is_err());
    assert!(gpu.swiglu_q8_1(&gd, &ud, &mut y1, &mut q1, 33, 1).is_err());
}

#[test]
fn moe_route_matches_cpu_route() {
    let Some(gpu) = gpu() else { return };
    for case in route_cases() {
        let r = &case.router;
        let logits = gpu.upload(&case.logits).unwrap();
        let bias = case.bias.as_ref().map(|b| gpu.upload(b).unwrap());
        let n = case.ntok * r.n_used;
        let (mut ids, mut w) = (gpu.zeros::<u32>(n).unwrap(), gpu.zeros::<f32>(n).unwrap());
        gpu.moe_route(&logits, bias.as_ref(), r, case.ntok, &mut ids, &mut w)
            .unwrap();
        let (ids, w) = (ids.to_host(&gpu).unwrap(), w.to_host(&gpu).unwrap());
        check_route(&case, &ids, &w, false, "moe_route");
    }
}

/// The weighted sums `got` against the CPU's (weighted_sum_ref) on the same rows: k
/// products and sums a value on each side (the GPU may fuse them), so within
/// 2·(k + 1)·u·Σ|w·y|.
fn check_weighted_sum(
    got: &[f32],
    y: &[f32],
    rows: Option<&[u32]>,
    w: &[f32],
    (ncols, k, ntok): (usize, usize, usize),
) {
    let want = weighted_sum_ref(y, rows, w, (ncols, k, ntok));
    for t in 0..ntok {
        for c in 0..ncols {
            let mag: f64 = (0..k)
                .map(|j| {
                    let s = t * k + j;
                    let row = rows.map_or(s, |r| r[s] as usize);
                    f64::from(w[s]).abs() * f64::from(y[row * ncols + c]).abs()
                })
                .sum();
            let tol = 2.0 * (k + 1) as f64 * U * mag;
            let (g, h) = (got[t * ncols + c], want[t * ncols + c]);
            assert!(
                (f64::from(g) - f64::from(h)).abs() <= tol,
                "weighted sum token {t} col {c}: {g} vs {h} (tol {tol:e})"
            );
        }
    }
}

#[test]
fn matvec_experts_equal_matvec_on_the_chosen_experts() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(20);
    // Decode of two tokens, three experts each of six: the router on the GPU writes the ids
    // the expert kernels read. 37 rows: a last CTA with spare warps.
    let (n_expert, nrows, ncols, ntok, k) = (6, 37, 512, 2, 3);
    let router = Router {
        n_expert,
        n_used: k,
        gating: Gating::Softmax,
        norm: true,
        scale: 1.0,
        groups: None,
    };
    let logits: Vec<f32> = [
        0.5f32, -1.0, 2.0, 0.0, 1.5, -0.5, 1.0, 1.0, -2.0, 0.25, 3.0, -0.75,
    ]
    .into();
    let (mut ids_d, mut w_d) = (
        gpu.zeros::<u32>(ntok * k).unwrap(),
        gpu.zeros::<f32>(ntok * k).unwrap(),
    );
    gpu.moe_route(
        &gpu.upload(&logits).unwrap(),
        None,
        &router,
        ntok,
        &mut ids_d,
        &mut w_d,
    )
    .unwrap();
    let ids = ids_d.to_host(&gpu).unwrap();
    let stack = ExpertStack {
        n_expert,
        nrows,
        ncols,
    };
    for ty in GgmlType::WEIGHTS {
        let wbytes = weights(&mut r, ty, n_expert * nrows, ncols);
        let expert_bytes = wbytes.len() / n_expert;
        let w = gpu.upload(&wbytes).unwrap();
        // Gate/up: a token's slots share its x; down: each slot its own. Then an id past the
        // stack.
        let mut bad_ids = ids.clone();
        bad_ids[4] = n_expert as u32;
        let bad_d = gpu.upload(&bad_ids).unwrap();
        for (slot_ids, ids_dev, slots_per_x) in
            [(&ids, &ids_d, k), (&ids, &ids_d, 1), (&bad_ids, &bad_d, 1)]
        {
            let n_slot = ntok * k;
            let slots = ExpertSlots {
                n_slot,
                slots_per_x,
            };
            let nx = n_slot / slots_per_x;
            let x = randn(&mut r, nx * ncols, 1.0);
            let xd = gpu.upload(&x).unwrap();
            let mut xq = gpu.zeros::<u8>(q8_1_bytes(ncols, nx)).unwrap();
            let mut y = gpu.zeros::<f32>(n_slot * nrows).unwrap();
            gpu.matvec_experts(ty, &w, &stack, ids_dev, &xd, &mut xq, &mut y, &slots)
                .unwrap();
            let y = y.to_host(&gpu).unwrap();
            for (s, &id) in slot_ids.iter().enumerate() {
                let ys = &y[s * nrows..(s + 1) * nrows];
                if id as usize >= n_expert {
                    assert!(
                        ys.iter().all(|v| v.is_nan()),
                        "{ty} slot {s}: id {id} gives NaN"
                    );
                    continue;
                }
                // The dense kernel on that expert's matrix alone (checked against golden
                // above): the same kernel body, so the same bits.
                let e = id as usize;
                let we = gpu
                    .upload(&wbytes[e * expert_bytes..(e + 1) * expert_bytes])
                    .unwrap();
                let xv = gpu
                    .upload(&x[(s / slots_per_x) * ncols..][..ncols])
                    .unwrap();
                let mut yv = gpu.zeros::<f32>(nrows).unwrap();
                let mut xq1 = gpu.zeros::<u8>(q8_1_bytes(ncols, 1)).unwrap();
                gpu.matvec(ty, &we, &xv, &mut xq1, &mut yv, ncols, nrows, 1)
                    .unwrap();
                let want = yv.to_host(&gpu).unwrap();
                for (i, (&g, &h)) in ys.iter().zip(&want).enumerate() {
                    assert!(
                        same_bits(g, h),
                        "{ty} slot {s} (expert {e}) row {i}: {g:e} vs {h:e}"
                    );
                }
            }
            if slots_per_x == 1 && slot_ids == &ids {
                // The down projection's slots, weighted by the router and summed per token.
                let mut out = gpu.zeros::<f32>(ntok * nrows).unwrap();
                let yd = gpu.upload(&y).unwrap();
                gpu.moe_weighted_sum(&yd, None, &w_d, &mut out, nrows, k, ntok)
                    .unwrap();
                let wts = w_d.to_host(&gpu).unwrap();
                check_weighted_sum(
                    &out.to_host(&gpu).unwrap(),
                    &y,
                    None,
                    &wts,
                    (nrows, k, ntok),
                );
            }
        }
    }
}

#[test]
fn moe_prefill_sort_gather_grouped_matmul_and_sum_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(21);
    // 70 tokens, two choices each of six experts; every token's first choice is expert 0,
    // so that it has 70 rows (two token tiles of 64), the others about 14 each.
    let (n_expert, nrows, ncols, ntok, k) = (6, 130, 256, 70, 2);
    let mut ids = random_expert_ids(&mut r, ntok, k, n_expert);
    for t in 0..ntok {
        if ids[t * k + 1] == 0 {
            ids[t * k + 1] = ids[t * k];
        }
        ids[t * k] = 0;
    }
    let n = ntok * k;
    let ids_d = gpu.upload(&ids).unwrap();
    let (mut offsets, mut perm, mut inv) = (
        gpu.zeros::<u32>(n_expert + 1).unwrap(),
        gpu.zeros::<u32>(n).unwrap(),
        gpu.zeros::<u32>(n).unwrap(),
    );
    gpu.moe_sort(&ids_d, n, n_expert, &mut offsets, &mut perm, &mut inv)
        .unwrap();
    let (want_off, want_perm, want_inv) = sort_ref(&ids, n_expert);
    let off = offsets.to_host(&gpu).unwrap();
    assert_eq!(off, want_off, "moe_sort offsets");
    assert_eq!(perm.to_host(&gpu).unwrap(), want_perm, "moe_sort perm");
    assert_eq!(inv.to_host(&gpu).unwrap(), want_inv, "moe_sort inv");

    let x = randn(&mut r, ntok * ncols, 1.0);
    let mut xg = gpu.zeros::<f32>(n * ncols).unwrap();
    gpu.moe_gather(&gpu.upload(&x).unwrap(), &perm, &mut xg, ncols, n, k)
        .unwrap();
    let xg_host = xg.to_host(&gpu).unwrap();
    for (p, &s) in want_perm.iter().enumerate() {
        let want = &x[(s as usize / k) * ncols..][..ncols];
        assert_eq!(
            &xg_host[p * ncols..(p + 1) * ncols],
            want,
            "moe_gather row {p}"
        );
    }

    let stack = ExpertStack {
        n_expert,
        nrows,
        ncols,
    };
    let mut yg_last = Vec::new();
    for ty in GgmlType::WEIGHTS {
        let wbytes = weights(&mut r, ty, n_expert * nrows, ncols);
        let mut wf = vec![0.0f32; n_expert * nrows * ncols];
        dequantize(ty, &wbytes, &mut wf).unwrap();
        let w = gpu.upload(&wbytes).unwrap();
        let mut yg = gpu.zeros::<f32>(n * nrows).unwrap();
        gpu.matmul_experts(ty, &w, &stack, &offsets, &xg, &mut yg, n, ntok)
            .unwrap();
        let got = yg.to_host(&gpu).unwrap();
        for e in 0..n_expert {
            let (lo, hi) = (off[e] as usize, off[e + 1] as usize);
            check_f16_product(
                &format!("{ty} expert {e}"),
                &wf[e * nrows * ncols..(e + 1) * nrows * ncols],
                &xg_host[lo * ncols..hi * ncols],
                &got[lo * nrows..hi * nrows],
                (nrows, ncols, hi - lo),
            );
        }
        // A grid of one token tile: each CTA loops over its expert's tiles, same bits.
        let mut y1 = gpu.zeros::<f32>(n * nrows).unwrap();
        gpu.matmul_experts(ty, &w, &stack, &offsets, &xg, &mut y1, n, 1)
            .unwrap();
        assert_eq!(y1.to_host(&gpu).unwrap(), got, "{ty}: one token tile a CTA");
        yg_last = got;
    }

    // Back to the tokens: each token's two rows, weighted.
    let wts = randn(&mut r, n, 1.0);
    let mut out = gpu.zeros::<f32>(ntok * nrows).unwrap();
    gpu.moe_weighted_sum(
        &gpu.upload(&yg_last).unwrap(),
        Some(&inv),
        &gpu.upload(&wts).unwrap(),
        &mut out,
        nrows,
        k,
        ntok,
    )
    .unwrap();
    check_weighted_sum(
        &out.to_host(&gpu).unwrap(),
        &yg_last,
        Some(&want_inv),
        &wts,
        (nrows, k, ntok),
    );
}

#[test]
fn mla_attention_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    // Decode after 300 positions with DeepSeek-V2-Lite's 16 heads of 64 + 512; the most
    // heads (128); narrow rows, a batch with positions past the cache and at 0; rows and a
    // value part that are not whole warps.
    let cases = [
        MlaCase::new(31, (16, 576, 64), 320, vec![300]),
        MlaCase::new(32, (128, 576, 64), 40, vec![39]),
        MlaCase::new(33, (9, 48, 16), 50, vec![0, 100, 17]),
        MlaCase::new(34, (4, 100, 36), 10, vec![9]),
    ];
    for case in cases {
        let s = case.shape();
        let (q_pe, q_lat) = case.split_q();
        let (q_pe, q_lat) = (gpu.upload(&q_pe).unwrap(), gpu.upload(&q_lat).unwrap());
        let cache = gpu.upload(&case.cache_bits()).unwrap();
        let pos = gpu.upload(&case.pos).unwrap();
        let base = gpu.zeros::<i32>(case.pos.len()).unwrap();
        let at = CacheRows {
            pos: &pos,
            base: &base,
            n_ctx: case.cache.n_ctx(),
        };
        let dv = case.width - case.v_off;
        let mut out = gpu.zeros::<f32>(s.n_tokens * s.n_heads * dv).unwrap();
        gpu.mla_attention(&q_pe, &q_lat, &cache, case.width, &at, &mut out, &s)
            .unwrap();
        case.check(
            &out.to_host(&gpu).unwrap(),
            &format!("mla width {}", case.width),
        );
    }
}

#[test]
fn mla_cache_rows_and_query_split_match_cpu() {
    let Some(gpu) = gpu() else { return };
    // As the host check, with DeepSeek-V2-Lite's 16 heads.
    for (what, case) in MlaPrepCase::cases(16) {
        let (d, n_ctx) = (case.dims, case.n_ctx);
        let n = case.pos.len();
        let p = case.rope_params();
        let posd = gpu.upload(&case.pos).unwrap();
        let base = gpu.zeros::<i32>(n).unwrap();
        let at = CacheRows {
            pos: &posd,
            base: &base,
            n_ctx,
        };
        let mut cache = gpu.zeros::<u16>(n_ctx * (d.pe + d.kvr)).unwrap();
        let (kv, norm) = (
            gpu.upload(&case.kv).unwrap(),
            gpu.upload(&case.norm).unwrap(),
        );
        gpu.mla_store_latent(&kv, &norm, &mut cache, &at, n, &d, case.eps, &p)
            .unwrap();
        case.check_cache(&cache.to_host(&gpu).unwrap(), &what);
        let q = gpu.upload(&case.q).unwrap();
        let mut qn = gpu.zeros::<f32>(n * d.n_heads * d.nope).unwrap();
        let mut q_pe = gpu.zeros::<f32>(n * d.n_heads * d.pe).unwrap();
        gpu.mla_split_q(&q, &mut qn, &mut q_pe, &posd, n, &d, &p)
            .unwrap();
        case.check_split(
            &qn.to_host(&gpu).unwrap(),
            &q_pe.to_host(&gpu).unwrap(),
            &what,
        );
    }
}

#[test]
fn mla_transposed_absorption_matches_the_formula() {
    let Some(gpu) = gpu() else { return };
    // DeepSeek's widths over 3 tokens of 16 heads, and a slot count that is not whole tokens.
    let d = MlaDims {
        n_heads: 16,
        nope: 128,
        pe: 64,
        kvr: 512,
    };
    let types = [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for (i, ty) in types.into_iter().enumerate() {
        for n_slot in [48, 7] {
            let case = AbsorbCase::new(400 + i as u64, ty, d, n_slot);
            let (w, x) = (gpu.upload(&case.w).unwrap(), gpu.upload(&case.x).unwrap());
            let mut lat = gpu.zeros::<f32>(n_slot * d.kvr).unwrap();
            gpu.mla_absorb_t(ty, &w, &x, &mut lat, n_slot, &d).unwrap();
            case.check(&lat.to_host(&gpu).unwrap(), "mla_absorb_t");
        }
    }
}

#[test]
fn expert_matvec_takes_more_slots_than_one_grid_row() {
    let Some(gpu) = gpu() else { return };
    // 70 000 slots (past grid.y's 65 535, as the heads of a long MLA batch are): slot s is
    // head s mod 3's product with its own vector, each row exactly the dense matvec's.
    let mut r = rng(41);
    let stack = ExpertStack {
        n_expert: 3,
        nrows: 2,
        ncols: 32,
    };
    let n_slot = 70_000;
    let w = weights(
        &mut r,
        GgmlType::F32,
        stack.n_expert * stack.nrows,
        stack.ncols,
    );
    let x = randn(&mut r, n_slot * stack.ncols, 1.0);
    let ids: Vec<u32> = (0..n_slot as u32).map(|s| s % 3).collect();
    let (wd, idsd, xd) = (
        gpu.upload(&w).unwrap(),
        gpu.upload(&ids).unwrap(),
        gpu.upload(&x).unwrap(),
    );
    let mut xq = gpu.zeros::<u8>(1).unwrap();
    let mut y = gpu.zeros::<f32>(n_slot * stack.nrows).unwrap();
    let slots = ExpertSlots {
        n_slot,
        slots_per_x: 1,
    };
    gpu.matvec_experts(
        GgmlType::F32,
        &wd,
        &stack,
        &idsd,
        &xd,
        &mut xq,
        &mut y,
        &slots,
    )
    .unwrap();
    let got = y.to_host(&gpu).unwrap();
    let wf: Vec<f32> = w
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for s in [0, 1, 65_534, 65_535, 65_536, n_slot - 1] {
        let e = ids[s] as usize;
        for row in 0..stack.nrows {
            let wr = &wf[(e * stack.nrows + row) * stack.ncols..][..stack.ncols];
            let xr = &x[s * stack.ncols..][..stack.ncols];
            let (want, abs) = wr
                .iter()
                .zip(xr)
                .fold((0.0f64, 0.0f64), |(a, b), (&w, &x)| {
                    let t = f64::from(w) * f64::from(x);
                    (a + t, b + t.abs())
                });
            // A sum of 32 f32 products in some order: within (32 + 1)·u·Σ|w·x|.
            let g = f64::from(got[s * stack.nrows + row]);
            assert!(
                (g - want).abs() <= 33.0 * U * abs,
                "slot {s} row {row}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn moe_and_mla_bad_shapes_are_errors() {
    let Some(gpu) = gpu() else { return };
    let router = |n_expert, n_used, groups| Router {
        n_expert,
        n_used,
        gating: Gating::Softmax,
        norm: false,
        scale: 1.0,
        groups,
    };
    let logits = gpu.zeros::<f32>(600).unwrap();
    let (mut ids, mut w) = (gpu.zeros::<u32>(64).unwrap(), gpu.zeros::<f32>(64).unwrap());
    for (r, why) in [
        (router(257, 8, None), "n_expert"),
        (router(64, 33, None), "n_used"),
        (router(64, 0, None), "n_used"),
        (router(60, 8, Some((8, 4))), "groups"),
        (router(64, 8, Some((8, 0))), "groups"),
    ] {
        let e = gpu
            .moe_route(&logits, None, &r, 1, &mut ids, &mut w)
            .unwrap_err();
        assert!(e.to_string().contains(why), "{r:?}: {e}");
    }
    // Logits for 3 tokens of 256 experts: 768 values, 600 given.
    let e = gpu
        .moe_route(&logits, None, &router(256, 8, None), 3, &mut ids, &mut w)
        .unwrap_err();
    assert!(e.to_string().contains("logits"), "{e}");

    // An expert stack one byte short; too few ids.
    let stack = ExpertStack {
        n_expert: 4,
        nrows: 8,
        ncols: 32,
    };
    let slots = ExpertSlots {
        n_slot: 2,
        slots_per_x: 2,
    };
    let short = gpu.zeros::<u8>(4 * 8 * 18 - 1).unwrap();
    let x = gpu.zeros::<f32>(32).unwrap();
    let mut xq = gpu.zeros::<u8>(36).unwrap();
    let mut y = gpu.zeros::<f32>(16).unwrap();
    let e = gpu
        .matvec_experts(
            GgmlType::Q4_0,
            &short,
            &stack,
            &ids,
            &x,
            &mut xq,
            &mut y,
            &slots,
        )
        .unwrap_err();
    assert!(e.to_string().contains("w (bytes)"), "{e}");
    let w = gpu.zeros::<u8>(4 * 8 * 18).unwrap();
    let one_id = gpu.zeros::<u32>(1).unwrap();
    let e = gpu
        .matvec_experts(
            GgmlType::Q4_0,
            &w,
            &stack,
            &one_id,
            &x,
            &mut xq,
            &mut y,
            &slots,
        )
        .unwrap_err();
    assert!(e.to_string().contains("ids"), "{e}");
    let e = gpu
        .matmul_experts(GgmlType::Q4_0, &w, &stack, &one_id, &x, &mut y, 1, 1)
        .unwrap_err();
    assert!(e.to_string().contains("offsets"), "{e}");
    let (mut o, mut p, mut i) = (
        gpu.zeros::<u32>(300).unwrap(),
        gpu.zeros::<u32>(64).unwrap(),
        gpu.zeros::<u32>(64).unwrap(),
    );
    let e = gpu
        .moe_sort(&ids, 64, 257, &mut o, &mut p, &mut i)
        .unwrap_err();
    assert!(e.to_string().contains("n_expert"), "{e}");

    // MLA: rows wider than 576, a value offset outside the row, a cache of partial rows.
    let q = gpu.zeros::<f32>(4 * 600).unwrap();
    let cache = gpu.zeros::<u16>(577 * 2).unwrap();
    let pos = gpu.zeros::<i32>(1).unwrap();
    // One sequence from row 0 (the zeros serve as both arrays).
    let at = CacheRows {
        pos: &pos,
        base: &pos,
        n_ctx: 1,
    };
    let mut out = gpu.zeros::<f32>(4 * 600).unwrap();
    let shape = |v_off| MlaShape {
        n_tokens: 1,
        n_heads: 4,
        v_off,
        scale: 1.0,
    };
    for (width, v_off, why) in [
        (577, 64, "width"),
        (100, 100, "value offset"),
        (576, 64, "whole rows"),
    ] {
        let e = gpu
            .mla_attention(&q, &q, &cache, width, &at, &mut out, &shape(v_off))
            .unwrap_err();
        assert!(
            e.to_string().contains(why),
            "width {width} v_off {v_off}: {e}"
        );
    }
    // The steps before it: a cache of partial rows, n_rot past the rotary part, a query
    // part wider than mla_absorb_t stages, no tokens.
    let d = MlaDims {
        n_heads: 4,
        nope: 128,
        pe: 64,
        kvr: 512,
    };
    let rope = |n_rot| RopeParams {
        n_rot,
        freq_base: 10000.0,
        freq_scale: 1.0,
        neox: false,
        yarn: None,
    };
    let (kv, norm) = (
        gpu.zeros::<f32>(576).unwrap(),
        gpu.zeros::<f32>(512).unwrap(),
    );
    let mut odd = gpu.zeros::<u16>(577).unwrap();
    let e = gpu
        .mla_store_latent(&kv, &norm, &mut odd, &at, 1, &d, 1e-6, &rope(64))
        .unwrap_err();
    assert!(e.to_string().contains("whole rows"), "{e}");
    let mut c = gpu.zeros::<u16>(576).unwrap();
    let e = gpu
        .mla_store_latent(&kv, &norm, &mut c, &at, 1, &d, 1e-6, &rope(128))
        .unwrap_err();
    assert!(e.to_string().contains("n_rot"), "{e}");
    let e = gpu
        .mla_store_latent(&kv, &norm, &mut c, &at, 0, &d, 1e-6, &rope(64))
        .unwrap_err();
    assert!(e.to_string().contains("ntok"), "{e}");
    // Sequences longer than the cache.
    let long = CacheRows { n_ctx: 2, ..at };
    let e = gpu
        .mla_store_latent(&kv, &norm, &mut c, &long, 1, &d, 1e-6, &rope(64))
        .unwrap_err();
    assert!(e.to_string().contains("sequences of 2 positions"), "{e}");
    let wide = MlaDims { nope: 600, ..d };
    let (w, x) = (
        gpu.zeros::<u8>(4 * 600 * 512 * 2).unwrap(),
        gpu.zeros::<f32>(4 * 600).unwrap(),
    );
    let mut lat = gpu.zeros::<f32>(4 * 512).unwrap();
    let e = gpu
        .mla_absorb_t(GgmlType::F16, &w, &x, &mut lat, 4, &wide)
        .unwrap_err();
    assert!(e.to_string().contains("qk_nope"), "{e}");
}
