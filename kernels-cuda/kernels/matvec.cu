// Matrix × vector for decode: y[r] = Σ_c W[r, c]·x[c] for every weight format.
//
// Quantized weights read q8_1 activations (quantize.cu) and multiply with dp4a through
// formats.cuh's dot_<fmt> (one unit — a legacy block, or a pair of K-quant sub-blocks that
// share bytes — against its blocks of x). One warp takes MV_RPW rows (lane i takes units
// i, i + 32, …), MV_WARPS warps per CTA, a warp-shuffle
// sum per row (no block barrier in the reduction). The CTA first makes its vector's xblocks
// in shared memory (formats.cuh: 48 bytes each, 16-byte aligned, d and s as f32, the half
// sums made once; one barrier), in the order the lanes take them (matvec_lane.cuh); the lanes
// read them there with 128-bit loads (a lane's block is 48 bytes after its neighbour's: each
// quarter-warp's eight 16-byte reads fall in distinct banks), and the rows of a warp share
// each read.
//
// Load instructions per weight byte are what this design minimises: on an H100 (docs/
// gpu-results.md, run 2) the formats' marginal read rates fell in the order of the loads
// (global and shared, counted in the SASS by scripts/sass-loads.sh) the kernels then issued
// per weight byte of a row — Q5_1/Q4_1 0.44–0.48 at ~107% of the copy bandwidth, Q8_0/Q5_0/
// Q4_0 0.63–0.75 at 91–98%, Q4_K/Q5_K/Q6_K 1.3–1.7 at 71–75%, Q2_K 2.0 at 61%, Q3_K 3.5 at
// 45% — and a version that moved W's 16-bit loads from global to shared memory (as many
// loads) was no faster. Now 0.19–0.42 for the legacy formats, Q4_K/Q5_K 0.25, Q6_K 0.51,
// Q2_K 0.76, Q3_K 1.05 (not yet measured on a GPU). Shapes measured no faster there: one
// 128-thread CTA per row, 4 warps per CTA.
//
// Batched: gridDim.y vectors share the launch (x and y advance by one vector each), which
// serves small batches; large batches go to matmul.cu.
//
// The kernels' bodies are in matvec_body.cuh, which dev/cuda's trials share (other shapes
// through matvec_lane.cuh's macros, an L2 prefetch, programmatic dependent launch; see
// docs/gpu-results.md for what they measure).
#include "matvec_body.cuh"

#define MATVEC_QUANT(name, qk, bytes)                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        matvec_##name(const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,         \
                      float* __restrict__ y, int ncols, int nrows) {                           \
        matvec_body_##name(w, x, y, ncols, nrows);                                             \
    }
FOR_EACH_QUANT(MATVEC_QUANT)

#define MATVEC_FLOAT(name, one, bytes)                                                         \
    extern "C" __global__ void __launch_bounds__(MV_FLOAT_THREADS)                             \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows) {                           \
        matvec_body_##name(w, x, y, ncols, nrows);                                             \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT)
