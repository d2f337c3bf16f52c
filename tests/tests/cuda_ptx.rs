//! Every embedded PTX module through `ptxas -v` for sm_80 and sm_90: fails on any ptxas error
//! or register spill, prints the register count of every kernel (`cuda_check::ptxas_check`,
//! which dev/cuda's tests run over its trial modules too). Needs no GPU, only the `ptxas`
//! that `scripts/fetch-cuda.sh` unpacks into `.cuda/` (or a CUDA toolkit's).

use std::path::PathBuf;

use strata_kernels_cuda::ptx;
use strata_tests::cuda_check::{parse_ptxas_report, ptxas_check};

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_without_spills() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_ptx");
    ptxas_check(ptx::MODULES, &dir, "registers.md");
}

#[test]
fn parser_reads_a_ptxas_report() {
    let report = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
        ptxas info    : Function properties for k\n\
        \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
        ptxas info    : Used 40 registers, used 0 barriers, 368 bytes cmem[0]\n";
    let k = parse_ptxas_report(report);
    assert_eq!(k.len(), 1);
    assert_eq!((k[0].name.as_str(), k[0].registers), ("k", 40));
    assert_eq!(
        (k[0].stack, k[0].spill_stores, k[0].spill_loads),
        (8, 4, 12)
    );
}
