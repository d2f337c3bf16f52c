// Host stand-ins for the device primitives common.cuh uses, so that formats.cuh (the
// per-format dequantize and dp4a dot arithmetic) compiles as plain C++ and can be checked
// against golden data on a machine with no GPU. Each stand-in is exact: the device versions
// are single instructions with fully specified results (cvt.f32.f16 is exact, dp4a is
// integer arithmetic, __fmul_rn is one IEEE product when built with -ffp-contract=off).
//
// At the end, a grid on the host (host_launch): a CTA's threads as host threads, with
// __syncthreads, warp shuffles and shared memory behaving as on the device, so that whole
// kernels run here too (kernels_check.cpp). Math library calls (expf) are the host's, within
// an ulp or two of the device's.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __global__
#define __launch_bounds__(...)
// A CTA's shared variables: one instance for the whole program, which the CTAs use one at
// a time (host_launch runs them one after the other).
#define __shared__ static

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(uint32_t i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// IEEE half to float, exactly (subnormals, infinities, NaN payloads kept quiet).
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise the mantissa.
        int e = -1;
        do {
            man <<= 1;
            ++e;
        } while ((man & 0x400) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    return __uint_as_float(bits);
}

// Float to IEEE half, rounded to nearest even as cvt.rn.f16.f32 (overflow to infinity,
// subnormals kept, NaN stays NaN).
inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    const int e = (int)exp - 112;  // the half's biased exponent
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    uint32_t h, rem, halfway;
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;  // below half the smallest subnormal
        man |= 0x800000;
        const int shift = 14 - e;
        h = man >> shift;
        rem = man & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
    } else {
        h = ((uint32_t)e << 10) | (man >> 13);
        rem = man & 0x1fff;
        halfway = 0x1000;
    }
    // A carry out of the mantissa steps the exponent, up to infinity: still the right half.
    if (rem > halfway || (rem == halfway && (h & 1))) ++h;
    return (uint16_t)(sign | h);
}

inline float bf16_to_f32(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }

struct alignas(16) uint4 {
    uint32_t x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    uint32_t x, y;
};

inline uint32_t funnel_r(uint32_t lo, uint32_t hi, int sh) {
    const uint64_t v = ((uint64_t)hi << 32) | lo;
    return (uint32_t)(v >> (sh < 32 ? sh : 32));
}

inline int dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}

// ---- A grid on the host ------------------------------------------------------------------

struct uint3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local uint3 threadIdx, blockIdx;
inline uint3 blockDim, gridDim;

// One warp's barrier and the words its lanes exchange through it.
struct HostWarp {
    std::barrier<> bar{32};
    uint32_t word[32];
};
struct HostCta {
    explicit HostCta(unsigned threads) : bar(threads) {
        for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<HostWarp>());
    }
    std::barrier<> bar;
    std::vector<std::unique_ptr<HostWarp>> warps;
};
inline thread_local HostCta* host_cta;
inline thread_local HostWarp* host_warp;

inline void __syncthreads() { host_cta->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { host_warp->bar.arrive_and_wait(); }

// Every lane of the warp posts v, then reads lane `from`'s (all 32 lanes must take part, as
// the device's full-mask shuffles require).
template <class T>
T host_exchange(T v, int from) {
    static_assert(sizeof(T) == 4, "32-bit shuffles only");
    HostWarp& w = *host_warp;
    std::memcpy(&w.word[threadIdx.x % 32], &v, 4);
    w.bar.arrive_and_wait();
    T r;
    std::memcpy(&r, &w.word[from & 31], 4);
    w.bar.arrive_and_wait();
    return r;
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return host_exchange(v, (int)(threadIdx.x % 32) ^ mask);
}
template <class T>
T __shfl_sync(unsigned, T v, int lane) {
    return host_exchange(v, lane);
}

// Runs `kernel` (a callable that calls the __global__ function with its arguments) over a
// grid of `grid` CTAs of `threads` threads (a multiple of 32), one CTA after the other: the
// same `threads` host threads take each CTA in turn, all finishing one before any starts
// the next (the CTAs share the static "shared" variables). A thread that returns leaves its
// CTA's barriers, as an exited thread does on the device.
template <class F>
void host_launch(uint3 grid, unsigned threads, F kernel) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    const unsigned n_cta = grid.x * grid.y * grid.z;
    std::vector<std::unique_ptr<HostCta>> ctas;
    for (unsigned c = 0; c < n_cta; ++c) ctas.push_back(std::make_unique<HostCta>(threads));
    std::barrier<> next(threads);
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < threads; ++i) {
        ts.emplace_back([&ctas, &next, &kernel, grid, n_cta, i] {
            for (unsigned c = 0; c < n_cta; ++c) {
                threadIdx = {i, 0, 0};
                blockIdx = {c % grid.x, c / grid.x % grid.y, c / (grid.x * grid.y)};
                host_cta = ctas[c].get();
                host_warp = host_cta->warps[i / 32].get();
                kernel();
                host_warp->bar.arrive_and_drop();
                host_cta->bar.arrive_and_drop();
                next.arrive_and_wait();
            }
        });
    }
    for (std::thread& t : ts) t.join();
}
