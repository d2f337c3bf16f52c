#!/usr/bin/env bash
# Fetches the pieces of the CUDA toolkit that Strata's build and CI need, from PyPI wheels,
# into the git-ignored folder .cuda/ at the workspace root. No system install, no root.
#
#   nvidia-cuda-nvrtc-cu12    libnvrtc: kernels-cuda/build.rs compiles kernels/*.cu to PTX
#   nvidia-cuda-runtime-cu12  headers (cuda_fp16.h, cuda_bf16.h) the kernels include
#   nvidia-cuda-nvcc-cu12     ptxas: tests/tests/cuda_ptx.rs checks registers and spills
#
# Idempotent: a stamp file records the pinned versions; a second run with the same pins does
# nothing. Downloaded wheels are kept in .cuda/wheels so a re-extract needs no network.
# Layout after a run (what build.rs and the tests look for):
#   .cuda/nvidia/cuda_nvrtc/lib/libnvrtc.so.12
#   .cuda/nvidia/cuda_runtime/include/cuda_fp16.h
#   .cuda/nvidia/cuda_nvcc/bin/ptxas
set -euo pipefail

NVRTC_VERSION=12.9.86
RUNTIME_VERSION=12.9.79
NVCC_VERSION=12.9.86

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${STRATA_CUDA_DIR:-$root/.cuda}"
stamp="$dest/.fetched"
want="nvrtc=$NVRTC_VERSION runtime=$RUNTIME_VERSION nvcc=$NVCC_VERSION"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" \
      && -f "$dest/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" \
      && -f "$dest/nvidia/cuda_runtime/include/cuda_fp16.h" \
      && -x "$dest/nvidia/cuda_nvcc/bin/ptxas" ]]; then
    echo "fetch-cuda: $dest is up to date ($want)"
    exit 0
fi

python=""
for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
        python="$p"
        break
    fi
done
if [[ -z "$python" ]]; then
    echo "fetch-cuda: needs python3 with pip to download the NVIDIA wheels" >&2
    exit 1
fi

mkdir -p "$dest/wheels"
echo "fetch-cuda: downloading $want into $dest/wheels"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dest/wheels" \
    "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION" \
    "nvidia-cuda-runtime-cu12==$RUNTIME_VERSION" \
    "nvidia-cuda-nvcc-cu12==$NVCC_VERSION"

# Extract only the wheels of the pinned versions (older ones may linger in the cache).
for wheel in \
    "$dest"/wheels/nvidia_cuda_nvrtc_cu12-"$NVRTC_VERSION"-*.whl \
    "$dest"/wheels/nvidia_cuda_runtime_cu12-"$RUNTIME_VERSION"-*.whl \
    "$dest"/wheels/nvidia_cuda_nvcc_cu12-"$NVCC_VERSION"-*.whl; do
    [[ -f "$wheel" ]] || { echo "fetch-cuda: missing $wheel after download" >&2; exit 1; }
    "$python" -m zipfile -e "$wheel" "$dest"
done
# zipfile does not keep the executable bit.
chmod +x "$dest"/nvidia/cuda_nvcc/bin/* 2>/dev/null || true

for f in nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_runtime/include/cuda_fp16.h \
         nvidia/cuda_nvcc/bin/ptxas; do
    [[ -e "$dest/$f" ]] || { echo "fetch-cuda: $dest/$f is missing after extraction" >&2; exit 1; }
done
echo "$want" > "$stamp"
# The build scripts do not watch a .cuda/ that was absent (cargo would rebuild on every
# run); touching them makes cargo run them again, now with NVRTC.
touch "$root/kernels-cuda/build.rs" "$root/dev/cuda/build.rs"
echo "fetch-cuda: ready: $dest ($want)"
