#!/usr/bin/env bash
# Decode of several sequences at once, side by side with llama.cpp's llama-batched-bench on
# the same file: for each thread count and each number of sequences B, the tokens/s of all
# B sequences together while they decode in lockstep (Strata: `generate -np B`, one batch a
# step; llama.cpp: `llama-batched-bench -npl B -pps`, a shared prompt then one batch a step).
# Runs of the two alternate, so that both see the same machine; each cell is the two
# medians and their ratio. llama-batched-bench comes from scripts/llama-ref.sh.
#
# Usage: scripts/batched-table.sh FILE [RUNS]   (RUNS per engine and cell, default 3)
# BATCHED_NPL="1 2 4 8" (sequences), BATCHED_THREADS="1 2", BATCHED_NTG=32 (tokens each
# sequence generates) change the sweep. The table goes to stdout, progress to stderr.
set -euo pipefail

FILE=${1:-}
RUNS=${2:-3}
if [ -z "$FILE" ] || [ ! -f "$FILE" ]; then
  echo "batched-table: usage: scripts/batched-table.sh FILE [RUNS] (FILE a GGUF file, not '$FILE')" >&2
  exit 2
fi
case $RUNS in '' | *[!0-9]* | 0) echo "batched-table: RUNS must be a positive integer, not '$RUNS'" >&2; exit 2 ;; esac
NPL=${BATCHED_NPL:-1 2 4 8}
THREADS=${BATCHED_THREADS:-1 2}
NTG=${BATCHED_NTG:-32}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GEN=$TARGET/release/generate
BATCHED=$ROOT/.llama-ref/build/bin/llama-batched-bench
if [ ! -x "$BATCHED" ]; then
  echo "batched-table: $BATCHED is missing; run scripts/llama-ref.sh" >&2
  exit 1
fi
echo "batched-table: building generate (release)" >&2
cargo build --release -p strata-engine --bin generate >&2

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LOAD_START=$(uptime | sed 's/.*load average: //')
DATE_START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
COMMIT=$(git rev-parse --short HEAD)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (the working tree had uncommitted changes)"

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

strata() { # threads B -> total decode tokens/s
  "$GEN" -m "$FILE" -p "Hello there, how are you" -n "$NTG" -np "$2" -t "$1" --ignore-eos \
    --seed 1 --timings-json "$TMP/t.json" > /dev/null 2> "$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gen_tokens_per_s"])' "$TMP/t.json"
}

llama() { # threads B -> S_TG t/s (the B sequences' tokens over the decode's time)
  "$BATCHED" -m "$FILE" -c 2048 -b 512 -ub 512 -npp 8 -ntg "$NTG" -npl "$2" -pps -t "$1" \
    > "$TMP/out" 2>&1 || { cat "$TMP/out" >&2; exit 1; }
  awk -F'|' '/^\| +[0-9]/ {gsub(/ /, "", $9); print $9}' "$TMP/out" | tail -1
}

echo "| threads | sequences | Strata t/s | llama.cpp t/s | ratio |"
echo "|---:|---:|---:|---:|---:|"
for t in $THREADS; do
  for b in $NPL; do
    : > "$TMP/s"; : > "$TMP/l"
    for _ in $(seq "$RUNS"); do
      strata "$t" "$b" >> "$TMP/s"
      llama "$t" "$b" >> "$TMP/l"
      echo "batched-table: $t threads, $b sequences: $(tail -1 "$TMP/s") / $(tail -1 "$TMP/l")" >&2
    done
    s=$(median < "$TMP/s"); l=$(median < "$TMP/l")
    awk -v t="$t" -v b="$b" -v s="$s" -v l="$l" \
      'BEGIN {printf "| %d | %d | %.1f | %.1f | %.2f |\n", t, b, s, l, s / l}'
  done
done
echo
echo "$(basename "$FILE"), $NTG tokens a sequence; commit $COMMIT; $DATE_START, load average $LOAD_START at the start"
