// Matrix × matrix for prefill: Y[t, r] = Σ_c W[r, c]·X[t, c], W in any weight format,
// X and Y f32, on the tensor cores: W is dequantized and X converted to f16 while they are
// staged in shared memory, and mma.sync m16n8k16 multiplies them with f32 accumulators.
//
// Tile: 64 weight rows × 64 tokens per CTA, 32 columns per step, 8 warps each owning a
// 32 × 16 patch (2 × 2 mma tiles of 16 × 8): 256 threads share the staging (dequantizing
// is most of the work, and small models give few CTAs). Inline PTX, no CUDA headers.
//
// Precision: each weight and activation is rounded to f16 once (relative 2^-11; f16's
// range, ±65504, bounds the activations), products are exact and sums f32.
//
// matmul_experts_<fmt> (at the end) runs the same tiles over a mixture-of-experts layer's
// experts, each expert on the rows routed to it.
#include "formats.cuh"

#define MM_BM 64
#define MM_BN 64
#define MM_BK 32
#define MM_THREADS 256
// Row stride of the staged tiles in halves: 32 + 8 keeps a warp's fragment loads on 32
// distinct banks (rows 20 words apart).
#define MM_LD (MM_BK + 8)

// D += A·B for one m16n8k16 tile: a[4] and b[2] hold pairs of f16, d[4] f32.
__device__ __forceinline__ void mma_16x8x16(float d[4], const uint32_t a[4],
                                            const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t ld_pair(const uint16_t* p) {
    return *(const uint32_t*)p;
}

// The output tile of weight rows r0 … r0 + 63 and tokens t0 … t0 + 63, by the whole CTA:
// W: [nrows, ncols] in the format; X: [ntok, ncols] f32; Y: [ntok, nrows] f32. ncols is a
// multiple of the format's block size.
#define MATMUL_TILE(name, qk, bytes)                                                           \
    __device__ __forceinline__ void matmul_tile_##name(                                        \
        const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,     \
        int ncols, int nrows, int ntok, int r0, int t0) {                                      \
        __shared__ __align__(16) uint16_t ws[MM_BM][MM_LD];                                    \
        __shared__ __align__(16) uint16_t xs[MM_BN][MM_LD];                                    \
        const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;           \
        const int g = lane / 4, q = lane % 4; /* mma fragment coordinates */                   \
        const int wr = (warp % 2) * 32, wt = (warp / 2) * 16; /* the warp's patch */           \
        const int64_t row_bytes = (int64_t)(ncols / qk) * bytes;                               \
        float acc[2][2][4] = {};                                                               \
        for (int k0 = 0; k0 < ncols; k0 += MM_BK) {                                            \
            /* Stage 64 × 32 weights and 64 × 32 activations as f16: 8 of each a thread. */    \
            _Pragma("unroll 4") for (int i = tid; i < MM_BM * MM_BK; i += MM_THREADS) {        \
                const int r = i / MM_BK, k = i % MM_BK, c = k0 + k;                            \
                float v = 0.0f;                                                                \
                if (r0 + r < nrows && c < ncols) {                                             \
                    const uint8_t* wrow = w + (int64_t)(r0 + r) * row_bytes;                   \
                    v = dequant_##name(wrow + (c / qk) * bytes, c % qk);                       \
                }                                                                              \
                ws[r][k] = f32_to_f16(v);                                                      \
                xs[r][k] = f32_to_f16((t0 + r < ntok && c < ncols)                             \
                                          ? x[(int64_t)(t0 + r) * ncols + c]                   \
                                          : 0.0f);                                             \
            }                                                                                  \
            __syncthreads();                                                                   \
            _Pragma("unroll") for (int kk = 0; kk < MM_BK; kk += 16) {                         \
                uint32_t a[2][4], b[2][2];                                                     \
                _Pragma("unroll") for (int m = 0; m < 2; ++m) {                                \
                    const uint16_t* p = &ws[wr + 16 * m + g][kk + 2 * q];                      \
                    a[m][0] = ld_pair(p);                                                      \
                    a[m][1] = ld_pair(p + 8 * MM_LD);                                          \
                    a[m][2] = ld_pair(p + 8);                                                  \
                    a[m][3] = ld_pair(p + 8 * MM_LD + 8);                                      \
                }                                                                              \
                _Pragma("unroll") for (int n = 0; n < 2; ++n) {                                \
                    const uint16_t* p = &xs[wt + 8 * n + g][kk + 2 * q];                       \
                    b[n][0] = ld_pair(p);                                                      \
                    b[n][1] = ld_pair(p + 8);                                                  \
                }                                                                              \
                _Pragma("unroll") for (int m = 0; m < 2; ++m)                                  \
                    _Pragma("unroll") for (int n = 0; n < 2; ++n)                              \
                        mma_16x8x16(acc[m][n], a[m], b[n]);                                    \
            }                                                                                  \
            __syncthreads();                                                                   \
        }                                                                                      \
        /* acc[m][n][j]: row wr + 16m + g (+8 for j ≥ 2), token wt + 8n + 2q (+1 for odd j). */\
        _Pragma("unroll") for (int m = 0; m < 2; ++m)                                          \
            _Pragma("unroll") for (int n = 0; n < 2; ++n)                                      \
                _Pragma("unroll") for (int j = 0; j < 4; ++j) {                                \
                    const int r = r0 + wr + 16 * m + g + 8 * (j / 2);                          \
                    const int t = t0 + wt + 8 * n + 2 * q + j % 2;                             \
                    if (r < nrows && t < ntok) y[(int64_t)t * nrows + r] = acc[m][n][j];       \
                }                                                                              \
    }
FOR_EACH_FORMAT(MATMUL_TILE)

// grid (ceil(nrows/64), ceil(ntok/64)): one tile a CTA.
#define MATMUL(name, qk, bytes)                                                                \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                  \
        matmul_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows, int ntok) {                \
        matmul_tile_##name(w, x, y, ncols, nrows, ntok, blockIdx.x * MM_BM, blockIdx.y * MM_BN);\
    }
FOR_EACH_FORMAT(MATMUL)

// The experts of a mixture-of-experts layer for a batch (prefill), grouped: W: [n_expert,
// nrows, ncols] (each expert's matrix one contiguous run of bytes); X: [nx, ncols] and Y:
// [nx, nrows] hold rows sorted by expert (moe.cu's moe_sort and moe_gather), expert e's rows
// being offsets[e] … offsets[e + 1] − 1. grid (ceil(nrows/64), any, n_expert): CTA (x, y, e)
// takes expert e's token tiles y, y + gridDim.y, … (an expert with no rows exits at once).
// The offsets come from device memory and are clamped to 0 … nx, so that nothing outside X
// and Y is read or written whatever they hold.
#define MATMUL_EXPERTS(name, qk, bytes)                                                        \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                  \
        matmul_experts_##name(const uint8_t* __restrict__ w,                                   \
                              const uint32_t* __restrict__ offsets,                            \
                              const float* __restrict__ x, float* __restrict__ y, int ncols,   \
                              int nrows, int nx) {                                             \
        const int e = blockIdx.z;                                                              \
        const uint32_t n = (uint32_t)nx;                                                       \
        const uint32_t lo = offsets[e] < n ? offsets[e] : n;                                   \
        const uint32_t hi = offsets[e + 1] < lo ? lo : (offsets[e + 1] < n ? offsets[e + 1] : n);\
        const int count = (int)(hi - lo);                                                      \
        const uint8_t* we = w + (int64_t)e * nrows * ((int64_t)(ncols / qk) * bytes);          \
        for (int t0 = blockIdx.y * MM_BN; t0 < count; t0 += gridDim.y * MM_BN) {               \
            const int64_t r = (int64_t)lo + t0;                                                \
            matmul_tile_##name(we, x + r * ncols, y + r * nrows, ncols, nrows, count - t0,     \
                               blockIdx.x * MM_BM, 0);                                         \
        }                                                                                      \
    }
FOR_EACH_FORMAT(MATMUL_EXPERTS)
