#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench`, `llama-batched-bench` and `llama-perplexity` into the
# git-ignored folder .llama-ref/: speed references to run side by side with Strata's
# `generate` (scripts/speed-table.sh, scripts/batched-table.sh), and the reference for
# Strata's `perplexity`. For speed the
# machine's speed varies from hour to hour, so a comparison only means something when both
# are measured in the same run on the same files. It is a reference only: nothing of
# llama.cpp enters Strata's sources or builds.
#
# llama.cpp's sources come from the llama-cpp-python sdist on PyPI (it vendors them; PyPI is
# the one source of them this machine reaches), pinned and checked by sha256. cmake comes
# from PyPI too, pinned, in a venv inside .llama-ref/.
#
# Idempotent: skips whatever is already done (download, unpack, build). Prints the path of
# the llama-bench binary on stdout as its last line (llama-batched-bench and
# llama-perplexity are beside it); everything else goes to stderr.
#
# Usage: scripts/llama-ref.sh
set -euo pipefail

VERSION=0.3.36
SDIST=llama_cpp_python-$VERSION.tar.gz
URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/$SDIST
# Computed once from the download; equal to the sha256 PyPI's index lists for the file.
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
CMAKE_VERSION=3.31.6

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/.llama-ref
SRC=$DEST/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$DEST/build
BIN=$BUILD/bin/llama-bench
PPL=$BUILD/bin/llama-perplexity
BATCHED=$BUILD/bin/llama-batched-bench

if [ -x "$BIN" ] && [ -x "$PPL" ] && [ -x "$BATCHED" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$DEST"

if [ ! -f "$DEST/$SDIST" ]; then
  echo "llama-ref: downloading $SDIST" >&2
  curl -fsSL --retry 3 -o "$DEST/$SDIST.part" "$URL"
  mv "$DEST/$SDIST.part" "$DEST/$SDIST"
fi
# Checked every time the build is needed, not just after a download: a file left by an
# interrupted or tampered run must not be built.
if ! echo "$SHA256  $DEST/$SDIST" | sha256sum -c --quiet - >&2; then
  echo "llama-ref: $DEST/$SDIST does not have sha256 $SHA256; delete it and rerun" >&2
  exit 1
fi

# Unpack only the vendored llama.cpp; the stamp marks a complete unpack.
if [ ! -f "$SRC/.unpacked" ]; then
  echo "llama-ref: unpacking llama.cpp sources" >&2
  rm -rf "$DEST/llama_cpp_python-$VERSION"
  tar -xzf "$DEST/$SDIST" -C "$DEST" "llama_cpp_python-$VERSION/vendor/llama.cpp"
  touch "$SRC/.unpacked"
fi

CMAKE=$DEST/venv/bin/cmake
if [ ! -x "$CMAKE" ]; then
  echo "llama-ref: installing cmake==$CMAKE_VERSION from PyPI into $DEST/venv" >&2
  python3 -m venv "$DEST/venv"
  "$DEST/venv/bin/pip" install -q "cmake==$CMAKE_VERSION" >&2
fi

# GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes of the 64-byte tile
# configuration, so at -O3 the stores that set the tiles' rows and columns are dropped as
# dead: ggml's AMX matmul then runs ldtilecfg on a configuration of stack garbage and dies
# of SIGSEGV on its first prompt batch (seen here with GCC 12.2 on this AMX machine, for
# every file). The probe below compiles a configuration the way ggml writes it and reads it
# back; where the compiler drops the stores, AMX is switched off (ggml then uses its
# AVX-512/VNNI paths) and the build says so. Explicit -mno-* flags win over -march=native
# whatever their order.
probe_amx_config() {
  local cxx=${CXX:-c++} dir=$DEST/amx-probe
  "$cxx" -march=native -dM -E -x c++ /dev/null | grep -q __AMX_INT8__ || return 0
  mkdir -p "$dir"
  cat > "$dir/probe.cpp" <<'EOF'
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
struct tile_cfg {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {0};
  uint16_t colsb[16] = {0};
  uint8_t rows[16] = {0};
};
static void fill(tile_cfg &tc) {
  tc.palette_id = 1;
  tc.rows[0] = 8;  tc.colsb[0] = 64;
  tc.rows[2] = 16; tc.colsb[2] = 32;
  tc.rows[4] = 16; tc.colsb[4] = 64;
}
__attribute__((noinline)) static void configure() {
  alignas(64) tile_cfg tc = {};
  fill(tc);
  _tile_loadconfig(&tc);
}
int main() {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) return 2;
  configure();
  alignas(64) unsigned char back[64];
  memset(back, 0xAA, sizeof back);
  _tile_storeconfig(back);
  __asm__ volatile("" ::: "memory");
  _tile_release();
  tile_cfg want = {};
  fill(want);
  return memcmp(back, &want, sizeof want) == 0 ? 0 : 3;
}
EOF
  "$cxx" -O3 -march=native "$dir/probe.cpp" -o "$dir/probe" && "$dir/probe"
}
NO_AMX=
if ! probe_amx_config 2>/dev/null; then
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  echo "llama-ref: ${CXX:-c++} drops AMX tile-configuration stores (GCC 12 header bug): building without AMX ($NO_AMX)" >&2
fi

# CPU only, Release, GGML_NATIVE=ON (-march=native: this CPU's AVX-512/VNNI/AMX, as a
# default local build gets). This llama.cpp no longer has a curl option (LLAMA_CURL is
# deprecated and ignored: its HTTP client uses OpenSSL), so LLAMA_OPENSSL=OFF is what keeps
# networking out. Static libraries: one self-contained binary. Tests, examples and the
# server are not configured; only the llama-bench, llama-batched-bench and llama-perplexity
# targets are built.
echo "llama-ref: configuring in $BUILD" >&2
"$CMAKE" -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$NO_AMX" \
  -DCMAKE_CXX_FLAGS="$NO_AMX" \
  -DGGML_NATIVE=ON \
  -DGGML_CUDA=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF >&2
echo "llama-ref: building llama-bench, llama-batched-bench and llama-perplexity (-j2)" >&2
"$CMAKE" --build "$BUILD" --target llama-bench llama-batched-bench llama-perplexity -j2 >&2

for b in "$BIN" "$PPL"; do
  if [ ! -x "$b" ]; then
    echo "llama-ref: the build finished but $b is not there" >&2
    exit 1
  fi
done
echo "$BIN"
