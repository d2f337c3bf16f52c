// Matrix × vector for decode: y[r] = Σ_c W[r, c]·x[c] for every weight format.
//
// Quantized weights read q8_1 activations (quantize.cu) and multiply with dp4a through
// formats.cuh's dot_<fmt> (one 32-weight sub-block against one q8_1 block). One warp takes
// MV_RPW rows (lane i takes sub-blocks i, i + 32, …), MV_WARPS warps per CTA, a warp-shuffle
// sum per row (no block barrier in the reduction). The CTA first copies its vector's q8_1
// blocks into shared memory (coalesced 32-bit words, one barrier); the lanes read them from
// there (a lane's block is 9 words after its neighbour's: 32 lanes, 32 banks), and the rows
// of a warp share each read. For Q4_K it also computes each block's Σxq there once.
//
// Measured on an H100 (docs/gpu-results.md, run 2), this shape is within a few percent of
// the first version (one 128-thread CTA per row): a version that staged W through shared
// memory with aligned 32-bit words, and one with 4 warps per CTA, were no faster. The
// quantized kernels are not limited by their load instructions; see the doc for what is.
//
// Batched: gridDim.y vectors share the launch (x and y advance by one vector each), which
// serves small batches; large batches go to matmul.cu.
//
// `prefetch` (bytes, 0 = off): before anything else, each warp (float kernels: each CTA)
// asks L2 for the first `prefetch` bytes of each of its rows, one request per 128-byte line,
// so that DRAM starts on the weights while the CTA stages x and waits at its barrier, and a
// lane's first loads find their lines on the way. The results do not depend on it.
#include "formats.cuh"

// Asks L2 for the lines of bytes [p, p + n), `lanes` threads sharing the requests (this
// thread is number `t` of them).
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, int n, int t, int lanes) {
    const uint64_t end = (uint64_t)p + n;
    for (uint64_t a = ((uint64_t)p & ~(uint64_t)127) + 128 * t; a < end; a += 128 * lanes) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
    }
}

#define MV_WARPS 8
#define MV_THREADS (MV_WARPS * WARP_SIZE)

// The q8_1 blocks of the CTA's vector, then Σxq of each block (launch: ncols / 32 · 40 bytes
// of dynamic shared memory).
extern __shared__ uint32_t matvec_x_words[];

// The format's dot product given Σxq of the x block: Q4_K takes it precomputed (the same
// for every row: 60% → 62% of copy bandwidth at 14336 × 4096 on an H100); the others compute
// what they need themselves (Q5_K measured 60% → 59% with it, so it keeps its own dp4a).
#define MV_DOT_PLAIN(name)                                                                     \
    __device__ __forceinline__ float mv_dot_##name(const uint8_t* b, int s,                    \
                                                   const block_q8_1* x, int /*sumx*/) {        \
        return dot_##name(b, s, x);                                                            \
    }
MV_DOT_PLAIN(q4_0)
MV_DOT_PLAIN(q4_1)
MV_DOT_PLAIN(q5_0)
MV_DOT_PLAIN(q5_1)
MV_DOT_PLAIN(q8_0)
MV_DOT_PLAIN(q2_k)
MV_DOT_PLAIN(q3_k)
MV_DOT_PLAIN(q6_k)
MV_DOT_PLAIN(q5_k)
__device__ __forceinline__ float mv_dot_q4_k(const uint8_t* b, int s, const block_q8_1* x,
                                             int sumx) {
    return dot_q4_k_sumx(b, s, x, sumx);
}
// Whether the format uses the precomputed Σxq.
#define MV_NEEDS_SUMX(qk, bytes) ((bytes) == BYTES_Q4_K)

// Sub-blocks per block: 1 for the legacy formats, 8 for K-quants.
#define MV_SUBS(qk) ((qk) / 32)
// Rows per warp: they share each x block read from shared memory. Two for the legacy
// formats; one for the K-quants, whose dot products need too many registers for two
// (Q6_K spills at sm_90). kernels-cuda/src/ops/matvec.rs launches to match.
#define MV_RPW(qk) ((qk) == 32 ? 2 : 1)

// W: [nrows, ncols] in the format; x: [nvec, ncols/32] q8_1; y: [nvec, nrows].
#define MATVEC_QUANT(name, qk, bytes)                                                          \
    extern "C" __global__ void __launch_bounds__(MV_THREADS)                                   \
        matvec_##name(const uint8_t* __restrict__ w, const block_q8_1* __restrict__ x,         \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {             \
        const int nsub = ncols / 32;                                                           \
        int* sumxs = (int*)matvec_x_words + nsub * 9;                                          \
        const int lane = threadIdx.x % WARP_SIZE;                                              \
        const int row = (blockIdx.x * MV_WARPS + threadIdx.x / WARP_SIZE) * MV_RPW(qk);        \
        const int row_bytes = nsub / MV_SUBS(qk) * bytes;                                      \
        if (prefetch > 0) {                                                                    \
            _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) if (row + r < nrows)        \
                prefetch_l2(w + (int64_t)(row + r) * row_bytes, min(prefetch, row_bytes),     \
                            lane, WARP_SIZE);                                                  \
        }                                                                                      \
        {                                                                                      \
            const uint32_t* xg = (const uint32_t*)(x + (int64_t)blockIdx.y * nsub);            \
            for (int i = threadIdx.x; i < nsub * 9; i += MV_THREADS) matvec_x_words[i] = xg[i]; \
            __syncthreads();                                                                   \
            if (MV_NEEDS_SUMX(qk, bytes)) {                                                    \
                const block_q8_1* xb = (const block_q8_1*)matvec_x_words;                      \
                for (int i = threadIdx.x; i < nsub; i += MV_THREADS) sumxs[i] = sum_xq(xb + i);\
                __syncthreads();                                                               \
            }                                                                                  \
        }                                                                                      \
        if (row >= nrows) return;                                                              \
        const block_q8_1* xs = (const block_q8_1*)matvec_x_words;                              \
        /* rows past the end read the last row again and are not written */                    \
        const uint8_t* wr[MV_RPW(qk)];                                                         \
        float acc[MV_RPW(qk)];                                                                 \
        _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) {                               \
            wr[r] = w + (int64_t)min(row + r, nrows - 1) * row_bytes;                          \
            acc[r] = 0.0f;                                                                     \
        }                                                                                      \
        _Pragma("unroll 2") for (int sub = lane; sub < nsub; sub += WARP_SIZE) {               \
            const int off = sub / MV_SUBS(qk) * bytes;                                         \
            const int sumx = MV_NEEDS_SUMX(qk, bytes) ? sumxs[sub] : 0;                        \
            _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r)                             \
                acc[r] += mv_dot_##name(wr[r] + off, sub % MV_SUBS(qk), xs + sub, sumx);       \
        }                                                                                      \
        _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) {                               \
            const float v = warp_sum(acc[r]);                                                  \
            if (lane == 0 && row + r < nrows) y[(int64_t)blockIdx.y * nrows + row + r] = v;    \
        }                                                                                      \
    }
FOR_EACH_QUANT(MATVEC_QUANT)

// Float weights: one CTA of MV_FLOAT_THREADS per row (measured faster on an H100 than a warp
// per row: 71% vs 66% of copy bandwidth for F16 at 4096 × 4096, 94% vs 92% at 14336 × 4096);
// each thread takes 4 consecutive weights at a time (one 16-byte load for f32, one 8-byte
// load for f16/bf16). ncols is a multiple of 4 and W, x are whole allocations, so every
// row of W and every vector of x is aligned for those loads.
#define MV_FLOAT_THREADS 128

// Sum of the CTA's partial sums, written by thread 0.
__device__ __forceinline__ void store_row_sum(float v, float* y) {
    __shared__ float scratch[32];
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) *y = v;
}

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
    extern "C" __global__ void __launch_bounds__(MV_FLOAT_THREADS)                              \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows, int prefetch) {            \
        const int row = blockIdx.x;                                                            \
        if (row >= nrows) return;                                                              \
        const uint8_t* wrow = w + (int64_t)row * ncols * bytes;                                \
        if (prefetch > 0)                                                                      \
            prefetch_l2(wrow, min(prefetch, ncols * bytes), threadIdx.x, MV_FLOAT_THREADS);    \
        const float* xv = x + (int64_t)blockIdx.y * ncols;                                     \
        float acc = 0.0f;                                                                      \
        _Pragma("unroll 4") for (int c = 4 * threadIdx.x; c < ncols; c += 4 * MV_FLOAT_THREADS) {\
            acc += dot4_##name(wrow + (int64_t)c * bytes, *(const float4*)(xv + c));           \
        }                                                                                      \
        store_row_sum(acc, y + (int64_t)blockIdx.y * nrows + row);                             \
    }
FOR_EACH_FLOAT(MATVEC_FLOAT)
