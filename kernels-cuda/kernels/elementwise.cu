// Elementwise ops over n f32 values, one thread per element.
#include "common.cuh"

// a[i] += b[i mod period]: a plain sum with period = n, a bias added to every row of
// `period` values otherwise.
extern "C" __global__ void add(float* a, const float* __restrict__ b, int64_t n,
                               int64_t period) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i % period];
}

// out = silu(gate) · up, silu(g) = g / (1 + e^−g).
extern "C" __global__ void swiglu(const float* __restrict__ gate, const float* __restrict__ up,
                                  float* out, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// SwiGLU and the q8_1 quantization of its output in one pass: out exactly as swiglu writes
// it, outq exactly what quantize_q8_1 makes of out. [nrows, ncols], ncols a multiple of 32;
// one warp per 32-value block (grid and block as quantize_q8_1's).
extern "C" __global__ void swiglu_q8_1(const float* __restrict__ gate,
                                       const float* __restrict__ up, float* out,
                                       block_q8_1* __restrict__ outq, int ncols, int nrows) {
    const int64_t b = q8_1_warp_block(ncols, nrows);
    if (b < 0) return;
    const int lane = threadIdx.x % WARP_SIZE;
    const int64_t i = b * QK8_1 + lane;
    const float g = gate[i];
    const float v = g / (1.0f + expf(-g)) * up[i];
    out[i] = v;
    quantize_q8_1_warp(v, lane, outq + b);
}
