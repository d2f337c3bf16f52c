// RMSNorm: y = x / sqrt(mean(x²) + eps) · w, one CTA per row.
#include "common.cuh"

// x, y: [nrows, ncols] f32 (y may equal x); w: [ncols]. blockDim.x: a multiple of 32, ≤ 1024.
// The CPU reference sums squares in f64 (as ggml does); here each thread sums its strided
// share in f32 and the CTA adds 8·32 partial sums, which keeps the rounding error of the
// sum near that of a pairwise sum.
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ w,
                                    float* y, int ncols, float eps) {
    const int64_t row = blockIdx.x;
    const float* xr = x + row * ncols;
    float* yr = y + row * ncols;
    const float scale = rms_scale(xr, ncols, eps);
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) yr[c] = xr[c] * scale * w[c];
}

// RMSNorm and the q8_1 quantization of its output in one pass (decode's inputs to the
// quantized matvecs): y exactly as rms_norm writes it, yq exactly what quantize_q8_1 makes
// of y. ncols is a multiple of 32; each warp quantizes whole 32-value blocks.
extern "C" __global__ void rms_norm_q8_1(const float* __restrict__ x, const float* __restrict__ w,
                                         float* y, block_q8_1* __restrict__ yq, int ncols,
                                         float eps) {
    const int64_t row = blockIdx.x;
    const float* xr = x + row * ncols;
    float* yr = y + row * ncols;
    const float scale = rms_scale(xr, ncols, eps);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nblocks = ncols / QK8_1, nwarps = blockDim.x / WARP_SIZE;
    for (int b = warp; b < nblocks; b += nwarps) {
        const int c = b * QK8_1 + lane;
        const float v = xr[c] * scale * w[c];
        yr[c] = v;
        quantize_q8_1_warp(v, lane, yq + row * nblocks + b);
    }
}
