// Activation quantization to q8_1, the format every quantized matvec kernel reads.
#include "common.cuh"

// x: [nrows, ncols] f32; y: [nrows, ncols/32] q8_1 blocks. ncols is a multiple of 32.
// One warp per 32-value block, one value per lane (common.cuh's quantize_q8_1_warp).
extern "C" __global__ void quantize_q8_1(const float* __restrict__ x, block_q8_1* __restrict__ y,
                                         int ncols, int nrows) {
    const int nblocks = ncols / QK8_1;
    const int warps_per_cta = blockDim.x / WARP_SIZE;
    const int64_t blk = (int64_t)blockIdx.x * warps_per_cta + threadIdx.x / WARP_SIZE;
    const int row = blockIdx.y;
    if (blk >= nblocks || row >= nrows) return;
    const int lane = threadIdx.x % WARP_SIZE;

    const float v = x[(int64_t)row * ncols + blk * QK8_1 + lane];
    quantize_q8_1_warp(v, lane, y + (int64_t)row * nblocks + blk);
}
