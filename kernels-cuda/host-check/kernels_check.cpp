// Runs whole kernels — moe.cu's, mla.cu's, attention.cu's, matvec_experts.cu's and, to
// compare with, matvec.cu's — on the host grid of host_shim.hpp (each CTA's threads as host threads, with
// their barriers, warp shuffles and shared memory), on inputs read from files in DIR, and
// writes their outputs there. The geometry is the launchers' (kernels-cuda/src/ops), from
// the same macros.
//
//   kernels_check DIR route N_EXPERT N_USED NTOK SIGMOID NORM SCALE N_GROUP GROUP_USED HAS_BIAS
//       logits.bin (f32, NTOK × N_EXPERT), bias.bin → ids.bin (u32), weights.bin (f32)
//   kernels_check DIR experts FMT N_EXPERT NROWS NCOLS N_SLOT SLOTS_PER_X
//       w.bin (N_EXPERT matrices), ids.bin (u32 × N_SLOT), x.bin (q8_1 blocks; f32 for the
//       float formats) → y.bin (matvec_experts_<fmt>), dense.bin (matvec_<fmt> on each
//       slot's expert matrix; rows of an id out of range left NaN)
//   kernels_check DIR sort N N_EXPERT        ids.bin → offsets.bin, perm.bin, inv.bin
//   kernels_check DIR gather NCOLS NX N ROWS_PER_X       x.bin, perm.bin → xg.bin
//   kernels_check DIR wsum NCOLS K NTOK NY HAS_ROWS      y.bin, rows.bin, weights.bin → out.bin
//   kernels_check DIR mla NTOK N_HEADS WIDTH V_OFF N_CTX ROWS SCALE
//       q.bin (f32, each head's whole row; split here into mla_attention_f16's two parts),
//       cache.bin (f16 bits, ROWS rows), pos.bin, base.bin (i32 × NTOK each) → out.bin
//   kernels_check DIR store NTOK KVR PE N_CTX ROWS EPS ROPE...
//       kv.bin (f32), norm.bin (f32 × KVR), pos.bin, base.bin, cache0.bin (f16 bits, ROWS
//       rows) → cache.bin
//   kernels_check DIR splitq NTOK N_HEADS NOPE PE ROPE...
//       q.bin (f32), pos.bin → qn.bin, q_pe.bin
//   kernels_check DIR absorb FMT N_SLOT N_HEADS NOPE KVR     w.bin, x.bin (f32) → lat.bin
//   kernels_check DIR gqa NTOK NHEAD NKV HEAD_DIM N_CTX ROWS SCALE
//       q.bin (f32), k.bin, v.bin (f16 bits, ROWS × NKV·HEAD_DIM), pos.bin, base.bin
//       → out.bin
// where ROPE... is N_ROT NEOX THETA_SCALE FREQ_SCALE EXT_FACTOR CORR_LOW CORR_HIGH MSCALE.
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <unistd.h>

#include "../kernels/attention.cu"
#include "../kernels/matvec.cu"
#include "../kernels/matvec_experts.cu"
#include "../kernels/mla.cu"
#include "../kernels/moe.cu"

// matvec_body.cuh's dynamic shared memory: the most a launcher gives (48 KiB).
alignas(16) uint4 matvec_x_words[(48 << 10) / 16];

// The launchers' threads a CTA for moe_gather and moe_weighted_sum (src/ops/moe.rs).
#define ROWS_THREADS 128

static std::string dir;

static std::vector<uint8_t> read_bytes(const std::string& name) {
    const std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::fprintf(stderr, "kernels_check: cannot open %s\n", path.c_str());
        std::exit(2);
    }
    std::vector<uint8_t> v;
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    std::fclose(f);
    return v;
}

// The file's elements, exactly `n` of them (a wrong size is the caller's mistake).
template <class T>
static std::vector<T> read(const std::string& name, size_t n) {
    const std::vector<uint8_t> b = read_bytes(name);
    if (b.size() != n * sizeof(T)) {
        std::fprintf(stderr, "kernels_check: %s has %zu bytes, expected %zu\n", name.c_str(),
                     b.size(), n * sizeof(T));
        std::exit(2);
    }
    std::vector<T> v(n);
    std::memcpy(v.data(), b.data(), b.size());
    return v;
}

template <class T>
static void write(const std::string& name, const std::vector<T>& v) {
    const std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size()) {
        std::fprintf(stderr, "kernels_check: cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

static unsigned ceil_div(long a, long b) { return (unsigned)((a + b - 1) / b); }

static int route(char** a) {
    const int n_expert = std::atoi(a[0]), n_used = std::atoi(a[1]), ntok = std::atoi(a[2]);
    const int sigmoid = std::atoi(a[3]), norm = std::atoi(a[4]);
    const float scale = std::strtof(a[5], nullptr);
    const int n_group = std::atoi(a[6]), group_used = std::atoi(a[7]), has_bias = std::atoi(a[8]);
    const std::vector<float> logits = read<float>("logits.bin", (size_t)ntok * n_expert);
    const std::vector<float> bias = has_bias ? read<float>("bias.bin", n_expert) : std::vector<float>();
    std::vector<uint32_t> ids((size_t)ntok * n_used);
    std::vector<float> weights(ids.size());
    host_launch({(unsigned)ntok, 1, 1}, WARP_SIZE, [&] {
        moe_route(logits.data(), has_bias ? bias.data() : nullptr, ids.data(), weights.data(),
                  n_expert, n_used, sigmoid, norm, scale, n_group, group_used);
    });
    write("ids.bin", ids);
    write("weights.bin", weights);
    return 0;
}

// Both kernels of one format: experts (w, ids, x, y, ncols, nrows, n_expert, n_slot,
// slots_per_x) and dense (w, x, y, ncols, nrows).
struct ExpertsRun {
    void (*experts)(const uint8_t*, const uint32_t*, const uint8_t*, float*, int, int, int, int,
                    int);
    void (*dense)(const uint8_t*, const uint8_t*, float*, int, int);
    long qk, bytes;
    bool quant;
};

#define EXPERTS_QUANT(name, qk_, bytes_)                                                       \
    if (fmt == #name) {                                                                        \
        r.qk = qk_;                                                                            \
        r.bytes = bytes_;                                                                      \
        r.quant = true;                                                                        \
        r.experts = [](const uint8_t* w, const uint32_t* ids, const uint8_t* x, float* y,      \
                       int ncols, int nrows, int n_expert, int n_slot, int spx) {              \
            const unsigned rows_cta = MV_WARPS * MV_RPW(qk_);                                  \
            host_launch({ceil_div(nrows, rows_cta), (unsigned)n_slot, 1}, MV_THREADS, [&] {    \
                matvec_experts_##name(w, ids, (const block_q8_1*)x, y, ncols, nrows,           \
                                      n_expert, n_slot, spx);                                  \
            });                                                                                \
        };                                                                                     \
        r.dense = [](const uint8_t* w, const uint8_t* x, float* y, int ncols, int nrows) {     \
            const unsigned rows_cta = MV_WARPS * MV_RPW(qk_);                                  \
            host_launch({ceil_div(nrows, rows_cta), 1, 1}, MV_THREADS, [&] {                   \
                matvec_##name(w, (const block_q8_1*)x, y, ncols, nrows);                       \
            });                                                                                \
        };                                                                                     \
    }
#define EXPERTS_FLOAT(name, one, bytes_)                                                       \
    if (fmt == #name) {                                                                        \
        r.qk = 1;                                                                              \
        r.bytes = bytes_;                                                                      \
        r.quant = false;                                                                       \
        r.experts = [](const uint8_t* w, const uint32_t* ids, const uint8_t* x, float* y,      \
                       int ncols, int nrows, int n_expert, int n_slot, int spx) {              \
            host_launch({(unsigned)nrows, (unsigned)n_slot, 1}, MV_FLOAT_THREADS, [&] {        \
                matvec_experts_##name(w, ids, (const float*)x, y, ncols, nrows, n_expert,      \
                                      n_slot, spx);                                            \
            });                                                                                \
        };                                                                                     \
        r.dense = [](const uint8_t* w, const uint8_t* x, float* y, int ncols, int nrows) {     \
            host_launch({(unsigned)nrows, 1, 1}, MV_FLOAT_THREADS, [&] {                       \
                matvec_##name(w, (const float*)x, y, ncols, nrows);                            \
            });                                                                                \
        };                                                                                     \
    }

static int experts(char** a) {
    const std::string fmt = a[0];
    const int n_expert = std::atoi(a[1]), nrows = std::atoi(a[2]), ncols = std::atoi(a[3]);
    const int n_slot = std::atoi(a[4]), spx = std::atoi(a[5]);
    ExpertsRun r{};
    FOR_EACH_QUANT(EXPERTS_QUANT)
    FOR_EACH_FLOAT(EXPERTS_FLOAT)
    if (!r.experts || ncols % r.qk != 0 || ncols % 32 != 0 || spx < 1) {
        std::fprintf(stderr, "kernels_check: bad format or shape %s %d x %d\n", a[0], nrows, ncols);
        return 2;
    }
    const long expert_bytes = (long)nrows * (ncols / r.qk) * r.bytes;
    const long nx = (n_slot + spx - 1) / spx;
    // x per vector: q8_1 blocks (36 bytes a 32 values) or f32.
    const long x_bytes = r.quant ? ncols / 32 * 36 : (long)ncols * 4;
    // Exactly as long as the data, so that AddressSanitizer sees a read past the end.
    const std::vector<uint8_t> w = read<uint8_t>("w.bin", n_expert * expert_bytes);
    const std::vector<uint32_t> ids = read<uint32_t>("ids.bin", n_slot);
    const std::vector<uint8_t> xb = read<uint8_t>("x.bin", nx * x_bytes);
    // The q8_1 blocks are read as 4-byte words: keep them 4-byte aligned, as on the device.
    std::vector<uint32_t> xw((xb.size() + 3) / 4);
    std::memcpy(xw.data(), xb.data(), xb.size());
    const uint8_t* x = (const uint8_t*)xw.data();

    std::vector<float> y((size_t)n_slot * nrows), dense(y.size(), std::nanf(""));
    r.experts(w.data(), ids.data(), x, y.data(), ncols, nrows, n_expert, n_slot, spx);
    for (int s = 0; s < n_slot; ++s) {
        if (ids[s] >= (uint32_t)n_expert) continue;
        r.dense(w.data() + ids[s] * expert_bytes, x + (s / spx) * x_bytes,
                dense.data() + (size_t)s * nrows, ncols, nrows);
    }
    write("y.bin", y);
    write("dense.bin", dense);
    return 0;
}

static int sort(char** a) {
    const int n = std::atoi(a[0]), n_expert = std::atoi(a[1]);
    const std::vector<uint32_t> ids = read<uint32_t>("ids.bin", n);
    std::vector<uint32_t> offsets(n_expert + 1), perm(n), inv(n);
    host_launch({1, 1, 1}, SORT_THREADS, [&] {
        moe_sort(ids.data(), n, n_expert, offsets.data(), perm.data(), inv.data());
    });
    write("offsets.bin", offsets);
    write("perm.bin", perm);
    write("inv.bin", inv);
    return 0;
}

static int gather(char** a) {
    const int ncols = std::atoi(a[0]), nx = std::atoi(a[1]), n = std::atoi(a[2]);
    const int rows_per_x = std::atoi(a[3]);
    const std::vector<float> x = read<float>("x.bin", (size_t)nx * ncols);
    const std::vector<uint32_t> perm = read<uint32_t>("perm.bin", n);
    std::vector<float> xg((size_t)n * ncols);
    host_launch({(unsigned)n, 1, 1}, ROWS_THREADS, [&] {
        moe_gather(x.data(), perm.data(), xg.data(), ncols, nx, rows_per_x);
    });
    write("xg.bin", xg);
    return 0;
}

static int wsum(char** a) {
    const int ncols = std::atoi(a[0]), k = std::atoi(a[1]), ntok = std::atoi(a[2]);
    const int ny = std::atoi(a[3]), has_rows = std::atoi(a[4]);
    const std::vector<float> y = read<float>("y.bin", (size_t)ny * ncols);
    const std::vector<uint32_t> rows =
        has_rows ? read<uint32_t>("rows.bin", (size_t)ntok * k) : std::vector<uint32_t>();
    const std::vector<float> weights = read<float>("weights.bin", (size_t)ntok * k);
    std::vector<float> out((size_t)ntok * ncols);
    host_launch({(unsigned)ntok, 1, 1}, ROWS_THREADS, [&] {
        moe_weighted_sum(y.data(), has_rows ? rows.data() : nullptr, weights.data(), out.data(),
                         ncols, k, ny);
    });
    write("out.bin", out);
    return 0;
}

static int mla(char** a) {
    const int ntok = std::atoi(a[0]), n_heads = std::atoi(a[1]), width = std::atoi(a[2]);
    const int v_off = std::atoi(a[3]), n_ctx = std::atoi(a[4]), rows = std::atoi(a[5]);
    const float scale = std::strtof(a[6], nullptr);
    const int dv = width - v_off;
    const std::vector<float> q = read<float>("q.bin", (size_t)ntok * n_heads * width);
    const std::vector<uint16_t> cache = read<uint16_t>("cache.bin", (size_t)rows * width);
    const std::vector<int> pos = read<int>("pos.bin", ntok);
    const std::vector<int> base = read<int>("base.bin", ntok);
    std::vector<float> q_pe((size_t)ntok * n_heads * v_off), q_lat((size_t)ntok * n_heads * dv);
    for (size_t h = 0; h < (size_t)ntok * n_heads; ++h) {
        std::memcpy(&q_pe[h * v_off], &q[h * width], v_off * sizeof(float));
        std::memcpy(&q_lat[h * dv], &q[h * width + v_off], dv * sizeof(float));
    }
    std::vector<float> out((size_t)ntok * n_heads * dv);
    host_launch({ceil_div(n_heads, MLA_HEADS), (unsigned)ntok, 1}, MLA_WARPS * WARP_SIZE, [&] {
        mla_attention_f16(q_pe.data(), q_lat.data(), cache.data(), out.data(), n_heads, width,
                          v_off, pos.data(), base.data(), n_ctx, rows, scale);
    });
    write("out.bin", out);
    return 0;
}

// ROPE...: n_rot, neox, and the six floats of rope.cuh's ROPE_PARAMS.
struct RopeArgs {
    int n_rot, neox;
    float f[6];
    explicit RopeArgs(char** a) : n_rot(std::atoi(a[0])), neox(std::atoi(a[1])) {
        for (int i = 0; i < 6; ++i) f[i] = std::strtof(a[2 + i], nullptr);
    }
};

// The launchers' threads a CTA (src/ops/mla.rs).
#define STORE_THREADS 256
#define SPLIT_THREADS 64

static int store(char** a) {
    const int ntok = std::atoi(a[0]), kvr = std::atoi(a[1]), pe = std::atoi(a[2]);
    const int n_ctx = std::atoi(a[3]), rows = std::atoi(a[4]);
    const float eps = std::strtof(a[5], nullptr);
    const RopeArgs r(a + 6);
    const std::vector<float> kv = read<float>("kv.bin", (size_t)ntok * (kvr + pe));
    const std::vector<float> norm = read<float>("norm.bin", kvr);
    const std::vector<int> pos = read<int>("pos.bin", ntok);
    const std::vector<int> base = read<int>("base.bin", ntok);
    std::vector<uint16_t> cache = read<uint16_t>("cache0.bin", (size_t)rows * (kvr + pe));
    host_launch({(unsigned)ntok, 1, 1}, STORE_THREADS, [&] {
        (r.neox ? mla_store_latent_neox : mla_store_latent_norm)(
            kv.data(), norm.data(), cache.data(), pos.data(), base.data(), kvr, pe, r.n_rot,
            n_ctx, rows, eps, r.f[0], r.f[1], r.f[2], r.f[3], r.f[4], r.f[5]);
    });
    write("cache.bin", cache);
    return 0;
}

static int splitq(char** a) {
    const int ntok = std::atoi(a[0]), n_heads = std::atoi(a[1]), nope = std::atoi(a[2]);
    const int pe = std::atoi(a[3]);
    const RopeArgs r(a + 4);
    const size_t heads = (size_t)ntok * n_heads;
    const std::vector<float> q = read<float>("q.bin", heads * (nope + pe));
    const std::vector<int> pos = read<int>("pos.bin", ntok);
    std::vector<float> qn(heads * nope), q_pe(heads * pe);
    host_launch({(unsigned)n_heads, (unsigned)ntok, 1}, SPLIT_THREADS, [&] {
        (r.neox ? mla_split_q_neox : mla_split_q_norm)(q.data(), qn.data(), q_pe.data(),
                                                       pos.data(), n_heads, nope, pe, r.n_rot,
                                                       r.f[0], r.f[1], r.f[2], r.f[3], r.f[4],
                                                       r.f[5]);
    });
    write("qn.bin", qn);
    write("q_pe.bin", q_pe);
    return 0;
}

static int absorb(char** a) {
    const std::string fmt = a[0];
    const int n_slot = std::atoi(a[1]), n_heads = std::atoi(a[2]), nope = std::atoi(a[3]);
    const int kvr = std::atoi(a[4]);
    void (*kernel)(const uint8_t*, const float*, float*, int, int, int) = nullptr;
    long qk = 0, bytes = 0;
#define ABSORB(name, qk_, bytes_)                                                              \
    if (fmt == #name) {                                                                        \
        kernel = mla_absorb_t_##name;                                                          \
        qk = qk_;                                                                              \
        bytes = bytes_;                                                                        \
    }
    FOR_EACH_FORMAT(ABSORB)
    if (!kernel || kvr % qk != 0) {
        std::fprintf(stderr, "kernels_check: bad format or shape %s, kv_lora %d\n", a[0], kvr);
        return 2;
    }
    const size_t w_bytes = (size_t)n_heads * nope * (kvr / qk) * bytes;
    const std::vector<uint8_t> w = read<uint8_t>("w.bin", w_bytes);
    const std::vector<float> x = read<float>("x.bin", (size_t)n_slot * nope);
    std::vector<float> lat((size_t)n_slot * kvr);
    host_launch({(unsigned)n_slot, ceil_div(kvr, MLA_T_THREADS), 1}, MLA_T_THREADS, [&] {
        kernel(w.data(), x.data(), lat.data(), n_heads, nope, kvr);
    });
    write("lat.bin", lat);
    return 0;
}

static int gqa(char** a) {
    const int ntok = std::atoi(a[0]), nhead = std::atoi(a[1]), nkv = std::atoi(a[2]);
    const int head_dim = std::atoi(a[3]), n_ctx = std::atoi(a[4]), rows = std::atoi(a[5]);
    const float scale = std::strtof(a[6], nullptr);
    const size_t width = (size_t)nhead * head_dim, kv = (size_t)rows * nkv * head_dim;
    const std::vector<float> q = read<float>("q.bin", ntok * width);
    const std::vector<uint16_t> k = read<uint16_t>("k.bin", kv), v = read<uint16_t>("v.bin", kv);
    const std::vector<int> pos = read<int>("pos.bin", ntok), base = read<int>("base.bin", ntok);
    std::vector<float> out(ntok * width);
    host_launch({(unsigned)nhead, (unsigned)ntok, 1}, ATT_WARPS * WARP_SIZE, [&] {
        attention_f16(q.data(), k.data(), v.data(), out.data(), nullptr, nhead, nkv, head_dim,
                      pos.data(), base.data(), n_ctx, rows, scale);
    });
    write("out.bin", out);
    return 0;
}

int main(int argc, char** argv) {
    // A kernel whose threads miss a barrier would wait for ever: end the run instead.
    alarm(300);
    if (argc < 3) {
        std::fprintf(stderr, "usage: kernels_check DIR KERNEL ARGS...\n");
        return 2;
    }
    dir = argv[1];
    const std::string k = argv[2];
    struct Cmd {
        const char* name;
        int nargs;
        int (*run)(char**);
    };
    const Cmd cmds[] = {{"route", 9, route},   {"experts", 6, experts}, {"sort", 2, sort},
                        {"gather", 4, gather}, {"wsum", 5, wsum},       {"mla", 7, mla},
                        {"store", 14, store},  {"splitq", 12, splitq},  {"absorb", 5, absorb},
                        {"gqa", 7, gqa}};
    for (const Cmd& c : cmds) {
        if (k == c.name) {
            if (argc != 3 + c.nargs) {
                std::fprintf(stderr, "kernels_check %s: %d arguments, expected %d\n", c.name,
                             argc - 3, c.nargs);
                return 2;
            }
            return c.run(argv + 3);
        }
    }
    std::fprintf(stderr, "kernels_check: unknown kernel %s\n", k.c_str());
    return 2;
}
