// Host stand-ins for the device primitives common.cuh uses, so that formats.cuh (the
// per-format dequantize and dp4a dot arithmetic) compiles as plain C++ and can be checked
// against golden data on a machine with no GPU. Each stand-in is exact: the device versions
// are single instructions with fully specified results (cvt.f32.f16 is exact, dp4a is
// integer arithmetic, __fmul_rn is one IEEE product when built with -ffp-contract=off).
#pragma once
#include <cstdint>
#include <cstring>

#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict

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

inline float bf16_to_f32(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }

struct alignas(16) uint4 {
    uint32_t x, y, z, w;
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
