#!/usr/bin/env bash
# The machine code ptxas makes of the embedded kernels, summarised per kernel: instructions,
# and load/store instructions by kind and width. A CPU-side proxy for the GPU matvec kernels'
# speed, which on an H100 followed their loads per weight byte (docs/gpu-results.md).
#
# usage: scripts/sass-loads.sh [MODULE] [ARCH]     (defaults: matvec sm_90)
#
# Needs ptxas (scripts/fetch-cuda.sh) and cuobjdump + nvdisasm, which this fetches from PyPI
# (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm; CUDA 13 tools, they read ptxas 12.9's
# output) into the git-ignored .cuda/sass-tools/. The PTX is the one the build embeds, as
# tests/tests/cuda_ptx.rs writes it out (dev/cuda/tests/ptx.rs, for dev/cuda's trial modules
# such as matvec_w4 or matvec_trial).
set -euo pipefail

module="${1:-matvec}"
arch="${2:-sm_90}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cuda="${STRATA_CUDA_DIR:-$root/.cuda}"
tools="$cuda/sass-tools"
version=13.5.37

"$root/scripts/fetch-cuda.sh" >/dev/null
if [[ ! -x "$tools/nvidia/cu13/bin/cuobjdump" || ! -x "$tools/nvidia/cu13/bin/nvdisasm" ]]; then
    echo "sass-loads: fetching cuobjdump and nvdisasm $version into $tools" >&2
    mkdir -p "$tools/wheels"
    python3 -m pip download --quiet --no-deps -d "$tools/wheels" \
        "nvidia-cuda-cuobjdump==$version" "nvidia-cuda-nvdisasm==$version"
    for w in "$tools"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$tools"
    done
    chmod +x "$tools"/nvidia/cu13/bin/*
fi
export PATH="$tools/nvidia/cu13/bin:$PATH"

# Both write every embedded module's PTX to $CARGO_TARGET_DIR/tmp/cuda_ptx/.
(cd "$root" && cargo test --quiet -p strata-tests --test cuda_ptx >/dev/null &&
    cargo test --quiet -p strata-dev-cuda --test ptx >/dev/null)
ptx="$CARGO_TARGET_DIR/tmp/cuda_ptx/$module.ptx"
[[ -f "$ptx" ]] || {
    echo "sass-loads: no $ptx (modules: kernels-cuda/kernels/*.cu; dev/cuda/build.rs's)" >&2
    exit 1
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$cuda/nvidia/cuda_nvcc/bin/ptxas" -O3 --gpu-name "$arch" -o "$work/k.cubin" "$ptx"
cuobjdump -sass "$work/k.cubin" 2>/dev/null > "$work/k.sass"

echo "$module at $arch (ptxas $("$cuda/nvidia/cuda_nvcc/bin/ptxas" --version | grep -o 'V[0-9.]*' | tail -1))"
echo
echo "| kernel | instructions | global loads | shared loads | shared stores |"
echo "|---|---|---|---|---|"
python3 - "$work/k.sass" <<'PY'
import collections, re, sys

kernels = collections.OrderedDict()
name = None
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        name = m.group(1)
        kernels[name] = []
        continue
    m = re.match(r"\s+/\*[0-9a-f]+\*/\s+(.*?)\s*;", line)
    if name and m:
        op = re.sub(r"^@!?U?P[0-9T]\s+", "", m.group(1)).split()[0]
        kernels[name].append(op)

def kinds(ops, prefix):
    c = collections.Counter(o for o in ops if o == prefix or o.startswith(prefix + "."))
    return ", ".join(f"{n} {o}" for o, n in sorted(c.items())) or "0"

for name in sorted(kernels):
    ops = kernels[name]
    print(f"| {name} | {len(ops)} | {kinds(ops, 'LDG')} | {kinds(ops, 'LDS')} | {kinds(ops, 'STS')} |")
PY
