// Grouped-query attention over an f16 KV cache, causal, for one token or a batch.
//
// q, out: [ntok, nhead, head_dim] f32. k, v: [rows, nkv·head_dim] f16 (position-major, as
// the CPU KvCache stores them), each sequence's n_ctx rows from its base row. Query token t
// is at position pos[t] of the sequence whose rows start at base[t] (device memory, so a
// captured decode step replays at any position, and a batch may hold several sequences'
// tokens) and attends to its positions 0 … pos[t], clamped to n_ctx; a base outside
// 0 … rows − n_ctx attends to nothing (zeros out). Query head h reads KV head h / (nhead /
// nkv).
// Scores are scaled by `scale` (1/√head_dim).
//
// One CTA per (head, token); its 4 warps split the positions round-robin and each keeps an
// online softmax (running max, running sum, running weighted sum of V); the warps' states
// are merged at the end. head_dim ≤ 256: each lane holds head_dim/32 accumulators.
// `outq`, when not null, also receives the output as q8_1 blocks (rows of nhead·head_dim).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP_SIZE)
    attention_f16(const float* __restrict__ q, const uint16_t* __restrict__ k,
                  const uint16_t* __restrict__ v, float* __restrict__ out,
                  block_q8_1* __restrict__ outq, int nhead, int nkv,
                  int head_dim, const int* __restrict__ pos, const int* __restrict__ base,
                  int n_ctx, int rows, float scale) {
    __shared__ float s_max[ATT_WARPS], s_sum[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_PER_LANE * WARP_SIZE];
    const int h = blockIdx.x, t = blockIdx.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int kv_dim = nkv * head_dim;
    const int kv_off = (h / (nhead / nkv)) * head_dim;
    const int64_t qo = ((int64_t)t * nhead + h) * head_dim;
    const int b = base[t];
    const int n_pos = b < 0 || b > rows - n_ctx ? 0 : pos[t] + 1 < n_ctx ? pos[t] + 1 : n_ctx;
    k += (int64_t)(b < 0 ? 0 : b) * kv_dim;
    v += (int64_t)(b < 0 ? 0 : b) * kv_dim;

    float qr[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
    for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
        const int c = lane + WARP_SIZE * u;
        qr[u] = c < head_dim ? q[qo + c] : 0.0f;
        acc[u] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j = warp; j < n_pos; j += ATT_WARPS) {
        const uint16_t* kj = k + (int64_t)j * kv_dim + kv_off;
        float s = 0.0f;
#pragma unroll
        for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
            const int c = lane + WARP_SIZE * u;
            if (c < head_dim) s += qr[u] * f16_to_f32(kj[c]);
        }
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);  // 0 on the first position (m = −∞)
        const float p = expf(s - m_new);
        l = l * corr + p;
        const uint16_t* vj = v + (int64_t)j * kv_dim + kv_off;
#pragma unroll
        for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
            const int c = lane + WARP_SIZE * u;
            if (c < head_dim) acc[u] = acc[u] * corr + p * f16_to_f32(vj[c]);
        }
        m = m_new;
    }

    if (lane == 0) {
        s_max[warp] = m;
        s_sum[warp] = l;
    }
#pragma unroll
    for (int u = 0; u < ATT_MAX_PER_LANE; ++u) s_acc[warp][lane + WARP_SIZE * u] = acc[u];
    __syncthreads();

    // Merge: every warp's state rescaled to the overall max (a warp that saw no position
    // has m = −∞ and weight 0; warp 0 always sees position 0).
    float gmax = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w) gmax = fmaxf(gmax, s_max[w]);
    float weight[ATT_WARPS], total = 0.0f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; ++w) {
        weight[w] = s_max[w] == NEG_INF ? 0.0f : expf(s_max[w] - gmax);
        total += s_sum[w] * weight[w];
    }
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    // With a q8_1 output (head_dim a multiple of 32, so a head is whole blocks and every
    // warp of the loop holds one), each warp also quantizes the 32 values it wrote.
    for (int c0 = warp * WARP_SIZE; c0 < head_dim; c0 += blockDim.x) {
        const int c = c0 + lane;
        float o = 0.0f;
        if (c < head_dim) {
#pragma unroll
            for (int w = 0; w < ATT_WARPS; ++w) o += s_acc[w][c] * weight[w];
            o *= inv;
            out[qo + c] = o;
        }
        if (outq != nullptr) quantize_q8_1_warp(o, lane, outq + (qo + c0) / QK8_1);
    }
}
