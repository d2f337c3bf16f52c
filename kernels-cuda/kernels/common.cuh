// Shared by every kernel file: fixed-width types, f16/bf16 conversion, warp reductions,
// int8 dot products, and the q8_1 activation block.
//
// No CUDA headers are needed: NVRTC provides the built-in variables and intrinsics, and the
// few half-precision conversions are single PTX instructions written out here. That keeps
// the kernels compiling with nothing but libnvrtc.
#pragma once

#ifdef STRATA_HOST_CHECK
// Host C++ build of the format arithmetic (kernels-cuda/host-check): the same source, with
// the few device primitives below replaced by exact host equivalents.
#include "../host-check/host_shim.hpp"
#else
typedef unsigned char uint8_t;
typedef signed char int8_t;
typedef unsigned short uint16_t;
typedef short int16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;

#endif

#define WARP_SIZE 32
#define QK8_1 32
#define NEG_INF __int_as_float(0xff800000)

#ifndef STRATA_HOST_CHECK

// f16 stored as its 16 bits.
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Round to nearest even, as the CPU side's `half::f16::from_f32` does.
__device__ __forceinline__ uint16_t f32_to_f16(float f) {
    uint16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// bf16 is the top half of an f32: widening is exact.
__device__ __forceinline__ float bf16_to_f32(uint16_t b) {
    return __uint_as_float(((uint32_t)b) << 16);
}

// Four signed byte products summed into c (sm_61+).
__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// The 32 bits of hi:lo starting at bit `sh` (0 ≤ sh ≤ 32: 32 gives hi).
__device__ __forceinline__ uint32_t funnel_r(uint32_t lo, uint32_t hi, int sh) {
    uint32_t d;
    asm("shf.r.clamp.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(lo), "r"(hi), "r"(sh));
    return d;
}

#endif  // !STRATA_HOST_CHECK

// Warp and block reductions (on the host, host_shim.hpp's threads and shuffles run them).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a whole thread block (blockDim.x a multiple of 32, at most 1024). Every thread
// gets the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}

// 1 / √(mean(xr²) + eps) of one row, for every thread of the CTA (norm.cu, mla.cu): each
// thread sums its strided share in f32, then the CTA adds the partial sums.
__device__ __forceinline__ float rms_scale(const float* xr, int ncols, float eps) {
    __shared__ float scratch[32];
    float ss = 0.0f;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, scratch);
    return 1.0f / sqrtf(ss / (float)ncols + eps);
}

// Byte-wise v − k for bytes 0 ≤ v < 2k ≤ 128, giving signed bytes (−k … k−1) with no
// carries between bytes: (v + (128 − k)) stays below 256, and flipping the top bit
// subtracts 128 in two's complement.
__device__ __forceinline__ int bytes_minus(uint32_t v, uint32_t k) {
    const uint32_t bias = (128u - k) * 0x01010101u;
    return (int)((v + bias) ^ 0x80808080u);
}

// Little-endian loads at 4- and 2-byte aligned addresses (the 2-byte aligned blocks, Q4_0,
// Q5_0, Q8_0, Q3_K and Q6_K, read their 32-bit values through Span below).
__device__ __forceinline__ uint32_t load_u32_a4(const uint8_t* p) {
    return *(const uint32_t*)p;
}
__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) {
    return *(const uint16_t*)p;
}

// Fewer, wider loads. The matvec kernels' speed follows the load instructions they issue per
// weight byte (docs/gpu-results.md: on an H100 the formats' marginal read rates fall in the
// order of their loads per byte), so the dot products read blocks through these instead of
// one 16-bit load per half-word.
//
// A span of bytes at a 2-byte aligned address, read as R aligned 32-bit words: raw[0] is the
// word at or below the span's start, sh the start's offset in it in bits (0 or 16). The
// first word may begin 2 bytes before the span: still inside the allocation, whose start is
// 256-byte aligned. The last word may end 2 bytes past the span: span_mid only where that is
// still inside the same block, span_end (a span that ends the block) reads it as 16 bits
// when only its low half belongs to the block.
template <int R>
struct Span {
    uint32_t raw[R];
    int sh;
};

// ENDS_BLOCK: the span ends its block (span_end), else a word past it is still in the block
// (span_mid).
template <int R, bool ENDS_BLOCK>
__device__ __forceinline__ Span<R> load_span(const uint8_t* p) {
    Span<R> s;
    // Stepping back from p (not masking the integer address) keeps p's address space: the
    // compiler then emits global loads, not generic ones.
    const int back = (int)((uint64_t)p & 2);
    const uint32_t* q = (const uint32_t*)(p - back);
    s.sh = back * 8;
#pragma unroll
    for (int i = 0; i < R - 1; ++i) s.raw[i] = q[i];
    s.raw[R - 1] = !ENDS_BLOCK || s.sh ? q[R - 1] : (uint32_t)load_u16((const uint8_t*)(q + R - 1));
    return s;
}
template <int R>
__device__ __forceinline__ Span<R> span_mid(const uint8_t* p) {
    return load_span<R, false>(p);
}
template <int R>
__device__ __forceinline__ Span<R> span_end(const uint8_t* p) {
    return load_span<R, true>(p);
}

// The little-endian u32 (u16) at even byte offset o of the span.
template <int R>
__device__ __forceinline__ uint32_t span_u32(const Span<R>& s, int o) {
    return funnel_r(s.raw[o / 4], s.raw[o / 4 + 1], s.sh + 8 * (o % 4));
}
template <int R>
__device__ __forceinline__ uint32_t span_u16(const Span<R>& s, int o) {
    return span_u32(s, o) & 0xFFFFu;
}

// N·4 words from 16-byte aligned p (Q4_K and Q5_K blocks, 144 and 176 bytes, keep rows of a
// 256-byte aligned matrix 16-byte aligned): N 128-bit loads.
template <int N>
__device__ __forceinline__ void load_words_a16(const uint8_t* p, uint32_t (&w)[4 * N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const uint4 v = ((const uint4*)p)[i];
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
    }
}
// N·2 words from 8-byte aligned p (Q5_1's 24-byte blocks).
template <int N>
__device__ __forceinline__ void load_words_a8(const uint8_t* p, uint32_t (&w)[2 * N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const uint2 v = ((const uint2*)p)[i];
        w[2 * i] = v.x;
        w[2 * i + 1] = v.y;
    }
}

// The activation block the quantized matvec kernels read: 32 values as int8 with one f16
// scale d and s = d·Σqs (s applies a Q4_1/Q5_1 min as m·s, as ggml pairs them).
struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
};
static_assert(sizeof(block_q8_1) == 36, "block_q8_1 is 36 bytes");

#ifndef STRATA_HOST_CHECK
// The 32-value block a warp of a one-warp-per-block q8_1 kernel takes (grid.x over the
// blocks of a row, 4 warps a CTA; grid.y over rows), or −1 past the end. The whole warp
// agrees, so it exits together.
__device__ __forceinline__ int64_t q8_1_warp_block(int ncols, int nrows) {
    const int nblocks = ncols / QK8_1;
    const int64_t blk = (int64_t)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (blk >= nblocks || (int)blockIdx.y >= nrows) return -1;
    return (int64_t)blockIdx.y * nblocks + blk;
}
#endif

// One q8_1 block from a warp, lane i holding value i. Matches the CPU reference: d =
// amax/127, q = round(x/d) computed as x·(1/d) rounded half away from zero, s = d·Σq.
__device__ __forceinline__ void quantize_q8_1_warp(float v, int lane, block_q8_1* b) {
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    const int sum = warp_sum_int(q);
    b->qs[lane] = (int8_t)q;
    if (lane == 0) {
        b->d = f32_to_f16(d);
        b->s = f32_to_f16((float)sum * d);
    }
}
