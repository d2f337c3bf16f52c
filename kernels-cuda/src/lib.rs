//! Strata's GPU side: CUDA C kernels compiled to PTX at build time, launched with cudarc.
