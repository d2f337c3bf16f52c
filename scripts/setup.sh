#!/usr/bin/env bash
# What a fresh machine needs before the first build: the default model and the CUDA
# compiler pieces (NVRTC, headers, ptxas) from PyPI wheels, so that the build embeds the
# CUDA kernels and a machine with a GPU uses it. Both steps are idempotent; nothing is
# installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bash scripts/fetch-cuda.sh
