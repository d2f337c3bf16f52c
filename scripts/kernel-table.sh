#!/usr/bin/env bash
# The CPU kernel table of docs/cpu-kernels.md: `bench kernels` run RUNS times, and for each
# cell the median over the runs (the machine is shared: one run's read bandwidth and
# matvec figures swing by 20% or more from one minute to the next). A ratio cell is the
# median of the runs' ratios (each measured against its own run's read reference), not the
# ratio of the medians.
#
# Usage: scripts/kernel-table.sh [RUNS] [-- bench kernels options]
#   RUNS defaults to 3; the options default to --matvec-mib 512 --stream-mib 512 --reps 5.
# The table goes to stdout, progress to stderr. Builds with $CARGO_TARGET_DIR when set.
set -euo pipefail

RUNS=${1:-3}
case $RUNS in '' | *[!0-9]* | 0) echo "kernel-table: RUNS must be a positive integer, not '$RUNS'" >&2; exit 2 ;; esac
shift || true
if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then set -- --matvec-mib 512 --stream-mib 512 --reps 5; fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
echo "kernel-table: building bench (release)" >&2
cargo build --release -p strata-bench >&2

COMMIT=$(git rev-parse --short HEAD)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (the working tree had uncommitted changes)"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD=$(uptime | sed 's/.*load average: //')
for i in $(seq "$RUNS"); do
  echo "kernel-table: run $i of $RUNS" >&2
  "$TARGET/release/bench" kernels "$@" > "$OUT/run$i.txt"
done
END=$(date -u '+%H:%M UTC')

echo "Medians of $RUNS runs of \`bench kernels $*\`, $START to $END, commit $COMMIT, load average at start $LOAD."
echo
python3 - "$OUT" "$RUNS" <<'EOF'
import statistics
import sys

out, runs = sys.argv[1], int(sys.argv[2])
tables = []
for i in range(1, runs + 1):
    lines = open(f"{out}/run{i}.txt").read().splitlines()
    head = [l for l in lines if not l.startswith("|")]
    rows = [l for l in lines if l.startswith("|")]
    tables.append(rows)
print("\n".join(l for l in head if l.strip()))
print()
first = tables[0]
for k, line in enumerate(first):
    cells = [c.strip() for c in line.strip("|").split("|")]
    if k < 2 or any(len(t) != len(first) for t in tables):
        print(line)
        continue
    merged = []
    for j, c in enumerate(cells):
        vals = [[x.strip() for x in t[k].strip("|").split("|")][j] for t in tables]
        if all(v.endswith("%") for v in vals):
            merged.append(f"{statistics.median(float(v[:-1]) for v in vals):.0f}%")
        else:
            try:
                merged.append(f"{statistics.median(float(v) for v in vals):.1f}")
            except ValueError:
                merged.append(c)
    print("| " + " | ".join(merged) + " |")
print()
print("Per-run ratios (1T / 2T), to show the spread:")
print()
hdr = [c.strip() for c in first[0].strip("|").split("|")]
cols = [j for j, h in enumerate(hdr) if h.startswith("ratio")]
for k in range(2, len(first)):
    name = first[k].strip("|").split("|")[0].strip()
    spread = [" / ".join([x.strip() for x in t[k].strip("|").split("|")][j] for j in cols) for t in tables]
    print(f"- {name}: " + ", ".join(spread))
EOF
