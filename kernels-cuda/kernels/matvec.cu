// Matrix × vector for decode: y[r] = Σ_c W[r, c]·x[c] for every weight format.
//
// Quantized weights read q8_1 activations (quantize.cu) and multiply with dp4a. The unit of
// work is 32 weights against one q8_1 block ("a sub-block"); the 128 threads of a CTA stride
// over the sub-blocks of one row, so neighbouring threads read neighbouring weight bytes.
// Float weights read f32 activations.
//
// Batched: gridDim.y vectors share the launch (x and y advance by one row per vector), which
// serves small batches; large batches go to matmul.cu.
#include "formats.cuh"

#define MATVEC_THREADS 128

// Sum of the CTA's partial sums, written by thread 0.
__device__ __forceinline__ void store_row_sum(float v, float* y) {
    __shared__ float scratch[32];
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) *y = v;
}

// W: [nrows, ncols] in the format; x: [nvec, ncols/32] q8_1; y: [nvec, nrows].
#define MATVEC_QUANT(name, qk, bytes)                                                          \
    extern "C" __global__ void __launch_bounds__(MATVEC_THREADS)                              \
        matvec_##name(const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,         \
                      float* __restrict__ y, int ncols, int nrows) {                          \
        const int row = blockIdx.x;                                                            \
        if (row >= nrows) return;                                                              \
        const int nsub = ncols / 32;                                                           \
        const uint8_t* wrow = w + (int64_t)row * (ncols / qk) * bytes;                         \
        const block_q8_1* xv = x + (int64_t)blockIdx.y * nsub;                                 \
        float acc = 0.0f;                                                                      \
        for (int i = threadIdx.x; i < nsub; i += MATVEC_THREADS) {                             \
            acc += dot_##name(wrow + (i / (qk / 32)) * bytes, i % (qk / 32), xv + i);          \
        }                                                                                      \
        store_row_sum(acc, y + (int64_t)blockIdx.y * nrows + row);                             \
    }
FOR_EACH_QUANT(MATVEC_QUANT)

// Float weights: each thread takes 4 consecutive weights at a time (one 16-byte load for
// f32, one 8-byte load for f16/bf16). ncols must be a multiple of 4 and rows aligned to it.
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
    extern "C" __global__ void __launch_bounds__(MATVEC_THREADS)                              \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows) {                          \
        const int row = blockIdx.x;                                                            \
        if (row >= nrows) return;                                                              \
        const uint8_t* wrow = w + (int64_t)row * ncols * bytes;                                \
        const float* xv = x + (int64_t)blockIdx.y * ncols;                                     \
        float acc = 0.0f;                                                                      \
        _Pragma("unroll 4") for (int c = 4 * threadIdx.x; c < ncols; c += 4 * MATVEC_THREADS) {\
            acc += dot4_##name(wrow + (int64_t)c * bytes, *(const float4*)(xv + c));           \
        }                                                                                      \
        store_row_sum(acc, y + (int64_t)blockIdx.y * nrows + row);                             \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT)
