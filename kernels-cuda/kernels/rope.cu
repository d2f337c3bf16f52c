// Rotary position embedding, normal (pairs 2i, 2i+1) and NeoX (pairs i, i + n_rot/2),
// in place on x: [ntok, nhead, head_dim]; pos: [ntok] positions. The angles (and YaRN) as
// rope.cuh forms them.
#include "rope.cuh"

// One thread per rotated pair: grid.x covers ntok · nhead · n_rot/2.
#define ROPE(name, first, second)                                                              \
    extern "C" __global__ void name(float* x, const int32_t* __restrict__ pos, int ntok,       \
                                    int nhead, int head_dim, int n_rot, ROPE_PARAMS) {         \
        const int half = n_rot / 2;                                                            \
        const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;                      \
        if (g >= (int64_t)ntok * nhead * half) return;                                         \
        const int i = (int)(g % half);                                                         \
        const int64_t head = g / half;                                                         \
        const int t = (int)(head / nhead);                                                     \
        rope_pair(x + head * head_dim, first, second, i, pos[t], ROPE_ANGLE);                  \
    }
ROPE(rope_norm, 2 * i, 2 * i + 1)
ROPE(rope_neox, i, i + half)

// Decode's attention inputs in one launch: RoPE on q ([ntok, nhead, head_dim]) and k
// ([ntok, nkv, head_dim]) in place, exactly as the rope kernels above, then k (rotated) and
// v stored as f16 bits at row base[t] + pos[t] of the caches kc and vc ([rows,
// nkv·head_dim]: each sequence's n_ctx rows from its base); a position outside
// 0 … n_ctx − 1, or a base outside 0 … rows − n_ctx, stores nothing. One thread per pair of values of each
// q, k and v head: the first n_rot/2 pairs of a q or k head rotate, the rest of it (dims
// n_rot …) only move to the cache (k), and v pairs are only stored.
#define ROPE_STORE(name, first, second)                                                        \
    extern "C" __global__ void name(float* q, float* k, const float* __restrict__ v,           \
                                    uint16_t* kc, uint16_t* vc, const int32_t* __restrict__ pos,\
                                    const int32_t* __restrict__ base, int ntok, int nhead,     \
                                    int nkv, int head_dim, int n_rot, int n_ctx, int rows,     \
                                    ROPE_PARAMS) {                                             \
        const int pairs = head_dim / 2, half = n_rot / 2, heads = nhead + 2 * nkv;             \
        const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;                      \
        if (g >= (int64_t)ntok * heads * pairs) return;                                        \
        const int i = (int)(g % pairs), h = (int)((g / pairs) % heads);                        \
        const int t = (int)(g / ((int64_t)pairs * heads)), p = pos[t], r0 = base[t];           \
        const bool store = p >= 0 && p < n_ctx && r0 >= 0 && r0 <= rows - n_ctx;               \
        if (h >= nhead + nkv) { /* a v head: store only */                                     \
            const int kvh = h - nhead - nkv;                                                   \
            const float* xv = v + ((int64_t)t * nkv + kvh) * head_dim;                         \
            uint16_t* dst = vc + ((int64_t)(r0 + p) * nkv + kvh) * head_dim;                   \
            if (store) {                                                                       \
                dst[2 * i] = f32_to_f16(xv[2 * i]);                                            \
                dst[2 * i + 1] = f32_to_f16(xv[2 * i + 1]);                                    \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        const bool is_k = h >= nhead;                                                          \
        const int kvh = h - nhead;                                                             \
        float* x = is_k ? k + ((int64_t)t * nkv + kvh) * head_dim                              \
                        : q + ((int64_t)t * nhead + h) * head_dim;                             \
        int a, b;                                                                              \
        if (i < half) {                                                                        \
            a = first;                                                                         \
            b = second;                                                                        \
            rope_pair(x, a, b, i, p, ROPE_ANGLE);                                              \
        } else {                                                                               \
            a = n_rot + 2 * (i - half);                                                        \
            b = a + 1;                                                                         \
        }                                                                                      \
        if (is_k && store) {                                                                   \
            uint16_t* dst = kc + ((int64_t)(r0 + p) * nkv + kvh) * head_dim;                   \
            dst[a] = f32_to_f16(x[a]);                                                         \
            dst[b] = f32_to_f16(x[b]);                                                         \
        }                                                                                      \
    }
ROPE_STORE(rope_store_kv_norm, 2 * i, 2 * i + 1)
ROPE_STORE(rope_store_kv_neox, i, i + half)
