// Matrix × vector for decode: y[r] = Σ_c W[r, c]·x[c] for every weight format.
//
// Quantized weights read q8_1 activations (quantize.cu) and multiply with dp4a through
// formats.cuh's dot_<fmt> (one unit — a legacy block, or a pair of K-quant sub-blocks that
// share bytes — against its blocks of x). One warp takes MV_RPW rows (lane i takes units
// i, i + 32, …), MV_WARPS warps per CTA, a warp-shuffle
// sum per row (no block barrier in the reduction). The CTA first makes its vector's xblocks
// in shared memory (formats.cuh: 48 bytes each, 16-byte aligned, d and s as f32, the half
// sums made once; one barrier), in the order the lanes take them (matvec_lane.cuh); the lanes
// read them there with 128-bit loads (a lane's block is 48 bytes after its neighbour's: each
// quarter-warp's eight 16-byte reads fall in distinct banks), and the rows of a warp share
// each read.
//
// Load instructions per weight byte are what this design minimises: on an H100 (docs/
// gpu-results.md, run 2) the formats' marginal read rates fell in the order of the loads
// (global and shared, counted in the SASS by scripts/sass-loads.sh) the kernels then issued
// per weight byte of a row — Q5_1/Q4_1 0.44–0.48 at ~107% of the copy bandwidth, Q8_0/Q5_0/
// Q4_0 0.63–0.75 at 91–98%, Q4_K/Q5_K/Q6_K 1.3–1.7 at 71–75%, Q2_K 2.0 at 61%, Q3_K 3.5 at
// 45% — and a version that moved W's 16-bit loads from global to shared memory (as many
// loads) was no faster. Now 0.19–0.42 for the legacy formats, Q4_K/Q5_K 0.25, Q6_K 0.51,
// Q2_K 0.76, Q3_K 1.05 (not yet measured on a GPU). Shapes measured no faster there: one
// 128-thread CTA per row, 4 warps per CTA.
//
// Batched: gridDim.y vectors share the launch (x and y advance by one vector each), which
// serves small batches; large batches go to matmul.cu.
//
// `prefetch` (bytes, 0 = off): before anything else, each warp (float kernels: each CTA)
// asks L2 for the first `prefetch` bytes of each of its rows, one request per 128-byte line,
// so that DRAM starts on the weights while the CTA stages x and waits at its barrier, and a
// lane's first loads find their lines on the way. The results do not depend on it.
//
// Programmatic dependent launch (sm_90 and later; build.rs compiles this file a second time
// for compute_90 as module `matvec_sm90`, which `Gpu::set_matvec_pdl` selects): a matvec
// launched with the programmatic-serialization attribute may start while the kernel before
// it in the stream is still finishing. Every kernel here lets its dependents start at once
// (they can only take SM slots its own CTAs have left: all of its CTAs must have started),
// does what needs nothing of the kernel before it (the weights' prefetch), and then waits
// for that kernel to complete, with its writes visible, before it reads x or writes y. So a
// chain of matvecs overlaps one's tail with the next one's start-up, the fixed cost that run
// 2 measured at 4–6 µs a launch. In the compute_80 module, and in any launch without the
// attribute, both steps do nothing.
#include "matvec_lane.cuh"

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

// The xblocks of the CTA's vector (launch: ncols / 32 · 48 bytes of dynamic shared memory).
extern __shared__ uint4 matvec_x_words[];

// W: [nrows, ncols] in the format; x: [nvec, ncols/32] q8_1; y: [nvec, nrows].
#define MATVEC_QUANT(name, qk, bytes)                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        matvec_##name(const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,         \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {             \
        const int nsub = ncols / 32;                                                           \
        xblock* xs = (xblock*)matvec_x_words;                                                  \
        const int lane = threadIdx.x % WARP_SIZE;                                              \
        const int row = (blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE) * MV_RPW(qk);        \
        const int row_bytes = nsub / MV_SUBS(qk) * bytes;                                      \
        let_dependents_start();                                                                \
        if (prefetch > 0) {                                                                    \
            _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) if (row + r < nrows)        \
                prefetch_l2(w + (int64_t)(row + r) * row_bytes, min(prefetch, row_bytes),     \
                            lane, WARP_SIZE);                                                  \
        }                                                                                      \
        wait_for_prerequisites();                                                              \
        mv_stage_##name(xs, x + (int64_t)blockIdx.y * nsub, nsub, threadIdx.x, MV_THREADS);    \
        __syncthreads();                                                                       \
        if (row >= nrows) return;                                                              \
        float acc[MV_RPW(qk)];                                                                 \
        mv_lane_##name(w, xs, ncols, nrows, row, lane, acc);                                   \
        _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) {                               \
            const float v = warp_sum(acc[r]);                                                  \
            if (lane == 0 && row + r < nrows) y[(int64_t)blockIdx.y * nrows + row + r] = v;    \
        }                                                                                      \
    }
FOR_EACH_QUANT(MATVEC_QUANT)

// Float weights: one CTA of MV_FLOAT_THREADS per row (measured faster on an H100 than a warp
// per row: 71% vs 66% of copy bandwidth for F16 at 4096 × 4096, 94% vs 92% at 14336 × 4096);
// each thread takes 4 consecutive weights at a time (one 16-byte load for f32, one 8-byte
// load for f16/bf16). ncols is a multiple of 4 and W, x are whole allocations, so every
// row of W and every vector of x is aligned for those loads.
#define MV_FLOAT_THREADS 128

// Sum of the CTA's partial sums, written by thread 0.
__device__ __forceinline__ void store_row_sum(float v, float* y) {
    __shared__ float scratch[32];
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) *y = v;
}

__device__ __forceinline__ float dot4_f32(const uint8_t* w, const float4 xv) {
    const float4 v = *(const float4*)w;
    return v.x * xv.x + v.y * xv.y + v.z * xv.z + v.w * xv.w;
}
__device__ __forceinline__ float dot4_f16(const uint8_t* w, const float4 xv) {
    const uint2 v = *(const uint2*)w;
    return f16_to_f32(v.x & 0xFFFF) * xv.x + f16_to_f32(v.x >> 16) * xv.y +
           f16_to_f32(v.y & 0xFFFF) * xv.z + f16_to_f32(v.y >> 16) * xv.w;
}
__device__ __forceinline__ float dot4_bf16(const uint8_t* w, const float4 xv) {
    const uint2 v = *(const uint2*)w;
    return __uint_as_float(v.x << 16) * xv.x + __uint_as_float(v.x & 0xFFFF0000u) * xv.y +
           __uint_as_float(v.y << 16) * xv.z + __uint_as_float(v.y & 0xFFFF0000u) * xv.w;
}

// W: [nrows, ncols]; x: [nvec, ncols] f32; y: [nvec, nrows].
#define MATVEC_FLOAT(name, one, bytes)                                                         \
    extern "C" __global__ void __launch_bounds__(MV_FLOAT_THREADS)                              \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {            \
        const int row = blockIdx.x;                                                            \
        let_dependents_start();                                                                \
        if (row >= nrows) return;                                                              \
        const uint8_t* wrow = w + (int64_t)row * ncols * bytes;                                \
        if (prefetch > 0)                                                                      \
            prefetch_l2(wrow, min(prefetch, ncols * bytes), threadIdx.x, MV_FLOAT_THREADS);    \
        wait_for_prerequisites();                                                              \
        const float* xv = x + (int64_t)blockIdx.y * ncols;                                     \
        float acc = 0.0f;                                                                      \
        _Pragma("unroll 4") for (int c = 4 * threadIdx.x; c < ncols; c += 4 * MV_FLOAT_THREADS) {\
            acc += dot4_##name(wrow + (int64_t)c * bytes, *(const float4*)(xv + c));           \
        }                                                                                      \
        store_row_sum(acc, y + (int64_t)blockIdx.y * nrows + row);                             \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT)
