// Multi-head latent attention (DeepSeek-V2/V3/R1) in its absorbed form, over an f16 latent
// cache, as the CPU's forward pass (engine backend/host/block.rs, mla) runs it: the cache
// rows from attn_kv_a_mqa's output (mla_store_latent), each head's query split into the part
// absorbed into the latent space and the rotary part (mla_split_q), the absorption through
// an older file's attn_kv_b read transposed (mla_absorb_t_<fmt>; a newer file's attn_k_b is
// an expert-style stack for matvec_experts), and the attention itself (mla_attention_f16).
#include "formats.cuh"
#include "rope.cuh"

// The cache rows [rope(k_pe) | rms_norm(latent) · norm] of ntok tokens from kv: [ntok,
// kvr + pe] (attn_kv_a_mqa's output: the latent, then the rotary key), stored as f16 bits
// at row base[t] + pos[t] of cache: [rows, pe + kvr], each sequence's n_ctx rows from its
// base; a position outside 0 … n_ctx − 1, or a base outside 0 … rows − n_ctx, stores
// nothing. The first n_rot values of the rotary part rotate (pairs as rope.cu's), the rest
// of it is copied. One CTA per token.
#define MLA_STORE_LATENT(name, first, second)                                                  \
    extern "C" __global__ void name(const float* __restrict__ kv,                              \
                                    const float* __restrict__ norm, uint16_t* cache,           \
                                    const int* __restrict__ pos, const int* __restrict__ base, \
                                    int kvr, int pe, int n_rot, int n_ctx, int rows, float eps,\
                                    ROPE_PARAMS) {                                             \
        const int t = blockIdx.x, p = pos[t], r0 = base[t], width = pe + kvr;                  \
        const int half = n_rot / 2;                                                            \
        const float* row = kv + (int64_t)t * width;                                            \
        const float scale = rms_scale(row, kvr, eps);                                          \
        if (p < 0 || p >= n_ctx || r0 < 0 || r0 > rows - n_ctx) return;                        \
        uint16_t* dst = cache + (int64_t)(r0 + p) * width;                                     \
        for (int c = threadIdx.x; c < kvr; c += blockDim.x)                                    \
            dst[pe + c] = f32_to_f16(row[c] * scale * norm[c]);                                \
        const float* k_pe = row + kvr;                                                         \
        for (int i = threadIdx.x; i < half; i += blockDim.x) {                                 \
            const int a = first, b = second;                                                   \
            float c, s;                                                                        \
            rope_cos_sin(ROPE_ANGLE, i, p, &c, &s);                                            \
            dst[a] = f32_to_f16(k_pe[a] * c - k_pe[b] * s);                                    \
            dst[b] = f32_to_f16(k_pe[a] * s + k_pe[b] * c);                                    \
        }                                                                                      \
        for (int c = n_rot + threadIdx.x; c < pe; c += blockDim.x)                             \
            dst[c] = f32_to_f16(k_pe[c]);                                                      \
    }
MLA_STORE_LATENT(mla_store_latent_norm, 2 * i, 2 * i + 1)
MLA_STORE_LATENT(mla_store_latent_neox, i, i + half)

// Each head's query q: [ntok, n_heads, nope + pe] (as projected: the part to absorb, then
// the rotary part) into qn: [ntok, n_heads, nope] and q_pe: [ntok, n_heads, pe], the first
// n_rot values of q_pe rotated at pos[t] (pairs as rope.cu's). One CTA per head and token:
// grid (n_heads, ntok).
#define MLA_SPLIT_Q(name, first, second)                                                       \
    extern "C" __global__ void name(const float* __restrict__ q, float* __restrict__ qn,       \
                                    float* __restrict__ q_pe, const int* __restrict__ pos,     \
                                    int n_heads, int nope, int pe, int n_rot, ROPE_PARAMS) {   \
        const int t = blockIdx.y, half = n_rot / 2;                                            \
        const int64_t head = (int64_t)t * n_heads + blockIdx.x;                                \
        const float* src = q + head * (nope + pe);                                             \
        for (int c = threadIdx.x; c < nope; c += blockDim.x) qn[head * nope + c] = src[c];     \
        const float* r = src + nope;                                                           \
        float* dst = q_pe + head * pe;                                                         \
        for (int i = threadIdx.x; i < half; i += blockDim.x) {                                 \
            const int a = first, b = second;                                                   \
            float c, s;                                                                        \
            rope_cos_sin(ROPE_ANGLE, i, pos[t], &c, &s);                                       \
            dst[a] = r[a] * c - r[b] * s;                                                      \
            dst[b] = r[a] * s + r[b] * c;                                                      \
        }                                                                                      \
        for (int c = n_rot + threadIdx.x; c < pe; c += blockDim.x) dst[c] = r[c];              \
    }
MLA_SPLIT_Q(mla_split_q_norm, 2 * i, 2 * i + 1)
MLA_SPLIT_Q(mla_split_q_neox, i, i + half)

// The most values of a head's query part that mla_absorb_t stages (DeepSeek's is 128).
#define MLA_MAX_NOPE 512
// Threads (columns of the latent) a CTA of mla_absorb_t.
#define MLA_T_THREADS 128

// An older file's absorption: each slot's query part through its head's k rows of
// attn_kv_b, read transposed (the CPU's mul_transposed):
//
//   lat[s][c] = Σ_r x[s][r] · W[h·nope + r][c],  r = 0 … nope − 1,  h = s mod n_heads
//
// W: [n_heads·nope, kvr] in the format (each head's nope k rows, the heads one after the
// other: attn_kv_b without its v rows); x: [n_slot, nope]; lat: [n_slot, kvr]. Slot s is
// token s / n_heads's head s mod n_heads. One CTA per slot and MLA_T_THREADS columns (grid
// (n_slot, ⌈kvr / MLA_T_THREADS⌉)): each thread dequantizes its column of the nope rows,
// adjacent threads reading adjacent bytes of a row, the sum in the order of r.
#define MLA_ABSORB_T(name, qk, bytes)                                                          \
    extern "C" __global__ void __launch_bounds__(MLA_T_THREADS) mla_absorb_t_##name(           \
        const uint8_t* __restrict__ w, const float* __restrict__ x, float* __restrict__ lat,   \
        int n_heads, int nope, int kvr) {                                                      \
        __shared__ float s_x[MLA_MAX_NOPE];                                                    \
        const int64_t s = blockIdx.x;                                                          \
        const int h = (int)(s % n_heads), c = blockIdx.y * blockDim.x + threadIdx.x;           \
        for (int r = threadIdx.x; r < nope; r += blockDim.x) s_x[r] = x[s * nope + r];         \
        __syncthreads();                                                                       \
        if (c >= kvr) return;                                                                  \
        const int64_t row_bytes = (int64_t)(kvr / qk) * bytes;                                 \
        const uint8_t* col = w + (int64_t)h * nope * row_bytes + (int64_t)(c / qk) * bytes;    \
        float acc = 0.0f;                                                                      \
        for (int r = 0; r < nope; ++r)                                                         \
            acc += s_x[r] * dequant_##name(col + r * row_bytes, c % qk);                       \
        lat[s * kvr + c] = acc;                                                                \
    }
FOR_EACH_FORMAT(MLA_ABSORB_T)

// The attention, as kernels-cpu's mla_attention (ops/mla.rs): every query head attends over
// the same cached rows C[j] = [rotary key | latent] (`width` values), the whole row as the
// key and its latent part (from v_off) as the value:
//
//   out[t][h] = Σ_j softmax_j(scale · q[t][h] · C[j]) · C[j][v_off …],  j = 0 … pos[t]
//
// A head's query q[t][h] is [q_pe[t][h] | q_lat[t][h]]: q_pe: [ntok, n_heads, v_off] (the
// rotary part), q_lat: [ntok, n_heads, width − v_off] (absorbed into the latent space), f32;
// cache: [rows, width] f16 bits, each sequence's n_ctx rows from its base row; out: [ntok,
// n_heads, width − v_off] f32. Token t is at position pos[t] of the sequence whose rows
// start at base[t] (device memory, as attention.cu reads them), clamped to n_ctx; a base
// outside 0 … rows − n_ctx attends to nothing (zeros out).
//
// One CTA per MLA_HEADS heads of one token (grid (⌈n_heads / MLA_HEADS⌉, ntok)). The heads'
// queries sit in shared memory; the CTA's MLA_WARPS warps split the positions round-robin,
// and a warp reads each of its rows once for all the CTA's heads (lane i holds the row's
// values i, i + 32, …), keeping per head an online softmax (running max, running sum,
// running weighted sum of the latents) as attention.cu does; the warps' states are merged
// at the end. So the cache is read once per MLA_HEADS heads, not once per head. Not yet
// run on a GPU, nor measured: no split over positions (decode of one token has only
// ⌈n_heads / 4⌉ CTAs), no tensor cores.
#define MLA_WARPS 4
#define MLA_HEADS 4
// DeepSeek's rows: 64 rotary values and a latent of 512.
#define MLA_MAX_WIDTH 576
#define MLA_MAX_DV 512
#define MLA_KPL (MLA_MAX_WIDTH / WARP_SIZE)
#define MLA_VPL (MLA_MAX_DV / WARP_SIZE)

extern "C" __global__ void __launch_bounds__(MLA_WARPS * WARP_SIZE)
    mla_attention_f16(const float* __restrict__ q_pe, const float* __restrict__ q_lat,
                      const uint16_t* __restrict__ cache,
                      float* __restrict__ out, int n_heads, int width, int v_off,
                      const int* __restrict__ pos, const int* __restrict__ base, int n_ctx,
                      int rows, float scale) {
    __shared__ float s_q[MLA_HEADS][MLA_MAX_WIDTH];
    __shared__ float s_max[MLA_WARPS][MLA_HEADS], s_sum[MLA_WARPS][MLA_HEADS];
    __shared__ float s_acc[MLA_WARPS][MLA_HEADS][MLA_MAX_DV];
    const int h0 = blockIdx.x * MLA_HEADS, t = blockIdx.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int dv = width - v_off;
    const int b = base[t];
    const int n_pos = b < 0 || b > rows - n_ctx ? 0 : pos[t] + 1 < n_ctx ? pos[t] + 1 : n_ctx;
    cache += (int64_t)(b < 0 ? 0 : b) * width;

    // The queries, zero past the last head and past the row.
    for (int i = threadIdx.x; i < MLA_HEADS * MLA_MAX_WIDTH; i += blockDim.x) {
        const int h = i / MLA_MAX_WIDTH, c = i % MLA_MAX_WIDTH;
        const int64_t head = (int64_t)t * n_heads + h0 + h;
        s_q[h][c] = h0 + h >= n_heads || c >= width ? 0.0f
                    : c < v_off                     ? q_pe[head * v_off + c]
                                                    : q_lat[head * dv + c - v_off];
    }
    __syncthreads();

    float m[MLA_HEADS], l[MLA_HEADS], acc[MLA_HEADS][MLA_VPL];
#pragma unroll
    for (int h = 0; h < MLA_HEADS; ++h) {
        m[h] = NEG_INF;
        l[h] = 0.0f;
#pragma unroll
        for (int u = 0; u < MLA_VPL; ++u) acc[h][u] = 0.0f;
    }
    for (int j = warp; j < n_pos; j += MLA_WARPS) {
        const uint16_t* row = cache + (int64_t)j * width;
        float k[MLA_KPL];
#pragma unroll
        for (int u = 0; u < MLA_KPL; ++u) {
            const int c = lane + WARP_SIZE * u;
            k[u] = c < width ? f16_to_f32(row[c]) : 0.0f;
        }
        float s[MLA_HEADS];
#pragma unroll
        for (int h = 0; h < MLA_HEADS; ++h) {
            float d = 0.0f;
#pragma unroll
            for (int u = 0; u < MLA_KPL; ++u) d += s_q[h][lane + WARP_SIZE * u] * k[u];
            s[h] = d;
        }
        float corr[MLA_HEADS], p[MLA_HEADS];
#pragma unroll
        for (int h = 0; h < MLA_HEADS; ++h) {
            const float sh = warp_sum(s[h]) * scale;
            const float m_new = fmaxf(m[h], sh);
            corr[h] = expf(m[h] - m_new);  // 0 on the warp's first position (m = −∞)
            p[h] = expf(sh - m_new);
            l[h] = l[h] * corr[h] + p[h];
            m[h] = m_new;
        }
#pragma unroll
        for (int u = 0; u < MLA_VPL; ++u) {
            const int c = lane + WARP_SIZE * u;
            const float v = c < dv ? f16_to_f32(row[v_off + c]) : 0.0f;
#pragma unroll
            for (int h = 0; h < MLA_HEADS; ++h) acc[h][u] = acc[h][u] * corr[h] + p[h] * v;
        }
    }

    if (lane == 0) {
#pragma unroll
        for (int h = 0; h < MLA_HEADS; ++h) {
            s_max[warp][h] = m[h];
            s_sum[warp][h] = l[h];
        }
    }
#pragma unroll
    for (int h = 0; h < MLA_HEADS; ++h) {
#pragma unroll
        for (int u = 0; u < MLA_VPL; ++u) s_acc[warp][h][lane + WARP_SIZE * u] = acc[h][u];
    }
    __syncthreads();

    // Merge: every warp's state rescaled to the overall max (a warp that saw no position has
    // m = −∞ and weight 0; warp 0 always sees position 0).
    for (int i = threadIdx.x; i < MLA_HEADS * dv; i += blockDim.x) {
        const int h = i / dv, c = i % dv;
        if (h0 + h >= n_heads) break;
        float gmax = NEG_INF;
#pragma unroll
        for (int w = 0; w < MLA_WARPS; ++w) gmax = fmaxf(gmax, s_max[w][h]);
        float o = 0.0f, total = 0.0f;
#pragma unroll
        for (int w = 0; w < MLA_WARPS; ++w) {
            const float weight = s_max[w][h] == NEG_INF ? 0.0f : expf(s_max[w][h] - gmax);
            total += s_sum[w][h] * weight;
            o += s_acc[w][h][c] * weight;
        }
        out[((int64_t)t * n_heads + h0 + h) * dv + c] = total > 0.0f ? o * (1.0f / total) : 0.0f;
    }
}
