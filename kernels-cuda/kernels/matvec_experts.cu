// The experts of a mixture-of-experts layer for decode: y[s] = W[ids[s]] · x[s / slots_per_x]
// for the slots s (a token's chosen experts, k a token), with W a stack of n_expert matrices
// of [nrows, ncols] (each one contiguous run of bytes, as a GGUF 3-D expert tensor holds
// them) and the ids read from device memory, where moe.cu's moe_route wrote them: no round
// trip to the host between the router and the experts.
//
// Each CTA is one of matvec.cu's, on the chosen expert's matrix (matvec_body.cuh's
// matvec_vec_<fmt>: the same code, so the same bits as matvec_<fmt> on that matrix):
// grid (matvec's CTAs for nrows, n_slot); past 65535 slots (MLA's heads of a long batch),
// (…, 65535, ⌈n_slot / 65535⌉), slot blockIdx.z · gridDim.y + blockIdx.y, CTAs past n_slot
// idle. slots_per_x is k for the gate and up projections (a token's k slots share its x)
// and 1 for the down projection (each slot its own hidden vector). An id ≥ n_expert (which
// moe_route never writes) gives NaN rows, never a read outside W.
#include "matvec_body.cuh"

// NaN in rows row0 … row0 + nrows_cta − 1 (those below nrows) of y.
__device__ __forceinline__ void nan_rows(float* y, int row0, int nrows_cta, int nrows) {
    for (int r = threadIdx.x; r < nrows_cta; r += blockDim.x) {
        if (row0 + r < nrows) y[row0 + r] = __int_as_float(0x7fffffff);
    }
}

// W: [n_expert, nrows, ncols] in the format; ids: [n_slot]; x: [n_slot / slots_per_x,
// ncols/32] q8_1; y: [n_slot, nrows]. Dynamic shared memory as matvec_<fmt>.
#define MATVEC_EXPERTS_QUANT(name, qk, bytes)                                                  \
    extern "C" __global__ void __launch_bounds__(MV_THREADS) matvec_experts_##name(            \
        const uint8_t* __restrict__ w, const uint32_t* __restrict__ ids,                       \
        const block_q8_1* __restrict__ x, float* __restrict__ y, int ncols, int nrows,         \
        int n_expert, int n_slot, int slots_per_x) {                                           \
        const int s = blockIdx.z * gridDim.y + blockIdx.y;                                     \
        const uint32_t e = s < n_slot ? ids[s] : 0xffffffffu;                                  \
        if (e >= (uint32_t)n_expert) {                                                         \
            const int rows_cta = MV_WARPS * MV_RPW(qk);                                        \
            if (s < n_slot)                                                                    \
                nan_rows(y + (int64_t)s * nrows, blockIdx.x * rows_cta, rows_cta, nrows);      \
            return;                                                                            \
        }                                                                                      \
        const int64_t row_bytes = (int64_t)(ncols / qk) * bytes;                               \
        matvec_vec_##name(w + (int64_t)e * nrows * row_bytes, x, y, ncols, nrows,              \
                          s / slots_per_x, s);                                                 \
    }
FOR_EACH_QUANT(MATVEC_EXPERTS_QUANT)

// Float weights: x: [n_slot / slots_per_x, ncols] f32, one CTA a row as matvec_<fmt>.
#define MATVEC_EXPERTS_FLOAT(name, one, bytes)                                                 \
    extern "C" __global__ void __launch_bounds__(MV_FLOAT_THREADS) matvec_experts_##name(      \
        const uint8_t* __restrict__ w, const uint32_t* __restrict__ ids,                       \
        const float* __restrict__ x, float* __restrict__ y, int ncols, int nrows,              \
        int n_expert, int n_slot, int slots_per_x) {                                           \
        const int s = blockIdx.z * gridDim.y + blockIdx.y;                                     \
        if (s >= n_slot) return;                                                               \
        const uint32_t e = ids[s];                                                             \
        if (e >= (uint32_t)n_expert) {                                                         \
            nan_rows(y + (int64_t)s * nrows, blockIdx.x, 1, nrows);                            \
            return;                                                                            \
        }                                                                                      \
        matvec_vec_##name(w + (int64_t)e * nrows * ncols * bytes, x, y, ncols, nrows,          \
                          s / slots_per_x, s);                                                 \
    }
FOR_EACH_FLOAT(MATVEC_EXPERTS_FLOAT)
