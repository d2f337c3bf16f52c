// Reference kernels for dev/cuda's cuda-bench: what a matvec's time is measured against
// besides the device's copy bandwidth.
//
//   empty        does nothing. Launched back to back it gives the device's launch-to-launch
//                floor, the part of every kernel's time that no inner loop can remove.
//   read_words   reads n 16-byte words, each thread PROBE_LOADS of them issued together
//                (coalesced: consecutive threads, consecutive words), and writes one sum per
//                warp so that no load is dead. One launch reads the whole span once, as a
//                matvec reads its weights: the fastest a kernel reads that many bytes.
#include "common.cuh"

#define PROBE_THREADS 256
#define PROBE_LOADS 4

extern "C" __global__ void empty() {}

// words: n 16-byte words; sums: one u32 per warp of the grid, the wrapping sum of the u32s
// its threads read (the host checks it).
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    read_words(const uint4* __restrict__ words, int64_t n, uint32_t* __restrict__ sums) {
    const int64_t base = (int64_t)blockIdx.x * PROBE_THREADS * PROBE_LOADS + threadIdx.x;
    uint4 v[PROBE_LOADS];
#pragma unroll
    for (int k = 0; k < PROBE_LOADS; ++k) {
        const int64_t i = base + (int64_t)k * PROBE_THREADS;
        v[k] = i < n ? words[i] : make_uint4(0, 0, 0, 0);
    }
    uint32_t s = 0;
#pragma unroll
    for (int k = 0; k < PROBE_LOADS; ++k) s += v[k].x + v[k].y + v[k].z + v[k].w;
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % WARP_SIZE == 0) {
        sums[(int64_t)blockIdx.x * (PROBE_THREADS / WARP_SIZE) + threadIdx.x / WARP_SIZE] = s;
    }
}
