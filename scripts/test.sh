#!/usr/bin/env bash
# The test command: fetches what the tests need (the default model; the CUDA compiler
# tools from PyPI, used to compile and check the kernels' PTX — no GPU needed), then runs
# every test in the workspace. GPU tests print "skipped: no CUDA device" without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Said here because cargo shows a passing test's output only on request.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
  echo "test: no CUDA driver here: the GPU tests pass as 'skipped: no CUDA device'" \
       "(cargo test -- --nocapture shows each)"
fi
cargo test --workspace "$@"
