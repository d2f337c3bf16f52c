// Multi-head latent attention (DeepSeek-V2/V3/R1) in its absorbed form, over an f16 latent
// cache, as kernels-cpu's mla_attention (ops/mla.rs): every query head attends over the same
// cached rows C[j] = [rotary key | latent] (`width` values), the whole row as the key and
// its latent part (from v_off) as the value:
//
//   out[t][h] = Σ_j softmax_j(scale · q[t][h] · C[j]) · C[j][v_off …],  j = 0 … pos[t]
//
// q: [ntok, n_heads, width] f32 (each head's query already absorbed into the latent space);
// cache: [n_ctx, width] f16 bits; out: [ntok, n_heads, width − v_off] f32. Token t is at
// position pos[t] (device memory, as attention.cu reads it), clamped to the cache's rows.
//
// One CTA per MLA_HEADS heads of one token (grid (⌈n_heads / MLA_HEADS⌉, ntok)). The heads'
// queries sit in shared memory; the CTA's MLA_WARPS warps split the positions round-robin,
// and a warp reads each of its rows once for all the CTA's heads (lane i holds the row's
// values i, i + 32, …), keeping per head an online softmax (running max, running sum,
// running weighted sum of the latents) as attention.cu does; the warps' states are merged
// at the end. So the cache is read once per MLA_HEADS heads, not once per head. Not yet
// run on a GPU, nor measured: no split over positions (decode of one token has only
// ⌈n_heads / 4⌉ CTAs), no tensor cores.
#include "common.cuh"

#define MLA_WARPS 4
#define MLA_HEADS 4
// DeepSeek's rows: 64 rotary values and a latent of 512.
#define MLA_MAX_WIDTH 576
#define MLA_MAX_DV 512
#define MLA_KPL (MLA_MAX_WIDTH / WARP_SIZE)
#define MLA_VPL (MLA_MAX_DV / WARP_SIZE)

extern "C" __global__ void __launch_bounds__(MLA_WARPS * WARP_SIZE)
    mla_attention_f16(const float* __restrict__ q, const uint16_t* __restrict__ cache,
                      float* __restrict__ out, int n_heads, int width, int v_off,
                      const int* __restrict__ pos, int n_ctx, float scale) {
    __shared__ float s_q[MLA_HEADS][MLA_MAX_WIDTH];
    __shared__ float s_max[MLA_WARPS][MLA_HEADS], s_sum[MLA_WARPS][MLA_HEADS];
    __shared__ float s_acc[MLA_WARPS][MLA_HEADS][MLA_MAX_DV];
    const int h0 = blockIdx.x * MLA_HEADS, t = blockIdx.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int dv = width - v_off;
    const int n_pos = pos[t] + 1 < n_ctx ? pos[t] + 1 : n_ctx;

    // The queries, zero past the last head and past the row.
    for (int i = threadIdx.x; i < MLA_HEADS * MLA_MAX_WIDTH; i += blockDim.x) {
        const int h = i / MLA_MAX_WIDTH, c = i % MLA_MAX_WIDTH;
        s_q[h][c] = h0 + h < n_heads && c < width
                        ? q[((int64_t)t * n_heads + h0 + h) * width + c]
                        : 0.0f;
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
        out[((int64_t)t * n_heads + h0 + h) * dv + c] = o * (1.0f / total);
    }
}
