//! Each shape variant of the quantized matvec kernels (src/shapes.rs; build.rs compiles them
//! as modules `matvec_<name>`, cuda-bench times them) runs its own staging and lane loop on
//! the host (kernels-cuda/host-check/formats_check.cpp, built with the variant's macros) and
//! must give the product shape's bits: every row's lanes take the same units in the same
//! order whatever the warps per CTA, rows per warp or iterations in flight. Needs no GPU;
//! skipped where no C++ compiler is installed.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_dev_cuda::shapes::VARIANTS;
use strata_kernels_cpu::GgmlType;
use strata_tests::cuda_check::{build_host_checker, random_q8_1_case, run_host_checker, same_bits};

#[test]
fn matvec_shapes_give_the_product_bits_on_the_host() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_host_check_shapes");
    // The product's shape: the header's defaults, no macros.
    let Some(product) = build_host_checker(&dir, "formats_check_product", &[]) else {
        return;
    };
    let mut exes = Vec::new();
    for v in VARIANTS {
        let Some(exe) =
            build_host_checker(&dir, &format!("formats_check_{}", v.name), &v.defines())
        else {
            return;
        };
        exes.push(exe);
    }
    for ty in GgmlType::WEIGHTS {
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            continue;
        }
        // Lanes take 5–6 units (171 legacy blocks; 21 K-quant super-blocks = 84 units: 2–3),
        // so unrolled loops of 4 run whole and partly; 7 rows end in a partial row group.
        let cols = if ty.block_size() == 32 {
            171 * 32
        } else {
            21 * 256
        };
        let rows = 7;
        let mut r = ChaCha8Rng::seed_from_u64(100 + ty.id() as u64);
        let (w, xq) = random_q8_1_case(&mut r, ty, rows, cols);
        let (_, want) = run_host_checker(&product, &dir, ty, rows, cols, &w, &xq);
        assert_eq!(want.len(), rows);
        for (v, exe) in VARIANTS.iter().zip(&exes) {
            let (_, y) = run_host_checker(exe, &dir, ty, rows, cols, &w, &xq);
            let same = y.len() == want.len() && y.iter().zip(&want).all(|(a, b)| same_bits(*a, *b));
            assert!(
                same,
                "{ty} shape {}: {y:?} vs the product's {want:?}",
                v.name
            );
        }
    }
}
