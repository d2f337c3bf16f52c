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

// Rows of `row_len` f32 to f16 bits (round to nearest even) at the rows pos[t] of `dst`
// (n_ctx rows): new keys or values into an f16 KV cache at their positions, read from
// device memory so a captured decode step replays at any position. A position outside
// 0 … n_ctx − 1 writes nothing.
extern "C" __global__ void store_rows_f16(const float* __restrict__ src,
                                          uint16_t* __restrict__ dst,
                                          const int* __restrict__ pos, int64_t row_len,
                                          int ntok, int n_ctx) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= row_len * ntok) return;
    const int t = (int)(i / row_len);
    const int p = pos[t];
    if (p < 0 || p >= n_ctx) return;
    dst[(int64_t)p * row_len + i % row_len] = f32_to_f16(src[i]);
}
