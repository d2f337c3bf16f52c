// Activation quantization to q8_1, the format every quantized matvec kernel reads.
#include "common.cuh"

// x: [nrows, ncols] f32; y: [nrows, ncols/32] q8_1 blocks. ncols is a multiple of 32.
// One warp per 32-value block, one value per lane (common.cuh's quantize_q8_1_warp).
extern "C" __global__ void quantize_q8_1(const float* __restrict__ x, block_q8_1* __restrict__ y,
                                         int ncols, int nrows) {
    const int64_t b = q8_1_warp_block(ncols, nrows);
    if (b < 0) return;
    const int lane = threadIdx.x % WARP_SIZE;
    quantize_q8_1_warp(x[b * QK8_1 + lane], lane, y + b);
}
