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

// f32 → f16 (round to nearest even), e.g. new keys and values into an f16 KV cache.
extern "C" __global__ void convert_f32_to_f16(const float* __restrict__ src,
                                              uint16_t* __restrict__ dst, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = f32_to_f16(src[i]);
}
