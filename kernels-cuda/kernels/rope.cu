// Rotary position embedding, normal (pairs 2i, 2i+1) and NeoX (pairs i, i + n_rot/2),
// in place on x: [ntok, nhead, head_dim]; pos: [ntok] positions.
//
// θᵢ = freq_scale · pos · base^(−2i/n_rot), with base^(−2i/n_rot) formed as ggml and the CPU
// reference form it: theta_scale = base^(−2/n_rot) in f32, multiplied in i times. That makes
// the angles bit-identical to the CPU's; only sin/cos may differ by their last bit.
#include "common.cuh"

__device__ __forceinline__ void rope_pair(float* x, int a, int b, int i, int pos,
                                          float theta_scale, float freq_scale) {
    float theta = (float)pos;
    for (int k = 0; k < i; ++k) theta *= theta_scale;
    float s, c;
    sincosf(freq_scale * theta, &s, &c);
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}

// One thread per rotated pair: grid.x covers ntok · nhead · n_rot/2.
#define ROPE(name, first, second)                                                              \
    extern "C" __global__ void name(float* x, const int32_t* __restrict__ pos, int ntok,       \
                                    int nhead, int head_dim, int n_rot, float theta_scale,     \
                                    float freq_scale) {                                        \
        const int half = n_rot / 2;                                                            \
        const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;                      \
        if (g >= (int64_t)ntok * nhead * half) return;                                         \
        const int i = (int)(g % half);                                                         \
        const int64_t head = g / half;                                                         \
        const int t = (int)(head / nhead);                                                     \
        rope_pair(x + head * head_dim, first, second, i, pos[t], theta_scale, freq_scale);     \
    }
ROPE(rope_norm, 2 * i, 2 * i + 1)
ROPE(rope_neox, i, i + half)
