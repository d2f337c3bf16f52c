#!/usr/bin/env bash
# Runs on a GPU machine with no Rust toolchain, from the folder scripts/gpu-bundle.sh made:
# nvidia-smi, every bundled GPU test binary, and cuda-bench's matvec tables (the product's
# kernel beside dev/cuda's trials: shapes, L2 prefetch, programmatic dependent launch, eager
# and in a CUDA graph). Results go to
# RESULTS_DIR; the whole run is bounded to well under 8 minutes by per-step timeouts.
#
# usage: ./gpu-check.sh RESULTS_DIR
# Exit status: 0 if every step passed, 1 otherwise (see RESULTS_DIR/summary.txt).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: gpu-check.sh RESULTS_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# The test binaries find golden/data through STRATA_ROOT.
export STRATA_ROOT="$here"
summary="$out/summary.txt"
: > "$summary"
status=0

step() { # name, timeout seconds, output file, command...
    local name="$1" limit="$2" file="$3"
    shift 3
    local start end rc
    start=$(date +%s)
    timeout "$limit" "$@" > "$file" 2>&1
    rc=$?
    end=$(date +%s)
    local verdict=ok
    if (( rc == 124 )); then verdict="TIMEOUT after ${limit}s"; elif (( rc != 0 )); then verdict="FAILED (exit $rc)"; fi
    [[ "$verdict" == ok ]] || status=1
    printf '%-28s %-22s %4ss  %s\n' "$name" "$verdict" "$((end - start))" "$(basename "$file")" | tee -a "$summary"
}

# cuBLAS, for cuda-bench's prefill comparison and its test (dev/cuda): cudarc opens
# libcublas by the names libcublas.so or libcublas.so.12; the image's CUDA may have another
# soname (.13) or keep it off the loader path. Point the loader at the first one found, linked as
# libcublas.so (its own folder stays on the path for libcublasLt). Besides a CUDA toolkit,
# the PyPI wheels that PyTorch installs carry it, in a virtual environment under /opt on
# images built around PyTorch.
blas_lib=""
for f in /usr/local/cuda/lib64/libcublas.so* /usr/local/cuda/targets/*/lib/libcublas.so* \
    /usr/local/cuda-*/lib64/libcublas.so* \
    /opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib/libcublas.so* \
    /opt/*/.venv/lib/python3*/site-packages/nvidia/cu1*/lib/libcublas.so*; do
    [[ -f "$f" ]] && { blas_lib="$f"; break; }
done
if [[ -n "$blas_lib" ]]; then
    blas_dir="$(mktemp -d)"
    ln -s "$blas_lib" "$blas_dir/libcublas.so"
    export LD_LIBRARY_PATH="$blas_dir:$(dirname "$blas_lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "cuBLAS: $blas_lib" | tee -a "$summary"
else
    echo "cuBLAS: none found; the cuBLAS test and columns are skipped" | tee -a "$summary"
fi

# At most 8 files come back from the device machine: keep RESULTS_DIR to 8 (summary.txt,
# a file per test binary (3), bandwidth.md, split.md, generate.txt, memcheck.txt); the
# device's description goes into summary.txt.
tmp="$(mktemp -d)"
step nvidia-smi 30 "$tmp/nvidia-smi.txt" nvidia-smi
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap \
        --format=csv 2>&1 || true
    cat "$tmp/nvidia-smi.txt"
} >> "$summary"

for t in "$here"/tests/*; do
    [[ -x "$t" ]] || continue
    name="$(basename "$t")"
    step "test $name" 150 "$out/test-$name.txt" "$t" --test-threads=1 --nocapture
    if grep -q "skipped: no CUDA device" "$out/test-$name.txt"; then
        echo "  note: $name skipped GPU tests: no CUDA device was usable" | tee -a "$summary"
        status=1
    fi
done

step "cuda-bench" 120 "$out/bandwidth.md" "$here/bin/cuda-bench"

# A base build (gpu-bundle.sh with STRATA_GPU_BASE): its matvecs, then this build's again, so
# that drift between the runs shows; both appended to bandwidth.md.
if [[ -x "$here/bin/cuda-bench-base" ]]; then
    base_rev="$(cat "$here/cuda-bench-base.rev" 2>/dev/null || echo unknown)"
    step "cuda-bench base $base_rev" 120 "$tmp/base.md" "$here/bin/cuda-bench-base" --prefetch 0
    step "cuda-bench again" 120 "$tmp/again.md" "$here/bin/cuda-bench" --prefetch 0
    {
        echo
        echo "## Base build $base_rev, right after (--prefetch 0)"
        echo
        cat "$tmp/base.md"
        echo
        echo "## This build again, right after the base (--prefetch 0)"
        echo
        cat "$tmp/again.md"
    } >> "$out/bandwidth.md"
fi

# With the model in models/ (the test above needs it too): tokens/s per num_gpu with each
# device's busy share, and generate's text with every layer on the GPU against the CPU's.
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$model" && -x "$here/bin/bench" ]]; then
    step "bench split" 150 "$out/split.md" bash -c "
        '$here/bin/bench' split -m '$model' --num-gpu 0,8,15,23,30,31 -p 128 -n 64 -r 2 --trace '$out/split-trace.json' &&
        echo && echo 'Without CUDA graphs (STRATA_CUDA_GRAPHS=0):' &&
        STRATA_CUDA_GRAPHS=0 '$here/bin/bench' split -m '$model' --num-gpu 15,31 -p 128 -n 64 -r 2"
    step "generate -ngl auto / 0" 60 "$out/generate.txt" bash -c "
        '$here/bin/generate' -m '$model' -p 'The capital of France is' -n 32 --temp 0 --verbose -ngl auto > '$tmp/gen-gpu.txt' &&
        '$here/bin/generate' -m '$model' -p 'The capital of France is' -n 32 --temp 0 -ngl 0 > '$tmp/gen-cpu.txt' &&
        echo GPU: && cat '$tmp/gen-gpu.txt' && echo && echo CPU: && cat '$tmp/gen-cpu.txt'"
    # Three continuations of one prompt with every layer on the GPU (the prompt's caches
    # copied on the device, a sequence at a time a step), beside the CPU's.
    step "generate -np 3" 60 "$tmp/gen-np.txt" bash -c "
        for ngl in 99 0; do
            echo \"-np 3 -ngl \$ngl:\"
            '$here/bin/generate' -m '$model' -p 'The capital of France is' -n 16 --seed 5 -np 3 -ngl \$ngl || exit 1
        done"
    cat "$tmp/gen-np.txt" >> "$out/generate.txt"
else
    echo "  note: no model at $model: bench split and generate skipped" | tee -a "$summary"
fi

# Mixture-of-experts files (golden data, in the bundle): qwen3moe, and deepseek2's latent
# attention in both file kinds (split attn_k_b/attn_v_b with YaRN; attn_kv_b): generate with
# every block on the GPU, with the routed experts on the CPU, and all on the CPU (-ngl auto
# would keep them on the CPU until this has run), appended to generate.txt.
for stem in tiny-qwen3moe-q4_k tiny-deepseek2 tiny-deepseek2-lite; do
    moe="$here/golden/data/moe/$stem.gguf"
    [[ -f "$moe" && -x "$here/bin/generate" ]] || continue
    step "generate $stem" 60 "$tmp/gen-$stem.txt" bash -c "
        echo '$stem:'
        for ngl in 99 '99 --cpu-moe' 0; do
            echo \"-ngl \$ngl:\"
            '$here/bin/generate' -m '$moe' -p 'The capital of France is' -n 16 --temp 0 -ngl \$ngl || exit 1
            echo
        done"
    cat "$tmp/gen-$stem.txt" >> "$out/generate.txt"
done

# The GPU and the CPU in one MoE block (the routed experts of the first blocks on the CPU,
# the rest and every attention on the GPU), overlap on and off, timed by the stream's
# events (a traced run no longer waits for the GPU): appended to split.md. The tiny file
# shows the schedule, not a speed.
moe="$here/golden/data/moe/tiny-qwen3moe-q4_k.gguf"
if [[ -f "$moe" && -x "$here/bin/bench" ]]; then
    step "bench split moe" 90 "$tmp/split-moe.md" "$here/bin/bench" split -m "$moe" \
        --num-gpu 99 --n-cpu-moe 0,1 --overlap 1,0 -p 32 -n 16 -r 2
    { echo; echo "MoE, experts of the first blocks on the CPU:"; cat "$tmp/split-moe.md"; } >> "$out/split.md"
fi

# Out-of-bounds accesses and races that happen not to change a result: compute-sanitizer
# (memcheck) over the kernel tests, where the image has it. Last, since it is the slowest.
if command -v compute-sanitizer >/dev/null 2>&1 && [[ -x "$here/tests/cuda_kernels" ]]; then
    step "memcheck cuda_kernels" 150 "$out/memcheck.txt" compute-sanitizer --tool memcheck \
        --error-exitcode 3 "$here/tests/cuda_kernels" --test-threads=1
fi

echo "results in $out (summary.txt); exit $status"
exit $status
