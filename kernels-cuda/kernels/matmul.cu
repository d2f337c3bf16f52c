// Matrix × matrix for prefill: Y[t, r] = Σ_c W[r, c]·X[t, c], W in any weight format,
// X and Y f32. A tiled kernel that dequantizes W while staging it in shared memory and
// accumulates in f32: correct for every format first; tensor cores come after measuring.
//
// Tile: 64 weight rows × 64 tokens per CTA, 32 columns per step, 256 threads, each thread
// owning a 4 × 4 patch of outputs.
#include "formats.cuh"

#define MM_BM 64
#define MM_BN 64
#define MM_BK 32
#define MM_THREADS 256

// W: [nrows, ncols] in the format; X: [ntok, ncols] f32; Y: [ntok, nrows] f32.
// ncols is a multiple of the format's block size. grid (ceil(nrows/64), ceil(ntok/64)).
#define MATMUL(name, qk, bytes)                                                                \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                  \
        matmul_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,              \
                      float* __restrict__ y, int ncols, int nrows, int ntok) {                \
        __shared__ float ws[MM_BK][MM_BM + 1];                                                 \
        __shared__ float xs[MM_BK][MM_BN + 1];                                                 \
        const int r0 = blockIdx.x * MM_BM, t0 = blockIdx.y * MM_BN;                            \
        const int tid = threadIdx.x;                                                           \
        const int tr = (tid % 16) * 4, tt = (tid / 16) * 4;                                    \
        const int64_t row_bytes = (int64_t)(ncols / qk) * bytes;                               \
        float acc[4][4] = {};                                                                  \
        for (int k0 = 0; k0 < ncols; k0 += MM_BK) {                                            \
            /* Stage 64 × 32 weights and 64 × 32 activations: 8 of each per thread. */         \
            for (int i = tid; i < MM_BM * MM_BK; i += MM_THREADS) {                            \
                const int r = i / MM_BK, k = i % MM_BK;                                        \
                const int c = k0 + k;                                                          \
                float v = 0.0f;                                                                \
                if (r0 + r < nrows && c < ncols) {                                             \
                    const uint8_t* wr = w + (int64_t)(r0 + r) * row_bytes;                     \
                    v = dequant_##name(wr + (c / qk) * bytes, c % qk);                         \
                }                                                                              \
                ws[k][r] = v;                                                                  \
                const int t = i / MM_BK;                                                       \
                xs[k][t] = (t0 + t < ntok && c < ncols) ? x[(int64_t)(t0 + t) * ncols + c]     \
                                                         : 0.0f;                               \
            }                                                                                  \
            __syncthreads();                                                                   \
            _Pragma("unroll 8") for (int k = 0; k < MM_BK; ++k) {                              \
                float a[4], b[4];                                                              \
                _Pragma("unroll") for (int i = 0; i < 4; ++i) a[i] = ws[k][tr + i];            \
                _Pragma("unroll") for (int j = 0; j < 4; ++j) b[j] = xs[k][tt + j];            \
                _Pragma("unroll") for (int i = 0; i < 4; ++i)                                  \
                    _Pragma("unroll") for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];    \
            }                                                                                  \
            __syncthreads();                                                                   \
        }                                                                                      \
        _Pragma("unroll") for (int j = 0; j < 4; ++j) {                                        \
            const int t = t0 + tt + j;                                                         \
            if (t >= ntok) continue;                                                           \
            _Pragma("unroll") for (int i = 0; i < 4; ++i) {                                    \
                const int r = r0 + tr + i;                                                     \
                if (r < nrows) y[(int64_t)t * nrows + r] = acc[i][j];                          \
            }                                                                                  \
        }                                                                                      \
    }
FOR_EACH_FORMAT(MATMUL)
