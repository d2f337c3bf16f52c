#!/usr/bin/env bash
# The test command: fetches what the tests need (the default model; the CUDA compiler
# tools from PyPI, used to compile and check the kernels' PTX — no GPU needed), then runs
# every test in the workspace. GPU tests print "skipped: no CUDA device" without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
if [[ -f scripts/fetch-cuda.sh ]]; then
  bash scripts/fetch-cuda.sh
fi
cargo test --workspace "$@"
