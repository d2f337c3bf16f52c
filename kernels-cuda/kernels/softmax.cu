// Softmax over each row, in place: x[r] = exp(x[r] − max) / Σ exp(x[r] − max).
#include "common.cuh"

// x: [nrows, ncols] f32, one CTA per row; blockDim.x a multiple of 32.
extern "C" __global__ void softmax(float* x, int ncols) {
    __shared__ float scratch[32];
    float* xr = x + (int64_t)blockIdx.x * ncols;
    float m = NEG_INF;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) m = fmaxf(m, xr[c]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
        const float e = expf(xr[c] - m);
        xr[c] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);
    const float inv = 1.0f / sum;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) xr[c] *= inv;
}
