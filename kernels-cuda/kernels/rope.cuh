// One rotary pair, as kernels-cpu's Rope computes it (ops/rope.rs), for rope.cu and mla.cu.
//
// θᵢ = freq_scale · pos · base^(−2i/n_rot), with base^(−2i/n_rot) formed as ggml and the CPU
// reference form it: theta_scale = base^(−2/n_rot) in f32, multiplied in i times. That makes
// the angles bit-identical to the CPU's; only sin/cos may differ by their last bit. With
// YaRN (ext_factor ≠ 0) the angle mixes that interpolated θ with the unscaled one by a ramp
// over the pairs (1 below corr_low, 0 above corr_high), and cos and sin are scaled by
// mscale (1 without YaRN). The mix is rounded product by product, as the CPU does it.
#pragma once
#include "common.cuh"

struct RopeAngle {
    float theta_scale, freq_scale, ext_factor, corr_low, corr_high, mscale;
};

// A kernel's RoPE parameters, in the order the launchers pass them.
#define ROPE_PARAMS                                                                            \
    float theta_scale, float freq_scale, float ext_factor, float corr_low, float corr_high,    \
        float mscale
#define ROPE_ANGLE RopeAngle{theta_scale, freq_scale, ext_factor, corr_low, corr_high, mscale}

// cos and sin of pair i at position pos, each times mscale.
__device__ __forceinline__ void rope_cos_sin(const RopeAngle& r, int i, int pos, float* c,
                                             float* s) {
    float theta = (float)pos;
    for (int k = 0; k < i; ++k) theta *= r.theta_scale;
    float t = __fmul_rn(r.freq_scale, theta);
    if (r.ext_factor != 0.0f) {
        const float y = ((float)i - r.corr_low) / fmaxf(r.corr_high - r.corr_low, 0.001f);
        const float mix = __fmul_rn(1.0f - fminf(fmaxf(y, 0.0f), 1.0f), r.ext_factor);
        t = __fadd_rn(__fmul_rn(t, 1.0f - mix), __fmul_rn(theta, mix));
    }
    sincosf(t, s, c);
    *c = __fmul_rn(*c, r.mscale);
    *s = __fmul_rn(*s, r.mscale);
}

// Rotates the pair (a, b) of x by pair i's angle at pos.
__device__ __forceinline__ void rope_pair(float* x, int a, int b, int i, int pos,
                                          const RopeAngle& r) {
    float c, s;
    rope_cos_sin(r, i, pos, &c, &s);
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
