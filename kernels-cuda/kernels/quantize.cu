// Activation quantization to q8_1, the format every quantized matvec kernel reads.
#include "common.cuh"

// x: [nrows, ncols] f32; y: [nrows, ncols/32] q8_1 blocks. ncols is a multiple of 32.
// One warp per 32-value block, one value per lane. Matches the CPU reference: d = amax/127,
// q = round(x/d) computed as x·(1/d) rounded half away from zero, s = d·Σq.
extern "C" __global__ void quantize_q8_1(const float* __restrict__ x, block_q8_1* __restrict__ y,
                                         int ncols, int nrows) {
    const int nblocks = ncols / QK8_1;
    const int warps_per_cta = blockDim.x / WARP_SIZE;
    const int64_t blk = (int64_t)blockIdx.x * warps_per_cta + threadIdx.x / WARP_SIZE;
    const int row = blockIdx.y;
    if (blk >= nblocks || row >= nrows) return;
    const int lane = threadIdx.x % WARP_SIZE;

    const float v = x[(int64_t)row * ncols + blk * QK8_1 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    const int sum = warp_sum_int(q);

    block_q8_1* b = y + (int64_t)row * nblocks + blk;
    b->qs[lane] = (int8_t)q;
    if (lane == 0) {
        b->d = f32_to_f16(d);
        b->s = f32_to_f16((float)sum * d);
    }
}
