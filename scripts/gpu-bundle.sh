#!/usr/bin/env bash
# Builds, on this machine, everything a GPU machine without a Rust toolchain needs to check
# Strata's CUDA side, into one git-ignored folder (default gpu-bundle/, under 60 MiB):
#
#   gpu-bundle/gpu-check.sh        run this there (a copy of scripts/gpu-check.sh)
#   gpu-bundle/bin/cuda-bench      dev/cuda's bench: validates the trial matvec kernels against
#                                  the product's and a CPU reference, then times each (GB/s)
#                                  beside the product's and the device's copy bandwidth
#   gpu-bundle/bin/bench           the workspace bench binary, when it builds
#   gpu-bundle/bin/generate        the generate CLI
#   gpu-bundle/tests/<name>        release test binaries of the GPU tests (tests/ and dev/cuda's
#                                  trials)
#   gpu-bundle/golden/data/        the golden data those tests read (via STRATA_ROOT)
#
#   gpu-bundle/bin/cuda-bench-base cuda-bench built from git revision $STRATA_GPU_BASE, when set
#                                  (gpu-check.sh runs it between two runs of cuda-bench, so
#                                  one GPU call compares the kernels before and after a change)
#
# usage: scripts/gpu-bundle.sh [OUT_DIR]
# STRATA_GPU_TESTS overrides the list of tests/tests/*.rs targets bundled (space-separated);
# dev/cuda/tests/trials.rs is bundled either way.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/gpu-bundle}"
tests="${STRATA_GPU_TESTS:-cuda_kernels split_cuda}"
limit_mib=60
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

# The kernels are compiled into the binaries at build time: NVRTC must be here.
"$root/scripts/fetch-cuda.sh"

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests" "$out/golden"

echo "gpu-bundle: building cuda-bench (release)"
cargo build --release --quiet -p strata-dev-cuda --bin cuda-bench
cp "$CARGO_TARGET_DIR/release/cuda-bench" "$out/bin/"

if [[ -n "${STRATA_GPU_BASE:-}" ]]; then
    base_rev="$(git -C "$root" rev-parse --short "$STRATA_GPU_BASE")"
    base_src="$CARGO_TARGET_DIR/gpu-base-src"
    echo "gpu-bundle: building cuda-bench at $base_rev (release), for the side-by-side run"
    git -C "$root" worktree remove --force "$base_src" 2>/dev/null || rm -rf "$base_src"
    git -C "$root" worktree prune
    git -C "$root" worktree add --quiet --detach "$base_src" "$base_rev"
    # cuda-bench lived in the kernel crate until it moved to dev/cuda.
    base_pkg=strata-kernels-cuda
    if [[ -f "$base_src/dev/cuda/Cargo.toml" ]]; then base_pkg=strata-dev-cuda; fi
    (cd "$base_src" && STRATA_CUDA_DIR="$root/.cuda" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/gpu-base" \
        cargo build --release --quiet -p "$base_pkg" --bin cuda-bench)
    cp "$CARGO_TARGET_DIR/gpu-base/release/cuda-bench" "$out/bin/cuda-bench-base"
    echo "$base_rev" > "$out/cuda-bench-base.rev"
    git -C "$root" worktree remove --force "$base_src"
fi

echo "gpu-bundle: building bench (release)"
if cargo build --release --quiet -p strata-bench --bins; then
    for b in bench strata-bench; do
        if [[ -x "$CARGO_TARGET_DIR/release/$b" ]]; then cp "$CARGO_TARGET_DIR/release/$b" "$out/bin/bench"; fi
    done
else
    echo "gpu-bundle: WARNING: the bench binary did not build; bundling without it" >&2
fi

echo "gpu-bundle: building generate (release)"
cargo build --release --quiet -p strata-engine --bin generate
cp "$CARGO_TARGET_DIR/release/generate" "$out/bin/"

echo "gpu-bundle: building test binaries (release): $tests, and dev/cuda's trials"
test_args=()
for t in $tests; do test_args+=(--test "$t"); done
cargo test --release --quiet -p strata-tests --no-run --message-format=json "${test_args[@]}" \
    > "$out/.cargo-messages.json"
cargo test --release --quiet -p strata-dev-cuda --no-run --message-format=json --test trials \
    >> "$out/.cargo-messages.json"
python3 - "$out/.cargo-messages.json" "$out/tests" <<'PY'
import json, shutil, sys
messages, dest = sys.argv[1], sys.argv[2]
found = 0
for line in open(messages):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"]
        shutil.copy2(m["executable"], f"{dest}/{name}")
        found += 1
if found == 0:
    sys.exit("gpu-bundle: cargo reported no test executables")
PY
rm "$out/.cargo-messages.json"

cp -r "$root/golden/data" "$out/golden/data"
cp "$root/scripts/gpu-check.sh" "$out/gpu-check.sh"
chmod +x "$out/gpu-check.sh"

# Debug info is for this machine; the GPU machine needs the code (and the embedded PTX).
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$out"/bin/* "$out"/tests/*
fi
for b in "$out"/bin/cuda-bench* "$out"/bin/generate "$out"/tests/*; do
    # Each embedded (deflated) module starts with ptx.rs's PTX_MARKER; a base build from
    # before commit ad37a3a embeds the PTX as text.
    if ! grep -q -a -e "STRATA-PTX-DEFLATE" -e "\.target sm_" "$b"; then
        echo "gpu-bundle: $b has no embedded PTX (built without NVRTC?)" >&2
        exit 1
    fi
done

# The model (98 MB) does not fit one device call's 64 MiB with the bundle: cut it in two
# git-ignored folders that two back-to-back calls carry (the second within the machine's
# 30 s warm time, so the first part is still there); gpu-check.sh's caller joins them into
# gpu-bundle/models/ (see docs/gpu-results.md, "How to run the GPU check").
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -f "$model" ]]; then
    rm -rf "$root/.gpu-model-a" "$root/.gpu-model-b"
    mkdir -p "$root/.gpu-model-a" "$root/.gpu-model-b"
    head -c 62000000 "$model" > "$root/.gpu-model-a/part"
    tail -c +62000001 "$model" > "$root/.gpu-model-b/part"
    echo "gpu-bundle: model cut into .gpu-model-a/part and .gpu-model-b/part"
fi

size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-bundle: $out: $((size_kib / 1024)) MiB"
ls -la "$out" "$out/bin" "$out/tests"
if (( size_kib > limit_mib * 1024 )); then
    echo "gpu-bundle: bundle is over $limit_mib MiB" >&2
    exit 1
fi
