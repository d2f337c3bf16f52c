// The product's matvec kernels (kernels-cuda/kernels/matvec_body.cuh, the same bodies) with
// two launch-side trials around them, neither yet measured on a GPU:
//
// `prefetch` (bytes, 0 = off): before anything else, each warp (float kernels: each CTA)
// asks L2 for the first `prefetch` bytes of each of its rows, one request per 128-byte line,
// so that DRAM starts on the weights while the CTA stages x and waits at its barrier, and a
// lane's first loads find their lines on the way. The results do not depend on it.
//
// Programmatic dependent launch (sm_90 and later; dev/cuda/build.rs compiles this file for
// compute_90 as module `matvec_trial_sm90`): a matvec launched with the
// programmatic-serialization attribute may start while the kernel before it in the stream is
// still finishing. Every kernel here lets its dependents start at once (they can only take
// SM slots its own CTAs have left: all of its CTAs must have started), does what needs
// nothing of the kernel before it (the weights' prefetch), and then waits for that kernel to
// complete, with its writes visible, before it reads x or writes y. So a chain of matvecs
// overlaps one's tail with the next one's start-up, the fixed cost of 4–6 µs a launch
// measured on an H100 (docs/gpu-results.md, run 2). In the compute_80 module, and in any
// launch without the attribute, both steps do nothing.
#include "matvec_body.cuh"

__device__ __forceinline__ void let_dependents_start() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_prerequisites() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Asks L2 for the lines of bytes [p, p + n), `lanes` threads sharing the requests (this
// thread is number `t` of them).
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, int n, int t, int lanes) {
    const uint64_t end = (uint64_t)p + n;
    for (uint64_t a = ((uint64_t)p & ~(uint64_t)127) + 128 * t; a < end; a += 128 * lanes) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
    }
}

#define MATVEC_QUANT_TRIAL(name, qk, bytes)                                                    \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        matvec_##name(const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,         \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {             \
        const int lane = threadIdx.x % WARP_SIZE;                                              \
        const int row = (blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE) * MV_RPW(qk);        \
        const int row_bytes = ncols / 32 / MV_SUBS(qk) * bytes;                                \
        let_dependents_start();                                                                \
        if (prefetch > 0) {                                                                    \
            _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) if (row + r < nrows)        \
                prefetch_l2(w + (int64_t)(row + r) * row_bytes, min(prefetch, row_bytes),     \
                            lane, WARP_SIZE);                                                  \
        }                                                                                      \
        wait_for_prerequisites();                                                              \
        matvec_body_##name(w, x, y, ncols, nrows);                                             \
    }
FOR_EACH_QUANT(MATVEC_QUANT_TRIAL)

#define MATVEC_FLOAT_TRIAL(name, one, bytes)                                                   \
    extern "C" __global__ void __launch_bounds__(MV_FLOAT_THREADS)                             \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {             \
        const int row = blockIdx.x;                                                            \
        let_dependents_start();                                                                \
        if (prefetch > 0 && row < nrows)                                                       \
            prefetch_l2(w + (int64_t)row * ncols * bytes, min(prefetch, ncols * bytes),        \
                        threadIdx.x, MV_FLOAT_THREADS);                                        \
        wait_for_prerequisites();                                                              \
        matvec_body_##name(w, x, y, ncols, nrows);                                             \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT_TRIAL)
