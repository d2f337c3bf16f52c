// Weights to f32 or f16, for every format: whole tensors (dequantize_*), and the rows that
// token ids pick from an embedding matrix (get_rows_*). Bit-exact with the CPU reference
// dequantization for f32 output.
#include "formats.cuh"

// src: n elements (n a multiple of the block size); dst: n f32. One thread per element.
#define DEQUANTIZE(name, qk, bytes)                                                           \
    extern "C" __global__ void dequantize_##name(const uint8_t* __restrict__ src,            \
                                                 float* __restrict__ dst, int64_t n) {       \
        const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;                     \
        if (i >= n) return;                                                                   \
        dst[i] = dequant_##name(src + (i / qk) * bytes, (int)(i % qk));                       \
    }                                                                                         \
    extern "C" __global__ void dequantize_##name##_to_f16(                                   \
        const uint8_t* __restrict__ src, uint16_t* __restrict__ dst, int64_t n) {             \
        const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;                     \
        if (i >= n) return;                                                                   \
        dst[i] = f32_to_f16(dequant_##name(src + (i / qk) * bytes, (int)(i % qk)));           \
    }
FOR_EACH_FORMAT(DEQUANTIZE)

// w: [nrows_w, ncols] in the format; ids: [nids] row indices; dst: [nids, ncols] f32.
// grid (ceil(ncols / blockDim.x), nids). An id outside [0, nrows_w) writes zeros: the
// launcher validates ids on the host, this only keeps a bad id from reading out of bounds.
#define GET_ROWS(name, qk, bytes)                                                             \
    extern "C" __global__ void get_rows_##name(const uint8_t* __restrict__ w,                \
                                               const int32_t* __restrict__ ids,              \
                                               float* __restrict__ dst, int ncols,           \
                                               int nrows_w) {                                \
        const int c = blockIdx.x * blockDim.x + threadIdx.x;                                  \
        if (c >= ncols) return;                                                               \
        const int id = ids[blockIdx.y];                                                       \
        float v = 0.0f;                                                                       \
        if (id >= 0 && id < nrows_w) {                                                        \
            const uint8_t* row = w + (int64_t)id * (ncols / qk) * bytes;                      \
            v = dequant_##name(row + (c / qk) * bytes, c % qk);                               \
        }                                                                                     \
        dst[(int64_t)blockIdx.y * ncols + c] = v;                                             \
    }
FOR_EACH_FORMAT(GET_ROWS)
