//! Every trial kernel gives the product kernel's bits, on a GPU (without one each test prints
//! "skipped: no CUDA device (why)" and passes): the shape variants, the L2 prefetch, and
//! programmatic dependent launch (sm_90 and later, in a chain and in a CUDA graph); the
//! probe kernels read what they are given; and cuBLAS's f16 GEMM, the prefill alternative
//! cuda-bench times, is as close to the exact product as the product's `matmul` must be.

use rand::Rng;
use strata_dev_cuda::blas::{Blas, BlasError};
use strata_dev_cuda::probe::{empty_kernel, read_probe_sums, read_words};
use strata_dev_cuda::{pdl_unsupported, shapes, Matvec};
use strata_kernels_cpu::{dequantize, GgmlType};
use strata_kernels_cuda::{q8_1_bytes, Gpu};
use strata_tests::cuda_check::{check_f16_product, gpu, randn, rng, weights};

/// For every weight format, y = W·x of random W and x (`rows × cols`, `nvec` vectors) by each
/// of `launches`: each must give the product kernel's bits.
fn same_bits_as_the_product(
    gpu: &Gpu,
    seed: u64,
    (rows, cols, nvec): (usize, usize, usize),
    launches: &[Matvec],
) {
    let mut r = rng(seed);
    for ty in GgmlType::WEIGHTS {
        let w = gpu.upload(&weights(&mut r, ty, rows, cols)).unwrap();
        let x = gpu.upload(&randn(&mut r, cols * nvec, 1.0)).unwrap();
        let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, nvec)).unwrap();
        let mut run = |m: Matvec| {
            let mut y = gpu.zeros::<f32>(rows * nvec).unwrap();
            m.run(gpu, ty, &w, &x, &mut xq, &mut y, (cols, rows, nvec))
                .unwrap();
            y.to_host(gpu).unwrap()
        };
        let product = run(Matvec::Product);
        for &m in launches {
            assert_eq!(run(m), product, "{ty} {m:?}");
        }
    }
}

#[test]
fn matvec_prefetch_changes_no_bit() {
    let Some(gpu) = gpu() else { return };
    // 37 rows: a last CTA with spare warps (and, for the 2-rows-a-warp formats, a warp with
    // one row past the end, which must not prefetch it). Prefetch of part of a row (not a
    // whole number of lines), and of more than a row.
    let launches: Vec<Matvec> = [0, 200, 1 << 20]
        .map(|prefetch| Matvec::Trial {
            prefetch,
            pdl: false,
        })
        .to_vec();
    same_bits_as_the_product(&gpu, 12, (37, 512, 2), &launches);
}

#[test]
fn matvec_shapes_change_no_bit() {
    let Some(gpu) = gpu() else { return };
    // Every lane takes 2–6 units (168 legacy blocks, 21 K-quant super-blocks = 84 units), so
    // unrolled loops run whole and partial; 37 rows leave spare warps and partial row groups
    // of 2 and 4; 2 vectors.
    let launches: Vec<Matvec> = shapes::VARIANTS.iter().map(Matvec::Shape).collect();
    same_bits_as_the_product(&gpu, 15, (37, 5376, 2), &launches);
}

#[test]
fn matvec_pdl_changes_no_bit() {
    let Some(gpu) = gpu() else { return };
    let pdl = Matvec::Trial {
        prefetch: 0,
        pdl: true,
    };
    let mut r = rng(13);
    // A chain in which each matvec reads what the one before it wrote, so that a kernel
    // reading x before its prerequisite finished would show: y1 = W1·x (the format), y2 =
    // W2·y1 (f32, launched right behind W1's kernel), y3 = W3·y2 (the format again). 40 rows
    // (f32 takes columns in fours), a last CTA with spare warps.
    let (rows, cols, nvec) = (40, 512, 2);
    let w2 = gpu
        .upload(&weights(&mut r, GgmlType::F32, cols, rows))
        .unwrap();
    for ty in GgmlType::WEIGHTS {
        let w1 = gpu.upload(&weights(&mut r, ty, rows, cols)).unwrap();
        let w3 = gpu.upload(&weights(&mut r, ty, rows, cols)).unwrap();
        let x = gpu.upload(&randn(&mut r, cols * nvec, 1.0)).unwrap();
        if let Some(why) = pdl_unsupported(&gpu) {
            let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, nvec)).unwrap();
            let mut y = gpu.zeros::<f32>(rows * nvec).unwrap();
            let e = pdl.run(&gpu, ty, &w1, &x, &mut xq, &mut y, (cols, rows, nvec));
            assert!(e.is_err(), "{ty}: a PDL launch accepted where {why}");
            println!("skipped: {why}");
            return;
        }
        let mut results = Vec::new();
        for (m, graph) in [(Matvec::Product, false), (pdl, false), (pdl, true)] {
            let mut xq = gpu.zeros::<u8>(q8_1_bytes(cols, nvec)).unwrap();
            let mut y1 = gpu.zeros::<f32>(rows * nvec).unwrap();
            let mut y2 = gpu.zeros::<f32>(cols * nvec).unwrap();
            let mut y3 = gpu.zeros::<f32>(rows * nvec).unwrap();
            let mut chain = || {
                m.run(&gpu, ty, &w1, &x, &mut xq, &mut y1, (cols, rows, nvec))?;
                let f32_dims = (rows, cols, nvec);
                m.run(&gpu, GgmlType::F32, &w2, &y1, &mut xq, &mut y2, f32_dims)?;
                m.run(&gpu, ty, &w3, &y2, &mut xq, &mut y3, (cols, rows, nvec))
            };
            if graph {
                // Eager runs came first: the module is loaded before the capture.
                gpu.capture(chain).unwrap().launch().unwrap();
            } else {
                chain().unwrap();
            }
            results.push((y1.to_host(&gpu).unwrap(), y3.to_host(&gpu).unwrap()));
        }
        assert!(results[0].1.iter().any(|&v| v != 0.0), "{ty}: y3 all zero");
        assert_eq!(results[1], results[0], "{ty}: PDL launches");
        assert_eq!(results[2], results[0], "{ty}: PDL launches in a CUDA graph");
    }
}

#[test]
fn read_probe_sums_every_word() {
    let Some(gpu) = gpu() else { return };
    let mut r = rng(13);
    // Not a whole number of CTAs (16 KiB each): the last CTA reads a partial span.
    for words in [1usize, 1000, 4096 * 3 + 17] {
        let bytes: Vec<u8> = (0..words * 16).map(|_| r.random()).collect();
        let want = bytes.chunks_exact(4).fold(0u32, |a, c| {
            a.wrapping_add(u32::from_le_bytes(c.try_into().unwrap()))
        });
        let data = gpu.upload(&bytes).unwrap();
        let mut sums = gpu.zeros::<u32>(read_probe_sums(bytes.len())).unwrap();
        read_words(&gpu, &data, &mut sums).unwrap();
        let got = sums
            .to_host(&gpu)
            .unwrap()
            .into_iter()
            .fold(0u32, u32::wrapping_add);
        assert_eq!(got, want, "{words} words");
    }
    let odd = gpu.zeros::<u8>(24).unwrap();
    let mut sums = gpu.zeros::<u32>(8).unwrap();
    let e = read_words(&gpu, &odd, &mut sums).unwrap_err();
    assert!(e.to_string().contains("24 bytes"), "{e}");
    empty_kernel(&gpu).unwrap();
    gpu.synchronize().unwrap();
}

#[test]
fn cublas_f16_gemm_matches_dequantized_product() {
    let Some(gpu) = gpu() else { return };
    // W and x made f16 by the product's dequantize kernels (x through F32's), then cuBLAS's
    // f16 GEMM with f32 sums: what cuda-bench times beside `matmul`.
    let blas = match Blas::new(&gpu) {
        Ok(b) => b,
        Err(BlasError::Missing(why)) => {
            println!("note: the cuBLAS path is not checked here: {why}");
            return;
        }
        Err(e) => panic!("cuBLAS is installed but failed: {e}"),
    };
    let mut r = rng(3);
    // 70 tokens and 130 rows cross tile edges (64); 512 columns are 16 k-steps.
    let (rows, cols, ntok) = (130, 512, 70);
    for ty in GgmlType::WEIGHTS {
        let wbytes = weights(&mut r, ty, rows, cols);
        let x = randn(&mut r, cols * ntok, 1.0);
        let w = gpu.upload(&wbytes).unwrap();
        let xbytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let xb = gpu.upload(&xbytes).unwrap();
        let mut w16 = gpu.zeros::<u16>(rows * cols).unwrap();
        let mut x16 = gpu.zeros::<u16>(cols * ntok).unwrap();
        gpu.dequantize_to_f16(ty, &w, &mut w16, rows * cols)
            .unwrap();
        gpu.dequantize_to_f16(GgmlType::F32, &xb, &mut x16, cols * ntok)
            .unwrap();
        let mut y = gpu.zeros::<f32>(rows * ntok).unwrap();
        blas.gemm_f16(&gpu, &w16, &x16, &mut y, cols, rows, ntok)
            .unwrap();
        let mut wf = vec![0.0f32; rows * cols];
        dequantize(ty, &wbytes, &mut wf).unwrap();
        let got = y.to_host(&gpu).unwrap();
        check_f16_product(&format!("cuBLAS {ty}"), &wf, &x, &got, (rows, cols, ntok));
    }
}
