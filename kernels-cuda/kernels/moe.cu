// Mixture-of-experts routing, and the bookkeeping around a batch's experts:
//
//   moe_route         each token's router logits → its k experts (ids) and their weights,
//                     chosen as kernels-cpu's `route` (ops/route.rs) chooses them
//   moe_sort          a batch's slots (token t's j-th choice is slot t·k + j) sorted by expert:
//                     each expert's run of rows, for matmul.cu's matmul_experts_<fmt>
//   moe_gather        the input rows of the sorted slots, one after the other
//   moe_weighted_sum  each token's output: its k slots' rows times their weights, summed
//
// Decode runs moe_route, then matvec_experts.cu's kernels on the ids it wrote (no round trip
// to the host), then moe_weighted_sum; prefill runs moe_route, moe_sort, moe_gather, the
// grouped matmuls, then moe_weighted_sum through the sort's inverse permutation.
//
// Ids, offsets and permutations are read from device memory, where these kernels wrote
// them; whatever they hold, no kernel here reads or writes outside its buffers (an id or row
// out of range gives NaN, or is sorted past every expert's run).
#include "common.cuh"

#define ROUTE_MAX_EXPERTS 256
#define ROUTE_PER_LANE (ROUTE_MAX_EXPERTS / WARP_SIZE)
// The smallest sum a normalisation divides by (f16's smallest normal number), as route.rs.
#define ROUTE_MIN_WEIGHT_SUM 6.103515625e-5f
#define NO_INDEX 0x7fffffff
#define NAN_F32 __int_as_float(0x7fffffff)

// Whether candidate (v, i) beats (bv, bi): the higher score, ties to the lower index (the
// order of route.rs's stable sort).
__device__ __forceinline__ bool route_better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// The best candidate of the warp, in every lane (a lane with none holds (−∞, NO_INDEX)).
__device__ __forceinline__ void warp_best(float* v, int* i) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *i, o);
        if (route_better(ov, oi, *v, *i)) {
            *v = ov;
            *i = oi;
        }
    }
}

// One warp per token (grid.x = ntok): logits: [ntok, n_expert] f32 (n_expert ≤ 256); bias:
// [n_expert] or null; ids, weights: [ntok, n_used] (n_used ≤ n_expert, at most 32).
//
// Lane l holds experts l, l + 32, …: probabilities p (softmax, or sigmoid where `sigmoid`),
// selection scores p + bias. With n_group > 0 groups of n_expert / n_group consecutive
// experts, each scored by the sum of its two best selection scores (its one where a group is
// one expert), only the group_used best groups stay eligible. Then n_used rounds of a warp
// argmax choose the experts, ties to the lower index; lane j keeps choice j. The weights are
// the chosen experts' p, divided by their sum (clamped below at 2⁻¹⁴; added in choice order,
// as route.rs adds them) where `norm`, times `scale` unless it is 0 or 1.
extern "C" __global__ void __launch_bounds__(WARP_SIZE)
    moe_route(const float* __restrict__ logits, const float* __restrict__ bias,
              uint32_t* __restrict__ ids, float* __restrict__ weights, int n_expert, int n_used,
              int sigmoid, int norm, float scale, int n_group, int group_used) {
    __shared__ float s_sel[ROUTE_MAX_EXPERTS];
    __shared__ float s_group[ROUTE_MAX_EXPERTS];
    __shared__ int s_kept[ROUTE_MAX_EXPERTS];
    const int lane = threadIdx.x;
    const int64_t t = blockIdx.x;
    const float* x = logits + t * n_expert;

    float p[ROUTE_PER_LANE], sel[ROUTE_PER_LANE];
    uint32_t cand = 0;  // bit i: expert lane + 32i is a candidate
#pragma unroll
    for (int i = 0; i < ROUTE_PER_LANE; ++i) {
        const int e = lane + WARP_SIZE * i;
        p[i] = e < n_expert ? x[e] : NEG_INF;
        if (e < n_expert) cand |= 1u << i;
    }
    if (sigmoid) {
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) p[i] = 1.0f / (1.0f + expf(-p[i]));
    } else {
        float m = NEG_INF;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) m = fmaxf(m, p[i]);
        m = warp_max(m);
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) {
            p[i] = (cand >> i) & 1 ? expf(p[i] - m) : 0.0f;
            sum += p[i];
        }
        const float inv = 1.0f / warp_sum(sum);
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) p[i] *= inv;
    }
#pragma unroll
    for (int i = 0; i < ROUTE_PER_LANE; ++i) {
        const int e = lane + WARP_SIZE * i;
        sel[i] = bias != nullptr && e < n_expert ? p[i] + bias[e] : p[i];
    }

    if (n_group > 0) {
        const int per = n_expert / n_group;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < n_expert) s_sel[e] = sel[i];
        }
        __syncwarp();
        for (int g = lane; g < n_group; g += WARP_SIZE) {
            float a = NEG_INF, b = NEG_INF;  // the group's best and second best
            for (int e = g * per; e < (g + 1) * per; ++e) {
                const float v = s_sel[e];
                if (v > a) {
                    b = a;
                    a = v;
                } else if (v > b) {
                    b = v;
                }
            }
            s_group[g] = per == 1 ? a : a + b;
            s_kept[g] = 0;
        }
        __syncwarp();
        for (int r = 0; r < group_used; ++r) {
            float bv = NEG_INF;
            int bi = NO_INDEX;
            for (int g = lane; g < n_group; g += WARP_SIZE) {
                if (!s_kept[g] && route_better(s_group[g], g, bv, bi)) {
                    bv = s_group[g];
                    bi = g;
                }
            }
            warp_best(&bv, &bi);
            if (lane == 0 && bi < n_group) s_kept[bi] = 1;
            __syncwarp();
        }
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if (e < n_expert && !s_kept[e / per]) cand &= ~(1u << i);
        }
    }

    // Choice r goes to lane r: its expert and probability.
    uint32_t my_id = NO_INDEX;
    float my_w = 0.0f;
    for (int r = 0; r < n_used; ++r) {
        float bv = NEG_INF, bp = 0.0f;
        int bi = NO_INDEX;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) {
            const int e = lane + WARP_SIZE * i;
            if ((cand >> i) & 1 && route_better(sel[i], e, bv, bi)) {
                bv = sel[i];
                bi = e;
                bp = p[i];
            }
        }
        const int mine = bi;
        warp_best(&bv, &bi);
        // The winner's own lane has its p (every lane computes the same owner).
        const float wp = __shfl_sync(0xffffffffu, bp, bi % WARP_SIZE);
        if (mine == bi && bi != NO_INDEX) cand &= ~(1u << (bi / WARP_SIZE));
        if (lane == r) {
            my_id = (uint32_t)bi;
            my_w = wp;
        }
    }

    float sum = 0.0f;
    if (norm) {
        for (int r = 0; r < n_used; ++r) sum += __shfl_sync(0xffffffffu, my_w, r);
        sum = fmaxf(sum, ROUTE_MIN_WEIGHT_SUM);
    }
    if (lane < n_used) {
        float w = norm ? my_w / sum : my_w;
        if (scale != 0.0f && scale != 1.0f) w *= scale;
        ids[t * n_used + lane] = my_id;
        weights[t * n_used + lane] = w;
    }
}

#define SORT_THREADS 256
#define SORT_TILE 2048

// Bucket b of the sort: expert b (b < n_expert), or every id ≥ n_expert (b = n_expert).
__device__ __forceinline__ bool in_bucket(uint32_t id, int b, int n_expert) {
    return b < n_expert ? id == (uint32_t)b : id >= (uint32_t)n_expert;
}

// One CTA of SORT_THREADS (grid 1), n_expert ≤ 256: a stable counting sort of the n slots'
// ids (ids: [n]) by expert. offsets: [n_expert + 1], expert e's rows are offsets[e] …
// offsets[e + 1] − 1 (offsets[n_expert] = the number of slots with a valid id; the others
// follow, in no expert's run); perm: [n], the slot of each sorted row; inv: [n], the sorted
// row of each slot. Within an expert the slots keep their order, so the result depends on
// the ids alone. Thread i counts, then places, buckets i and i + SORT_THREADS, reading the
// ids a tile at a time from shared memory (every thread reads the same word: a broadcast).
extern "C" __global__ void __launch_bounds__(SORT_THREADS)
    moe_sort(const uint32_t* __restrict__ ids, int n, int n_expert,
             uint32_t* __restrict__ offsets, uint32_t* __restrict__ perm,
             uint32_t* __restrict__ inv) {
    __shared__ uint32_t tile[SORT_TILE];
    __shared__ uint32_t start[ROUTE_MAX_EXPERTS + 1];
    const int tid = threadIdx.x;
    uint32_t count[2] = {0, 0};
    for (int base = 0; base < n; base += SORT_TILE) {
        const int len = n - base < SORT_TILE ? n - base : SORT_TILE;
        __syncthreads();
        for (int i = tid; i < len; i += SORT_THREADS) tile[i] = ids[base + i];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const int b = tid + k * SORT_THREADS;
            if (b > n_expert) continue;
            for (int i = 0; i < len; ++i) count[k] += in_bucket(tile[i], b, n_expert);
        }
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        const int b = tid + k * SORT_THREADS;
        if (b <= n_expert) start[b] = count[k];
    }
    __syncthreads();
    if (tid == 0) {  // exclusive prefix sum over at most 257 buckets
        uint32_t run = 0;
        for (int b = 0; b <= n_expert; ++b) {
            const uint32_t c = start[b];
            start[b] = run;
            run += c;
        }
    }
    __syncthreads();
    uint32_t next[2] = {0, 0};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        const int b = tid + k * SORT_THREADS;
        if (b <= n_expert) {
            next[k] = start[b];
            offsets[b] = start[b];
        }
    }
    for (int base = 0; base < n; base += SORT_TILE) {
        const int len = n - base < SORT_TILE ? n - base : SORT_TILE;
        __syncthreads();
        for (int i = tid; i < len; i += SORT_THREADS) tile[i] = ids[base + i];
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const int b = tid + k * SORT_THREADS;
            if (b > n_expert) continue;
            for (int i = 0; i < len; ++i) {
                if (in_bucket(tile[i], b, n_expert)) {
                    perm[next[k]] = (uint32_t)(base + i);
                    inv[base + i] = next[k];
                    ++next[k];
                }
            }
        }
    }
}

// xg[p] = x[perm[p] / rows_per_x] for the n sorted rows (grid.x = n): x: [nx, ncols], xg:
// [n, ncols]. rows_per_x is k where x holds one row per token (the gate and up inputs), 1
// where it holds one per slot. A source row past x gives a NaN row.
extern "C" __global__ void moe_gather(const float* __restrict__ x,
                                      const uint32_t* __restrict__ perm,
                                      float* __restrict__ xg, int ncols, int nx, int rows_per_x) {
    const int64_t p = blockIdx.x;
    const uint32_t src = perm[p] / (uint32_t)rows_per_x;
    float* dst = xg + p * ncols;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
        dst[c] = src < (uint32_t)nx ? x[(int64_t)src * ncols + c] : NAN_F32;
    }
}

// out[t] = Σ_j weights[t·k + j] · y[row(t·k + j)], j = 0 … k − 1 in order (grid.x = ntok):
// y: [ny, ncols]; rows: [ntok·k] (the sort's inverse permutation), or null for row(s) = s
// (decode: y holds the slots in order); out: [ntok, ncols]. A row past y gives NaN.
extern "C" __global__ void moe_weighted_sum(const float* __restrict__ y,
                                            const uint32_t* __restrict__ rows,
                                            const float* __restrict__ weights,
                                            float* __restrict__ out, int ncols, int k, int ny) {
    const int64_t t = blockIdx.x;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; ++j) {
            const int64_t s = t * k + j;
            const uint32_t r = rows != nullptr ? rows[s] : (uint32_t)s;
            acc += r < (uint32_t)ny ? weights[s] * y[(int64_t)r * ncols + c] : NAN_F32;
        }
        out[t * ncols + c] = acc;
    }
}
