// A Q4_K-shaped weight stream read by one core, with and without the packed kernels'
// software prefetch: how much of one core's DRAM read a kernel of that shape can keep.
//
// Per 2304-byte chunk (a packed Q4_K super-block of 16 rows): the f16 d's at its start,
// two scale registers, then 32 quant registers, each split into nibbles and fed to two
// `vpdpbusd` chains against broadcast activation words, the chains scaled (`vpmulld`) and
// summed once per 8 registers, one float FMA per chunk. Prefetch modes (`pf=`): 0 none; 1
// every line twice, into L2 8 KB ahead and into L1 1 KB ahead, as
// `kernels-cpu/src/prefetch.rs` does; 2 into L2 only, every line; 3, 4, 7 into L2 8 KB ahead
// every 2nd, 4th, 8th line; 5 every 4th line 16 KB ahead; 6 into L1 2 KB ahead every 4th.
// MODE (argv[1], bits): 1 stores 16 floats every 16 chunks (a group's outputs), 2 adds
// ~25 integer ops on the scale registers per chunk.
//
//   gcc -O2 -march=native dev/cpu/stream_probe.c -o target/stream_probe && target/stream_probe 0
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define CHUNK 2304
#define CHUNKS 230000 /* 530 MB: many times the last-level cache */

static int32_t acts[1024];
static int pfmode;

// The prefetch of mode `pfmode` for the line at a, line l of its chunk (0 … 35).
#define PF(a, l)                                                                             \
  do {                                                                                       \
    switch (pfmode) {                                                                        \
    case 1: _mm_prefetch((a) + 8192, _MM_HINT_T2); _mm_prefetch((a) + 1024, _MM_HINT_T0); break; \
    case 2: _mm_prefetch((a) + 8192, _MM_HINT_T2); break;                                    \
    case 3: if (!((l) & 1)) _mm_prefetch((a) + 8192, _MM_HINT_T2); break;                    \
    case 4: if (!((l) & 3)) _mm_prefetch((a) + 8192, _MM_HINT_T2); break;                    \
    case 5: if (!((l) & 3)) _mm_prefetch((a) + 16384, _MM_HINT_T2); break;                   \
    case 6: if (!((l) & 3)) _mm_prefetch((a) + 2048, _MM_HINT_T0); break;                    \
    case 7: if (!((l) & 7)) _mm_prefetch((a) + 8192, _MM_HINT_T2); break;                    \
    }                                                                                        \
  } while (0)
static float *outs;
static int mode;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static __m512
stream(const uint8_t *p, size_t chunks, int pf) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i m = _mm512_set1_epi8(0x0F);
  for (size_t c = 0; c < chunks; c++) {
    const uint8_t *q = p + c * CHUNK;
    if (pf)
      for (int l = 0; l < 4; l++) PF((const char *)q + 64 * l, l);
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)q));
    __m512i sc0 = _mm512_loadu_si512(q + 64), sc1 = _mm512_loadu_si512(q + 128);
    __m512i isum = _mm512_setzero_si512();
    const int32_t *x = acts + (c & 7) * 64;
    for (int i = 0; i < 4; i++) {
      __m512i s0 = _mm512_setzero_si512(), s1 = s0;
      for (int k = 0; k < 8; k++) {
        const uint8_t *r = q + 256 + 64 * (8 * i + k);
        if (pf) PF((const char *)r, 4 + 8 * i + k);
        __m512i v = _mm512_loadu_si512(r);
        __m512i lo = _mm512_and_si512(v, m), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
        s0 = _mm512_dpbusd_epi32(s0, lo, _mm512_set1_epi32(x[k]));
        s1 = _mm512_dpbusd_epi32(s1, hi, _mm512_set1_epi32(x[8 + k]));
      }
      isum = _mm512_add_epi32(isum, _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0),
                                                     _mm512_mullo_epi32(s1, sc1)));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), dw, acc);
    if ((mode & 1) && (c & 15) == 15) {
      _mm512_storeu_ps(outs + (c / 16) * 16, acc);
      acc = _mm512_setzero_ps();
    }
    if (mode & 2) {
      __m512i w0 = sc0, w1 = sc1, w2 = _mm512_loadu_si512(q + 192);
      for (int j = 0; j < 6; j++) {
        w0 = _mm512_and_si512(_mm512_srli_epi32(w0, 3), w2);
        w1 = _mm512_or_si512(_mm512_slli_epi32(w1, 2), w0);
        w2 = _mm512_xor_si512(w2, w1);
      }
      acc = _mm512_add_ps(acc, _mm512_castsi512_ps(_mm512_and_si512(w2, _mm512_set1_epi32(0x3f))));
    }
  }
  return acc;
}

int main(int argc, char **argv) {
  mode = argc > 1 ? atoi(argv[1]) : 0;
  size_t bytes = (size_t)CHUNK * CHUNKS, huge = 2ul << 20;
  uint8_t *p = aligned_alloc(huge, (bytes + 2 * huge) & ~(huge - 1));
  outs = aligned_alloc(64, (CHUNKS / 16 + 16) * 64);
  if (!p || !outs) return 1;
  madvise(p, bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < bytes / 8; i++) ((uint64_t *)p)[i] = i * 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 1024; i++) acts[i] = i * 2654435761u;
  for (int pf = 0; pf < 8; pf++) {
    pfmode = pf;
    double dram = 1e9, cache = 1e9;
    for (int r = 0; r < 3; r++) {
      double t = now();
      volatile float f = _mm512_reduce_add_ps(stream(p, CHUNKS, pf));
      (void)f;
      t = now() - t;
      if (t < dram) dram = t;
    }
    for (int r = 0; r < 200; r++) { /* 460 KB: in L2 */
      double t = now();
      volatile float f = _mm512_reduce_add_ps(stream(p, 200, pf));
      (void)f;
      t = now() - t;
      if (t < cache) cache = t;
    }
    printf("pf=%d: DRAM %.1f GB/s, in cache %.1f GB/s\n", pf, bytes / dram / 1e9,
           200.0 * CHUNK / cache / 1e9);
  }
  return 0;
}
