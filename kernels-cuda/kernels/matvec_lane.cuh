// The two steps of a quantized matvec CTA that involve no other thread's registers, kept out
// of matvec.cu's kernels so that host-check/formats_check.cpp runs the very same code on the
// host (each thread's staging, then each lane's partial sums; the host adds the 32 lanes as
// the kernel's warp_sum does): the kernels' indexing — rows per warp, units per lane, the
// blocks of x each unit reads — is then checked against golden without a GPU.
#pragma once
#include "formats.cuh"

// The shape of the quantized kernels. The values here are the product's (the module
// `matvec`; kernels-cuda/src/ops/matvec.rs's `MatvecShape::DEFAULT` launches it with the same
// geometry). dev/cuda compiles matvec.cu again with other values (-D) to time them beside it.
//
// Warps per CTA of the quantized kernels.
#ifndef MV_WARPS
#define MV_WARPS 8
#endif
#define MV_THREADS (MV_WARPS * WARP_SIZE)
#ifndef MV_RPW_LEGACY
#define MV_RPW_LEGACY 2
#endif
#ifndef MV_RPW_K
#define MV_RPW_K 1
#endif
#ifndef MV_UNROLL_LEGACY
#define MV_UNROLL_LEGACY 2
#endif
#ifndef MV_UNROLL_K
#define MV_UNROLL_K 1
#endif

// Sub-blocks per block: 1 for the legacy formats, 8 for K-quants.
#define MV_SUBS(qk) ((qk) / 32)
// Rows per warp: they share each x block read from shared memory. Two for the legacy
// formats; one for the K-quants, whose dot products take many registers (two rows, the
// dev/cuda variant kr2: 68–80 at sm_90, 3 CTAs an SM).
#define MV_RPW(qk) ((qk) == 32 ? MV_RPW_LEGACY : MV_RPW_K)
// Iterations of a lane's loop in flight: two for the legacy formats; one for the K-quants,
// whose units hold more words in registers (two sub-blocks a unit; two iterations of single
// sub-blocks already cost Q6_K 74 registers at sm_90, too few warps per SM).
#define MV_UNROLL(qk) ((qk) == 32 ? MV_UNROLL_LEGACY : MV_UNROLL_K)

// Step 1: thread t of the CTA's `threads` makes its share of the vector's xblocks, in the
// order the lanes read them: unit by unit, the units' first sub-blocks, then (K-quants)
// their second ones (formats.cuh, unit_sub_<fmt>).
#define MV_STAGE(name, qk, bytes)                                                              \
    __device__ __forceinline__ void mv_stage_##name(xblock* xs, const block_q8_1* xg,           \
                                                    int nsub, int t, int threads) {            \
        const int nunit = nsub / MV_SUBS(qk) * UNITS_PER_BLOCK(qk);                            \
        for (int n = t; n < nsub; n += threads) {                                              \
            int u, i;                                                                          \
            UNIT_SUB_##name(n % MV_SUBS(qk), &u, &i);                                          \
            xs[i * nunit + n / MV_SUBS(qk) * UNITS_PER_BLOCK(qk) + u] = make_xblock(xg + n);   \
        }                                                                                      \
    }
FOR_EACH_QUANT(MV_STAGE)

// Step 2: lane `lane`'s partial sums acc[0 .. MV_RPW) of rows row, row + 1, … (row < nrows; a
// row past the end reads the last row again, and its sum is not used). Units lane,
// lane + 32, … of the row: a legacy block, or a pair of K-quant sub-blocks (formats.cuh),
// whose xblocks step 1 put at xs[unit] and xs[nunit + unit].
#define MV_LANE(name, qk, bytes)                                                               \
    __device__ __forceinline__ void mv_lane_##name(const uint8_t* w, const xblock* xs,          \
                                                   int ncols, int nrows, int row, int lane,     \
                                                   float* acc) {                               \
        const int nsub = ncols / 32;                                                           \
        const int row_bytes = nsub / MV_SUBS(qk) * bytes;                                      \
        const uint8_t* wr[MV_RPW(qk)];                                                         \
        _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r) {                               \
            wr[r] = w + (int64_t)(row + r < nrows ? row + r : nrows - 1) * row_bytes;          \
            acc[r] = 0.0f;                                                                     \
        }                                                                                      \
        constexpr int mv_unroll = MV_UNROLL(qk), upb = UNITS_PER_BLOCK(qk);                    \
        const int nunit = nsub / MV_SUBS(qk) * upb;                                            \
        _Pragma("unroll (mv_unroll)") for (int u = lane; u < nunit; u += WARP_SIZE) {          \
            _Pragma("unroll") for (int r = 0; r < MV_RPW(qk); ++r)                             \
                acc[r] += dot_##name(wr[r] + u / upb * bytes, u % upb, xs + u, nunit);         \
        }                                                                                      \
    }
FOR_EACH_QUANT(MV_LANE)
