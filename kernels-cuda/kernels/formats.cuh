// Weight formats on the GPU: for each, the block size, the bytes per block, and
//   dequant_<fmt>(block, e)       element e (0 ≤ e < block size) as f32, the same
//                                 arithmetic as the CPU reference (kernels-cpu/src/formats)
//   dot_<fmt>(block, u, x, xs)    Σ over the weights of unit u of the block times x (its
//                                 q8_1 blocks as xblocks): for the legacy formats the whole
//                                 block (u = 0) times x[0], for the K-quants the two
//                                 32-weight sub-blocks i of unit u (0..3) times x[i·xs]
// Layouts: docs/formats.md, kernels-cpu/src/formats/blocks.rs (sizes asserted there).
// Products that the CPU reference rounds separately are written with __fmul_rn so that the
// compiler does not fuse them into an FMA: dequantization is then bit-exact with the CPU.
#pragma once
#include "common.cuh"

#define QK4_0 32
#define QK_K 256

#define BYTES_Q4_0 18
#define BYTES_Q4_1 20
#define BYTES_Q5_0 22
#define BYTES_Q5_1 24
#define BYTES_Q8_0 34
#define BYTES_Q2_K 84
#define BYTES_Q3_K 110
#define BYTES_Q4_K 144
#define BYTES_Q5_K 176
#define BYTES_Q6_K 210

// ---- legacy formats (32 per block) --------------------------------------------------------
// Element j < 16 is the low nibble of qs[j], element j ≥ 16 the high nibble of qs[j − 16].

__device__ __forceinline__ int nibble(const uint8_t* qs, int e) {
    return e < 16 ? (qs[e] & 0xF) : (qs[e - 16] >> 4);
}
// Fifth bit of element e: bit e of qh read as a little-endian u32.
__device__ __forceinline__ int bit5(const uint8_t* qh, int e) {
    return (qh[e / 8] >> (e % 8)) & 1;
}

__device__ __forceinline__ float dequant_q4_0(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b));
    return (float)(nibble(b + 2, e) - 8) * d;
}
__device__ __forceinline__ float dequant_q4_1(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b)), m = f16_to_f32(load_u16(b + 2));
    return __fmul_rn((float)nibble(b + 4, e), d) + m;
}
__device__ __forceinline__ float dequant_q5_0(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b));
    const int q = nibble(b + 6, e) | (bit5(b + 2, e) << 4);
    return (float)(q - 16) * d;
}
__device__ __forceinline__ float dequant_q5_1(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b)), m = f16_to_f32(load_u16(b + 2));
    const int q = nibble(b + 8, e) | (bit5(b + 4, e) << 4);
    return __fmul_rn((float)q, d) + m;
}
__device__ __forceinline__ float dequant_q8_0(const uint8_t* b, int e) {
    return (float)((const int8_t*)(b + 2))[e] * f16_to_f32(load_u16(b));
}

// ---- K-quants (256 per super-block) -------------------------------------------------------

// Six-bit scale and min of sub-block j (0..7) of Q4_K/Q5_K from the 12 packed bytes q.
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q3_K's 16 six-bit scales (minus 32) from 12 packed bytes: the low four bits of scale i
// are a nibble of byte i % 8 (low for i < 8), the high two bits are bits 2·(i/4) of byte
// 8 + i % 4.
__device__ __forceinline__ int scale_q3_k(const uint8_t* sc, int i) {
    const int lo = i < 8 ? (sc[i] & 0xF) : (sc[i - 8] >> 4);
    const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82. Element e: half h = e/128, r = e%128,
// byte qs[32h + r%32] shifted by 2·(r/32); sub-block of 16 (scale index) = e/16.
__device__ __forceinline__ float dequant_q2_k(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b + 80)), dmin = f16_to_f32(load_u16(b + 82));
    const int sc = b[e / 16];
    const int r = e % 128;
    const int q = (b[16 + 32 * (e / 128) + r % 32] >> (2 * (r / 32))) & 3;
    const float dl = __fmul_rn(d, (float)(sc & 0xF)), ml = __fmul_rn(dmin, (float)(sc >> 4));
    return __fmul_rn(dl, (float)q) - ml;
}

// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Element e: h = e/128, j = (e%128)/32,
// l = e%32; two low bits from qs[32h + l] >> 2j, the high bit is bit 4h + j of hmask[l]
// (clear means subtract 4).
__device__ __forceinline__ float dequant_q3_k(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b + 108));
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const int q2 = (b[32 + 32 * h + l] >> (2 * j)) & 3;
    const int hb = (b[l] >> (4 * h + j)) & 1;
    const float dl = __fmul_rn(d, (float)scale_q3_k(b + 96, e / 16));
    return __fmul_rn(dl, (float)(q2 - (hb ? 0 : 4)));
}

// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16. Sub-block s = e/32 of 32: byte
// qs[32·(s/2) + e%32], low nibble for even s, high for odd.
__device__ __forceinline__ float dequant_q4_k(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b)), dmin = f16_to_f32(load_u16(b + 2));
    const int s = e / 32;
    int sc, m;
    scale_min_k4(s, b + 4, &sc, &m);
    const uint8_t byte = b[16 + 32 * (s / 2) + e % 32];
    const int q = (s & 1) ? (byte >> 4) : (byte & 0xF);
    const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
    return __fmul_rn(d1, (float)q) - m1;
}

// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48; the fifth bit of element e is
// bit s = e/32 of qh[e%32].
__device__ __forceinline__ float dequant_q5_k(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b)), dmin = f16_to_f32(load_u16(b + 2));
    const int s = e / 32, l = e % 32;
    int sc, m;
    scale_min_k4(s, b + 4, &sc, &m);
    const uint8_t byte = b[48 + 32 * (s / 2) + l];
    const int q = ((s & 1) ? (byte >> 4) : (byte & 0xF)) | (((b[16 + l] >> s) & 1) << 4);
    const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
    return __fmul_rn(d1, (float)q) - m1;
}

// Q6_K: ql[128] @0, qh[64] @128, scales[16] (i8) @192, d @208. Element e: h = e/128,
// j = (e%128)/32, l = e%32; low nibble from ql[64h + 32·(j&1) + l] (high nibble when j ≥ 2),
// two high bits from qh[32h + l] >> 2j; scale index 8h + 2j + l/16.
__device__ __forceinline__ float dequant_q6_k(const uint8_t* b, int e) {
    const float d = f16_to_f32(load_u16(b + 208));
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const uint8_t lb = b[64 * h + 32 * (j & 1) + l];
    const int lo = j >= 2 ? (lb >> 4) : (lb & 0xF);
    const int hi = (b[128 + 32 * h + l] >> (2 * j)) & 3;
    const int sc = ((const int8_t*)(b + 192))[8 * h + 2 * j + l / 16];
    return __fmul_rn(__fmul_rn(d, (float)sc), (float)((lo | (hi << 4)) - 32));
}

// ---- dot products of 32 weights with one q8_1 block (dp4a) --------------------------------
// The q8_1 block of x as the matvec kernels keep it in shared memory, made once per block by
// make_xblock: 48 bytes, 16-byte aligned, so that a lane reads it with three 128-bit loads
// (the global q8_1 layout, 36 bytes, allows only 32-bit ones); d and s widened to f32
// (exactly), and the sums of each half of the values (what the K-quant mins multiply) made
// once per block of x instead of once per row.
struct alignas(16) xblock {
    float d, s;
    int sum0, sum1;  // Σ qs[0..16), Σ qs[16..32)
    int qs[8];
};

__device__ __forceinline__ xblock make_xblock(const block_q8_1* g) {
    xblock x;
    x.d = f16_to_f32(g->d);
    x.s = f16_to_f32(g->s);
#pragma unroll
    for (int k = 0; k < 8; ++k) x.qs[k] = ((const int*)g->qs)[k];
    x.sum0 = 0;
    x.sum1 = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        x.sum0 = dp4a(0x01010101, x.qs[k], x.sum0);
        x.sum1 = dp4a(0x01010101, x.qs[k + 4], x.sum1);
    }
    return x;
}

// An xblock in registers, read with three 128-bit loads (the compiler left to itself splits
// them into 32-bit ones).
struct xregs {
    float d, s;
    int sum0, sum1;
    int qs[8];
};
__device__ __forceinline__ xregs load_x(const xblock* p) {
    uint32_t w[12];
    load_words_a16<3>((const uint8_t*)p, w);
    xregs x;
    x.d = __uint_as_float(w[0]);
    x.s = __uint_as_float(w[1]);
    x.sum0 = (int)w[2];
    x.sum1 = (int)w[3];
#pragma unroll
    for (int k = 0; k < 8; ++k) x.qs[k] = (int)w[4 + k];
    return x;
}

// Spreads bits 0..3 of v into bit 4 of bytes 0..3.
__device__ __forceinline__ uint32_t bits_to_byte_bit4(uint32_t v) {
    return ((v & 1u) << 4) | ((v & 2u) << 11) | ((v & 4u) << 18) | ((v & 8u) << 25);
}

// Each dot product reads its sub-block with the fewest loads its alignment allows (common.cuh:
// Span, load_words_a8/a16): Q4_0, Q5_0, Q8_0 whole 2-byte aligned blocks as aligned words;
// Q3_K and Q6_K their 32-byte spans likewise; Q4_1, Q2_K 32-bit words; Q5_1 64-bit words;
// Q4_K, Q5_K 128-bit words.

// Σ (q−8)·xq over the block, q the nibbles of the four ints of qs. Block: d @0, qs @2.
__device__ __forceinline__ float dot_q4_0(const uint8_t* b, int /*u*/, const xblock* xp,
                                            int /*xstride*/) {
    const xregs x = load_x(xp);
    const Span<5> w = span_end<5>(b);
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t v = span_u32(w, 2 + 4 * k);
        sumi = dp4a(bytes_minus(v & 0x0F0F0F0Fu, 8), x.qs[k], sumi);
        sumi = dp4a(bytes_minus((v >> 4) & 0x0F0F0F0Fu, 8), x.qs[k + 4], sumi);
    }
    return f16_to_f32(span_u16(w, 0)) * x.d * (float)sumi;
}

// Σ (q·d + m)·xq·dx = d·dx·Σ q·xq + m·s. Block (4-byte aligned): d @0, m @2, qs @4.
__device__ __forceinline__ float dot_q4_1(const uint8_t* b, int /*u*/, const xblock* xp,
                                            int /*xstride*/) {
    const xregs x = load_x(xp);
    const uint32_t dm = load_u32_a4(b);
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t v = load_u32_a4(b + 4 + 4 * k);
        sumi = dp4a((int)(v & 0x0F0F0F0Fu), x.qs[k], sumi);
        sumi = dp4a((int)((v >> 4) & 0x0F0F0F0Fu), x.qs[k + 4], sumi);
    }
    const float d = f16_to_f32(dm & 0xFFFF), m = f16_to_f32(dm >> 16);
    return d * x.d * (float)sumi + m * x.s;
}

// Block: d @0, qh @2, qs @6.
__device__ __forceinline__ float dot_q5_0(const uint8_t* b, int /*u*/, const xblock* xp,
                                            int /*xstride*/) {
    const xregs x = load_x(xp);
    const Span<6> w = span_end<6>(b);
    const uint32_t qh = span_u32(w, 2);
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t v = span_u32(w, 6 + 4 * k);
        const uint32_t lo = (v & 0x0F0F0F0Fu) | bits_to_byte_bit4(qh >> (4 * k));
        const uint32_t hi = ((v >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4(qh >> (16 + 4 * k));
        sumi = dp4a(bytes_minus(lo, 16), x.qs[k], sumi);
        sumi = dp4a(bytes_minus(hi, 16), x.qs[k + 4], sumi);
    }
    return f16_to_f32(span_u16(w, 0)) * x.d * (float)sumi;
}

// Block (8-byte aligned): d @0, m @2, qh @4, qs @8.
__device__ __forceinline__ float dot_q5_1(const uint8_t* b, int /*u*/, const xblock* xp,
                                            int /*xstride*/) {
    const xregs x = load_x(xp);
    uint32_t w[6];
    load_words_a8<3>(b, w);
    const uint32_t qh = w[1];
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t v = w[2 + k];
        const uint32_t lo = (v & 0x0F0F0F0Fu) | bits_to_byte_bit4(qh >> (4 * k));
        const uint32_t hi = ((v >> 4) & 0x0F0F0F0Fu) | bits_to_byte_bit4(qh >> (16 + 4 * k));
        sumi = dp4a((int)lo, x.qs[k], sumi);
        sumi = dp4a((int)hi, x.qs[k + 4], sumi);
    }
    const float d = f16_to_f32(w[0] & 0xFFFF), m = f16_to_f32(w[0] >> 16);
    return d * x.d * (float)sumi + m * x.s;
}

// Block: d @0, qs @2.
__device__ __forceinline__ float dot_q8_0(const uint8_t* b, int /*u*/, const xblock* xp,
                                            int /*xstride*/) {
    const xregs x = load_x(xp);
    const Span<9> w = span_end<9>(b);
    int sumi = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) sumi = dp4a((int)span_u32(w, 2 + 4 * k), x.qs[k], sumi);
    return f16_to_f32(span_u16(w, 0)) * x.d * (float)sumi;
}

// The K-quant dot products take a unit of two sub-blocks (units u = 0..3 of a super-block),
// the two that share the most bytes, so that those are loaded once for both: see each
// function. Sub-block i (0, 1) of the unit reads x's block at xb + i·xstride: the matvec
// kernel stores the units' first sub-blocks' xblocks in unit order, then their second ones
// (unit_sub_<fmt> says which sub-block is which), so that the 32 lanes, taking consecutive
// units, read consecutive xblocks: no shared-memory bank conflicts (with xblocks in their
// natural order a lane's were two apart, a 2-way conflict on every read).

// Q2_K unit u: sub-blocks 2u, 2u + 1, each two scale groups of 16 (scales 4u … 4u + 3, one
// 32-bit load); both read qs[32·(u/2) …], shifted by 4·(u%2) and 4·(u%2) + 2. The min needs
// Σxq per group of 16: x's half sums. Block (4-byte aligned): scales @0, qs @16, d @80,
// dmin @82.
__device__ __forceinline__ float dot_q2_k(const uint8_t* b, int u, const xblock* xb,
                                            int xstride) {
    uint32_t q[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) q[k] = load_u32_a4(b + 16 + 32 * (u / 2) + 4 * k);
    const uint32_t scales = load_u32_a4(b + 4 * u);
    const uint32_t dd = load_u32_a4(b + 80);
    const float d = f16_to_f32(dd & 0xFFFF), dmin = f16_to_f32(dd >> 16);
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const xregs x = load_x(xb + i * xstride);
        const int shift = 4 * (u % 2) + 2 * i;
        float acc_d = 0.0f, acc_m = 0.0f;
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            int sumi = 0;
#pragma unroll
            for (int k = 4 * g; k < 4 * g + 4; ++k) {
                sumi = dp4a((int)((q[k] >> shift) & 0x03030303u), x.qs[k], sumi);
            }
            const int sumx = g ? x.sum1 : x.sum0;
            const int sc = (scales >> (8 * (2 * i + g))) & 0xFF;
            acc_d += (float)((sc & 0xF) * sumi);
            acc_m += (float)((sc >> 4) * sumx);
        }
        r += x.d * (d * acc_d - dmin * acc_m);
    }
    return r;
}

// Q3_K's scales 2s and 2s + 1 (minus 32; see scale_q3_k) from two 16-bit loads: their low
// nibbles are in adjacent bytes (2s % 8, + 1; high nibbles for s ≥ 4), their high bit
// pairs in bytes 8 + 2s % 4 and + 1, at bits 2·(s/2).
__device__ __forceinline__ void scales_q3_k_pair(const uint8_t* sc, int s, int* s0, int* s1) {
    const uint32_t lo = load_u16(sc + (2 * s) % 8) >> (s >= 4 ? 4 : 0);
    const uint32_t hi = load_u16(sc + 8 + (2 * s) % 4) >> (2 * (s / 2));
    *s0 = (int)((lo & 0xF) | ((hi & 3) << 4)) - 32;
    *s1 = (int)(((lo >> 8) & 0xF) | (((hi >> 8) & 3) << 4)) - 32;
}

// Q3_K unit u: sub-blocks s = 2u, 2u + 1, both with h = u/2 (one hmask span, one qs span);
// j = s%4; value = ((qs >> 2j) & 3) + 4·hbit − 4. Block: hmask @0, qs @32, scales @96,
// d @108 (2-byte aligned; both 32-byte spans end well inside it).
__device__ __forceinline__ float dot_q3_k(const uint8_t* b, int u, const xblock* xb,
                                            int xstride) {
    const int h = u / 2;
    const Span<9> hm = span_mid<9>(b);
    const Span<9> qs = span_mid<9>(b + 32 + 32 * h);
    const float d = f16_to_f32(load_u16(b + 108));
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int s = 2 * u + i, j = 2 * (u % 2) + i;
        const xregs x = load_x(xb + i * xstride);
        int sc[2];
        scales_q3_k_pair(b + 96, s, &sc[0], &sc[1]);
        int acc = 0;
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            int sumi = 0;
#pragma unroll
            for (int k = 4 * g; k < 4 * g + 4; ++k) {
                const uint32_t q2 = (span_u32(qs, 4 * k) >> (2 * j)) & 0x03030303u;
                const uint32_t hb = (span_u32(hm, 4 * k) >> (4 * h + j)) & 0x01010101u;
                sumi = dp4a(bytes_minus(q2 | (hb << 2), 4), x.qs[k], sumi);
            }
            acc += sc[g] * sumi;
        }
        r += d * x.d * (float)acc;
    }
    return r;
}

// scale_min_k4 from the 12 scale bytes as three words (the last three words of a Q4_K/Q5_K
// block's first 16 bytes), without per-lane branches.
__device__ __forceinline__ void scale_min_k4_words(int j, const uint32_t* q, int* sc, int* m) {
    const int sh = 8 * (j & 3);
    const uint32_t a0 = q[0] >> sh, a1 = q[1] >> sh, a2 = q[2] >> sh;
    *sc = (int)(j < 4 ? (a0 & 63) : ((a2 & 0xF) | ((a0 >> 2) & 0x30)));
    *m = (int)(j < 4 ? (a1 & 63) : (((a2 >> 4) & 0xF) | ((a1 >> 2) & 0x30)));
}

// Q4_K unit u: sub-blocks 2u (low nibbles) and 2u + 1 (high) of the same 32 bytes qs[32u …],
// each with one scale and min: dx·(d·sc·Σq·xq − dmin·m·Σxq). The K-quant mins take Σxq
// exactly (x's half sums) rather than q8_1's f16-rounded s, so the only difference from
// dequantize-then-dot is f32 rounding. Block (16-byte aligned): d @0, dmin @2, scales @4,
// qs @16; 128-bit loads.
__device__ __forceinline__ float dot_q4_k(const uint8_t* b, int u, const xblock* xb,
                                            int xstride) {
    uint32_t head[4], q[8];
    load_words_a16<1>(b, head);
    load_words_a16<2>(b + 16 + 32 * u, q);
    const float d = f16_to_f32(head[0] & 0xFFFF), dmin = f16_to_f32(head[0] >> 16);
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const xregs x = load_x(xb + i * xstride);
        int sumi = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) sumi = dp4a((int)((q[k] >> (4 * i)) & 0x0F0F0F0Fu), x.qs[k], sumi);
        int sc, m;
        scale_min_k4_words(2 * u + i, head + 1, &sc, &m);
        r += x.d * (d * (float)(sc * sumi) - dmin * (float)(m * (x.sum0 + x.sum1)));
    }
    return r;
}

// Q5_K unit u: as Q4_K, the fifth bits from qh (bit s of each byte, all 32 bytes for every
// sub-block). Block (16-byte aligned): d @0, dmin @2, scales @4, qh @16, qs @48; 128-bit
// loads.
__device__ __forceinline__ float dot_q5_k(const uint8_t* b, int u, const xblock* xb,
                                            int xstride) {
    uint32_t head[4], qh[8], q[8];
    load_words_a16<1>(b, head);
    load_words_a16<2>(b + 16, qh);
    load_words_a16<2>(b + 48 + 32 * u, q);
    const float d = f16_to_f32(head[0] & 0xFFFF), dmin = f16_to_f32(head[0] >> 16);
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int s = 2 * u + i;
        const xregs x = load_x(xb + i * xstride);
        int sumi = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const uint32_t lo = (q[k] >> (4 * i)) & 0x0F0F0F0Fu;
            const uint32_t hb = (qh[k] >> s) & 0x01010101u;
            sumi = dp4a((int)(lo | (hb << 4)), x.qs[k], sumi);
        }
        int sc, m;
        scale_min_k4_words(s, head + 1, &sc, &m);
        r += x.d * (d * (float)(sc * sumi) - dmin * (float)(m * (x.sum0 + x.sum1)));
    }
    return r;
}

// Q6_K unit u: h = u/2, sub-blocks j = u%2 (low nibbles) and j + 2 (high) of row half h: the
// same ql span (64h + 32·(u%2)) and qh span (128 + 32h); value (lo | hi << 4) − 32, two
// scale groups of 16 per sub-block (scales 8h + 2j, +1). Block (2-byte aligned): ql @0,
// qh @128, scales @192, d @208; both 32-byte spans end inside it.
__device__ __forceinline__ float dot_q6_k(const uint8_t* b, int u, const xblock* xb,
                                            int xstride) {
    const int h = u / 2;
    const Span<9> ql = span_mid<9>(b + 64 * h + 32 * (u % 2));
    const Span<9> qh = span_mid<9>(b + 128 + 32 * h);
    const float d = f16_to_f32(load_u16(b + 208));
    float r = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int j = u % 2 + 2 * i;
        const xregs x = load_x(xb + i * xstride);
        const uint32_t scales = load_u16(b + 192 + 8 * h + 2 * j);
        int acc = 0;
#pragma unroll
        for (int g = 0; g < 2; ++g) {
            int sumi = 0;
#pragma unroll
            for (int k = 4 * g; k < 4 * g + 4; ++k) {
                const uint32_t lo = (span_u32(ql, 4 * k) >> (4 * i)) & 0x0F0F0F0Fu;
                const uint32_t hi = (span_u32(qh, 4 * k) >> (2 * j)) & 0x03030303u;
                sumi = dp4a(bytes_minus(lo | (hi << 4), 32), x.qs[k], sumi);
            }
            acc += (int)(int8_t)(scales >> (8 * g)) * sumi;
        }
        r += d * x.d * (float)acc;
    }
    return r;
}

// Units (dot_<fmt> calls) per block: the legacy formats' block is one; a K-quant super-block
// is four units of two sub-blocks.
#define UNITS_PER_BLOCK(qk) ((qk) == 32 ? 1 : 4)

// Which unit u of its block sub-block s belongs to, and as which of the unit's sub-blocks i.
__device__ __forceinline__ void unit_sub_pairs(int s, int* u, int* i) {  // 2u, 2u + 1
    *u = s / 2;
    *i = s % 2;
}
__device__ __forceinline__ void unit_sub_q6_k(int s, int* u, int* i) {  // 4h + j, j and j + 2
    *u = 2 * (s / 4) + s % 2;
    *i = (s % 4) / 2;
}
__device__ __forceinline__ void unit_sub_legacy(int /*s*/, int* u, int* i) {
    *u = 0;
    *i = 0;
}
#define UNIT_SUB_q4_0 unit_sub_legacy
#define UNIT_SUB_q4_1 unit_sub_legacy
#define UNIT_SUB_q5_0 unit_sub_legacy
#define UNIT_SUB_q5_1 unit_sub_legacy
#define UNIT_SUB_q8_0 unit_sub_legacy
#define UNIT_SUB_q2_k unit_sub_pairs
#define UNIT_SUB_q3_k unit_sub_pairs
#define UNIT_SUB_q4_k unit_sub_pairs
#define UNIT_SUB_q5_k unit_sub_pairs
#define UNIT_SUB_q6_k unit_sub_q6_k

// X-macro over the quantized weight formats: (name, elements per block, bytes per block).
#define FOR_EACH_QUANT(X)       \
    X(q4_0, 32, BYTES_Q4_0)     \
    X(q4_1, 32, BYTES_Q4_1)     \
    X(q5_0, 32, BYTES_Q5_0)     \
    X(q5_1, 32, BYTES_Q5_1)     \
    X(q8_0, 32, BYTES_Q8_0)     \
    X(q2_k, 256, BYTES_Q2_K)    \
    X(q3_k, 256, BYTES_Q3_K)    \
    X(q4_k, 256, BYTES_Q4_K)    \
    X(q5_k, 256, BYTES_Q5_K)    \
    X(q6_k, 256, BYTES_Q6_K)

// The float formats' element reads, for the dequantize-style kernels.
__device__ __forceinline__ float dequant_f32(const uint8_t* b, int /*e*/) { return *(const float*)b; }
__device__ __forceinline__ float dequant_f16(const uint8_t* b, int /*e*/) { return f16_to_f32(load_u16(b)); }
__device__ __forceinline__ float dequant_bf16(const uint8_t* b, int /*e*/) { return bf16_to_f32(load_u16(b)); }

#define FOR_EACH_FLOAT(X) \
    X(f32, 1, 4)          \
    X(f16, 1, 2)          \
    X(bf16, 1, 2)

#define FOR_EACH_FORMAT(X) FOR_EACH_FLOAT(X) FOR_EACH_QUANT(X)
