//! dev/cuda's trial modules through `ptxas -v` for sm_80 and sm_90, as tests/tests/cuda_ptx.rs
//! does the product's: no ptxas error, no register spill (a variant that spills is not worth
//! timing). Needs no GPU. The PTX and the register table go beside the product's, where
//! scripts/sass-loads.sh finds them.

use std::path::PathBuf;

use strata_tests::cuda_check::ptxas_check;

#[test]
fn every_trial_kernel_compiles_for_sm80_and_sm90_without_spills() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_ptx");
    ptxas_check(strata_dev_cuda::MODULES, &dir, "registers-dev.md");
}
