// The bodies of matvec.cu's kernels, as device functions: matvec.cu wraps each in its
// kernel, matvec_experts.cu in one that first picks an expert's matrix (matvec_vec_<fmt>,
// one vector's pointers), and dev/cuda's trial kernels wrap the very same body in other
// launch steps (an L2 prefetch, programmatic dependent launch), so a trial changes only what
// it is about.
#pragma once
#include "matvec_lane.cuh"

// The xblocks of the CTA's vector (launch: ncols / 32 · 48 bytes of dynamic shared memory).
#ifdef STRATA_HOST_CHECK
extern uint4 matvec_x_words[];  // the host checker's array (host-check/host_shim.hpp)
#else
extern __shared__ uint4 matvec_x_words[];
#endif

// Quantized weights, one CTA: W: [nrows, ncols] in the format; x: [.., ncols/32] q8_1, of
// which it multiplies vector xv; y: [.., nrows], of which it writes vector yv
// (matvec_body_<fmt>: both blockIdx.y; matvec_experts.cu: an expert's matrix and a slot's
// vectors).
#define MATVEC_QUANT_BODY(name, qk, bytes)                                                     \
    __device__ __forceinline__ void matvec_vec_##name(                                         \
        const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,                       \
        float* __restrict__ y, int ncols, int nrows, int64_t xv, int64_t yv) {                 \
        const int nsub = ncols / 32;                                                           \
        xblock* xs = (xblock*)matvec_x_words;                                                  \
        const int lane = threadIdx.x % WARP_SIZE;                                              \
        const int row = (blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE) * MV_RPW(qk);        \
        mv_stage_##name(xs, x + xv * nsub, nsub, threadIdx.x, MV_THREADS);                     \
        __syncthreads();                                                                       \
        if (row >= nrows) return;                                                              \
        float acc[MV_RPW(qk)];                                                                 \
        mv_lane_##name(w, xs, ncols, nrows, row, lane, acc);                                   \
        _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) {                               \
            const float v = warp_sum(acc[r]);                                                  \
            if (lane == 0 && row + r < nrows) y[yv * nrows + row + r] = v;                     \
        }                                                                                      \
    }                                                                                          \
    /* W: [nrows, ncols]; x: [nvec, ncols/32] q8_1 (vector blockIdx.y); y: [nvec, nrows]. */   \
    __device__ __forceinline__ void matvec_body_##name(                                        \
        const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,                       \
        float* __restrict__ y, int ncols, int nrows) {                                         \
        matvec_vec_##name(w, x, y, ncols, nrows, blockIdx.y, blockIdx.y);                      \
    }
FOR_EACH_QUANT(MATVEC_QUANT_BODY)

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

// Float weights, row blockIdx.x: W: [nrows, ncols]; x: [.., ncols] f32, of which it
// multiplies vector xv; y: [.., nrows], of which it writes vector yv (matvec_body_<fmt>:
// both blockIdx.y).
#define MATVEC_FLOAT_BODY(name, one, bytes)                                                    \
    __device__ __forceinline__ void matvec_vec_##name(                                         \
        const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,     \
        int ncols, int nrows, int64_t xv, int64_t yv) {                                        \
        const int row = blockIdx.x;                                                            \
        if (row >= nrows) return;                                                              \
        const uint8_t* wrow = w + (int64_t)row * ncols * bytes;                                \
        const float* xr = x + xv * ncols;                                                      \
        float acc = 0.0f;                                                                      \
        _Pragma("unroll 4") for (int c = 4 * threadIdx.x; c < ncols; c += 4 * MV_FLOAT_THREADS) {\
            acc += dot4_##name(wrow + (int64_t)c * bytes, *(const float4*)(xr + c));           \
        }                                                                                      \
        store_row_sum(acc, y + yv * nrows + row);                                              \
    }                                                                                          \
    __device__ __forceinline__ void matvec_body_##name(                                        \
        const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,     \
        int ncols, int nrows) {                                                                \
        matvec_vec_##name(w, x, y, ncols, nrows, blockIdx.y, blockIdx.y);                      \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT_BODY)
