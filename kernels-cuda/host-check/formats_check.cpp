// Runs formats.cuh's arithmetic on the host (see host_shim.hpp):
//
//   formats_check FMT ROWS COLS W_FILE XQ_FILE DEQUANT_OUT Y_OUT
//
// W_FILE: ROWS × COLS weights of FMT (ggml block bytes); DEQUANT_OUT gets every element as
// f32 through dequant_<fmt>. For quantized formats XQ_FILE holds COLS/32 q8_1 blocks and
// Y_OUT gets W·x as the matvec kernel makes it: its staging of x and its lanes' loops over
// dot_<fmt> (matvec_lane.cuh), the 32 lanes of each warp added. For float formats, or
// XQ_FILE "-", only the dequantization runs.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/matvec_lane.cuh"

static std::vector<uint8_t> read_file(const char* path) {
    std::vector<uint8_t> v;
    FILE* f = std::fopen(path, "rb");
    if (!f) {
        std::fprintf(stderr, "formats_check: cannot open %s\n", path);
        std::exit(2);
    }
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    std::fclose(f);
    return v;
}

static void write_f32(const char* path, const std::vector<float>& v) {
    FILE* f = std::fopen(path, "wb");
    if (!f || std::fwrite(v.data(), 4, v.size(), f) != v.size()) {
        std::fprintf(stderr, "formats_check: cannot write %s\n", path);
        std::exit(2);
    }
    std::fclose(f);
}

typedef float (*dequant_fn)(const uint8_t*, int);
typedef void (*lane_fn_t)(const uint8_t*, const xblock*, int, int, int, int, float*);
typedef void (*stage_fn_t)(xblock*, const block_q8_1*, int, int, int);

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr, "usage: formats_check FMT ROWS COLS W XQ DEQUANT_OUT Y_OUT\n");
        return 2;
    }
    const std::string fmt = argv[1];
    const long rows = std::atol(argv[2]), cols = std::atol(argv[3]);
    dequant_fn dq = nullptr;
    lane_fn_t lane_fn = nullptr;
    stage_fn_t stage_fn = nullptr;
    long qk = 0, bytes = 0;
#define DQ(name, k, b)         \
    if (fmt == #name) {        \
        dq = dequant_##name;   \
        qk = k;                \
        bytes = b;             \
    }
    FOR_EACH_FORMAT(DQ)
#define LANE(name, k, b)        \
    if (fmt == #name) {         \
        lane_fn = mv_lane_##name; \
        stage_fn = mv_stage_##name; \
    }
    FOR_EACH_QUANT(LANE)
    if (!dq || rows <= 0 || cols <= 0 || cols % qk != 0) {
        std::fprintf(stderr, "formats_check: bad format or shape %s %ld x %ld\n", argv[1], rows, cols);
        return 2;
    }
    // Exactly as long as the file (not a grown vector's spare capacity), so that a read past
    // the last block is past the allocation, where AddressSanitizer sees it.
    const std::vector<uint8_t> file = read_file(argv[4]);
    const std::vector<uint8_t> w(file.begin(), file.end());
    const long row_bytes = cols / qk * bytes;
    if ((long)w.size() != rows * row_bytes) {
        std::fprintf(stderr, "formats_check: %s has %zu bytes, expected %ld\n", argv[4], w.size(), rows * row_bytes);
        return 2;
    }
    std::vector<float> deq(rows * cols);
    for (long i = 0; i < rows * cols; ++i) {
        const long r = i / cols, c = i % cols;
        deq[i] = dq(w.data() + r * row_bytes + (c / qk) * bytes, (int)(c % qk));
    }
    write_f32(argv[6], deq);
    if (!lane_fn || std::string(argv[5]) == "-") return 0;

    // q8_1 blocks are 36 bytes; copy into aligned storage as the device buffer would be.
    const std::vector<uint8_t> xq_bytes = read_file(argv[5]);
    const long nsub = cols / 32;
    if ((long)xq_bytes.size() != nsub * 36) {
        std::fprintf(stderr, "formats_check: %s has %zu bytes, expected %ld\n", argv[5], xq_bytes.size(), nsub * 36);
        return 2;
    }
    std::vector<block_q8_1> xg(nsub);
    std::memcpy(xg.data(), xq_bytes.data(), xq_bytes.size());
    // The matvec kernel's own steps (matvec_lane.cuh): every thread of a CTA stages its share
    // of x, then each warp's lanes make their partial sums of the warp's rows, added here in
    // lane order (the kernel's warp_sum adds the same 32 terms in a butterfly).
    std::vector<xblock> xs(nsub);
    for (int t = 0; t < MV_THREADS; ++t) stage_fn(xs.data(), xg.data(), (int)nsub, t, MV_THREADS);
    const int rpw = (int)MV_RPW(qk);
    static_assert(MV_RPW_LEGACY <= 8 && MV_RPW_K <= 8, "rows per warp: at most 8 here");
    std::vector<float> y(rows);
    for (long row = 0; row < rows; row += rpw) {
        float sum[8] = {};
        for (int lane = 0; lane < WARP_SIZE; ++lane) {
            float acc[8] = {};
            lane_fn(w.data(), xs.data(), (int)cols, (int)rows, (int)row, lane, acc);
            for (int r = 0; r < rpw; ++r) sum[r] += acc[r];
        }
        for (int r = 0; r < rpw && row + r < rows; ++r) y[row + r] = sum[r];
    }
    write_f32(argv[7], y);
    return 0;
}
