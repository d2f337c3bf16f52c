#!/usr/bin/env bash
# Strata's engine speed table (docs/engine-speed.md: pp128 / tg64 on SmolLM2-135M in four
# formats, 1 and 2 threads) measured side by side with llama.cpp's llama-bench, in the same
# run on the same files: runs of the two alternate (Strata, llama.cpp, Strata, ...) so that
# both see the same machine, and each cell is the two medians and their ratio.
# llama-bench comes from scripts/llama-ref.sh; without it only Strata's figures are printed.
#
# Usage: scripts/speed-table.sh [RUNS]   (RUNS per engine and cell, default 3)
# STRATA_SPEED_FILES="F1 F2 ..." measures those GGUF files instead of the SmolLM2 set (say
# the random-weight files of real models' shapes that scripts/make-bench-models.py writes into
# models/bench/; the table's four cells per file are the same).
# Below the table, one decode-bandwidth line per file: tg64 tokens/s × the weight bytes one
# decode token reads (weight_bytes_per_token of Strata's --timings-json: every matrix but the
# token embedding, of an expert stack only the used experts' share; the same bytes for both
# engines) = GB/s, for each engine and thread count, and Strata's share of the read
# bandwidth that `bench kernels` measures right after each of its decode runs.
# STRATA_BASE_GENERATE=PATH adds the runs of another build's generate (say, of the commit
# before a change), interleaved with the others, and each cell's this ÷ base ratio: the
# before/after of a change measured in one sitting.
# The table goes to stdout, progress and errors to stderr. Builds with $CARGO_TARGET_DIR
# when set (default: target/).
set -euo pipefail

RUNS=${1:-3}
case $RUNS in '' | *[!0-9]* | 0) echo "speed-table: RUNS must be a positive integer, not '$RUNS'" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GEN=$TARGET/release/generate
QUANT=$TARGET/release/quantize
SHIPPED=models/SmolLM2-135M-Instruct.Q4_1.gguf
LLAMA_BENCH=$ROOT/.llama-ref/build/bin/llama-bench

LOAD_START=$(uptime | sed 's/.*load average: //')
DATE_START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
# The build is of the working tree, which may differ from the commit.
COMMIT=$(git rev-parse --short HEAD)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (the working tree had uncommitted changes)"

echo "speed-table: building generate, quantize and bench (release)" >&2
cargo build --release -p strata-engine --bin generate --bin quantize >&2
cargo build --release -p strata-bench --bin bench >&2
BENCH=$TARGET/release/bench

SPEED_FILES=${STRATA_SPEED_FILES:-}
if [ -n "$SPEED_FILES" ]; then
  for file in $SPEED_FILES; do
    if [ ! -f "$file" ]; then
      echo "speed-table: STRATA_SPEED_FILES names $file, which is not a file" >&2
      exit 2
    fi
  done
elif [ ! -f "$SHIPPED" ]; then
  echo "speed-table: $SHIPPED is missing; run scripts/fetch-model.sh" >&2
  exit 1
fi

# Everything the runs make (the other formats, the prompt, each run's JSON) lives in a
# fresh temporary folder, removed at exit.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.tsv
: > "$RESULTS"
# file <tab> weight bytes one decode token reads, from Strata's tg64 runs.
BYTES=$WORK/bytes.tsv
: > "$BYTES"
# threads <tab> the memory read bandwidth (GB/s) measured right after each Strata tg64 run.
READS=$WORK/reads.tsv
: > "$READS"
PROMPT=$WORK/p128.txt

# The other formats, made from the shipped file by our quantizer, every tensor (the token
# embedding too) requantized.
if [ -z "$SPEED_FILES" ]; then
  for ty in Q4_0 Q8_0 F16; do
    out=$WORK/smol-$ty.gguf
    echo "speed-table: making $(basename "$out")" >&2
    "$QUANT" "$SHIPPED" "$out" "$ty" --token-embedding-type "$ty" >&2
  done
fi
python3 -c "w=('the quick brown fox jumps over the lazy dog and then runs far away into a green forest where many birds sing '*20).split(); print(' '.join(w[:128]), end='')" > "$PROMPT"

if [ -x "$LLAMA_BENCH" ]; then
  HAVE_LLAMA=1
else
  HAVE_LLAMA=0
  echo "speed-table: $LLAMA_BENCH is not built (scripts/llama-ref.sh builds it): Strata only" >&2
fi

# Prints one figure read from a JSON file, or nothing (with the reason on stderr).
#   json_figure strata FILE KEY COUNT_KEY COUNT   (generate's --timings-json)
#   json_figure llama FILE N_PROMPT N_GEN         (llama-bench -o json: avg_ts)
json_figure() {
  python3 - "$@" <<'PY'
import json, sys
kind, path = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        data = json.load(f)
    if kind == "strata":
        key, count_key, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
        if data[count_key] != count:
            sys.exit(f"{path}: {count_key} is {data[count_key]}, not {count}")
        print(data[key])
    else:
        n_prompt, n_gen = int(sys.argv[3]), int(sys.argv[4])
        rows = [r for r in data if r["n_prompt"] == n_prompt and r["n_gen"] == n_gen]
        if len(rows) != 1:
            sys.exit(f"{path}: {len(rows)} results for n_prompt={n_prompt} n_gen={n_gen}")
        print(rows[0]["avg_ts"])
except (OSError, ValueError, KeyError, TypeError) as e:
    sys.exit(f"{path}: {e}")
PY
}

BASE_GEN=${STRATA_BASE_GENERATE:-}
if [ -n "$BASE_GEN" ] && [ ! -x "$BASE_GEN" ]; then
  echo "speed-table: STRATA_BASE_GENERATE=$BASE_GEN is not an executable" >&2
  exit 2
fi

# One Strata run: prints tokens/s, or nothing if the run failed.
run_strata() { # FILE THREADS TEST [GENERATE]
  local file=$1 threads=$2 test=$3 gen=${4:-$GEN} json=$WORK/strata.json
  rm -f "$json"
  if [ "$test" = pp128 ]; then
    "$gen" -m "$file" -f "$PROMPT" -n 1 --temp 0 -t "$threads" --timings-json "$json" \
      > /dev/null 2> "$WORK/strata.err" &&
      json_figure strata "$json" prompt_tokens_per_s prompt_tokens 128 && return
  else
    "$gen" -m "$file" -p "The capital of France is" -n 64 --ignore-eos --temp 0 -t "$threads" \
      --timings-json "$json" > /dev/null 2> "$WORK/strata.err" &&
      json_figure strata "$json" gen_tokens_per_s gen_tokens 64 && {
      # The bytes per token, once per file, from this build's JSON (the base's may lack it).
      if [ "$gen" = "$GEN" ] && ! cut -f1 "$BYTES" | grep -qxF "$file"; then
        printf '%s\t%s\n' "$file" \
          "$(json_figure strata "$json" weight_bytes_per_token gen_tokens 64 2> /dev/null)" >> "$BYTES"
      fi
      return
    }
  fi
  echo "speed-table: generate failed on $file ($test, $threads threads):" >&2
  tail -n 3 "$WORK/strata.err" >&2
}

# The read bandwidth (GB/s) of THREADS threads over 512 MiB, `bench kernels`' reference,
# right after a decode run: the yardstick of that minute for the decode GB/s below.
read_bandwidth() { # THREADS
  "$BENCH" kernels --formats f32 --no-matmul --matvec-mib 1 --stream-mib 512 --reps 2 \
    --threads "$1" 2> /dev/null | awk -F'|' '/^\| F32 \|/ { gsub(/[ †]/, "", $4); print $4 }'
}

# One llama-bench run (-r 1: one repetition, after its own warm-up): prints avg_ts.
run_llama() { # FILE THREADS TEST
  local file=$1 threads=$2 test=$3 json=$WORK/llama.json p n
  if [ "$test" = pp128 ]; then p=128 n=0; else p=0 n=64; fi
  if "$LLAMA_BENCH" -m "$file" -p "$p" -n "$n" -t "$threads" -r 1 -o json \
    > "$json" 2> "$WORK/llama.err"; then
    json_figure llama "$json" "$p" "$n" && cp "$json" "$WORK/llama-last.json" && return
  fi
  echo "speed-table: llama-bench failed on $file ($test, $threads threads):" >&2
  tail -n 3 "$WORK/llama.err" >&2
}

FILES=${SPEED_FILES:-"$SHIPPED $WORK/smol-Q4_0.gguf $WORK/smol-Q8_0.gguf $WORK/smol-F16.gguf"}
for file in $FILES; do
  for threads in 1 2; do
    for test in pp128 tg64; do
      echo "speed-table: $file $test, $threads thread(s)" >&2
      for ((r = 1; r <= RUNS; r++)); do
        printf '%s\t%s\t%s\tstrata\t%s\n' "$file" "$threads" "$test" \
          "$(run_strata "$file" "$threads" "$test")" >> "$RESULTS"
        [ "$test" = tg64 ] && printf '%s\t%s\n' "$threads" "$(read_bandwidth "$threads")" >> "$READS"
        if [ "$HAVE_LLAMA" = 1 ]; then
          printf '%s\t%s\t%s\tllama\t%s\n' "$file" "$threads" "$test" \
            "$(run_llama "$file" "$threads" "$test")" >> "$RESULTS"
        fi
        if [ -n "$BASE_GEN" ]; then
          printf '%s\t%s\t%s\tbase\t%s\n' "$file" "$threads" "$test" \
            "$(run_strata "$file" "$threads" "$test" "$BASE_GEN")" >> "$RESULTS"
        fi
      done
    done
  done
done

LOAD_END=$(uptime | sed 's/.*load average: //')
echo "# Strata vs llama.cpp: tokens/s, median of $RUNS run(s) each, runs interleaved"
echo
echo "- date: $DATE_START to $(date -u '+%H:%M:%S UTC')"
echo "- commit: $COMMIT"
echo "- load average (1, 5, 15 min): $LOAD_START at start, $LOAD_END at end"
# Other work on the cores makes both engines slower, llama.cpp's 2-thread figures most
# (its threads spin at each barrier, and one preempted thread stalls the other).
# The end figure includes the runs themselves (2-thread runs alone make it ~1.5): only the
# start says whether other work was on the cores.
if awk -v a="${LOAD_START%%,*}" 'BEGIN { exit !(a >= 1) }'; then
  echo "- WARNING: 1-minute load average at or above 1 before the runs: other work shared the"
  echo "  cores, so these figures measure the load as much as the engines; rerun when quiet"
fi
if [ "$HAVE_LLAMA" = 1 ] && [ -f "$WORK/llama-last.json" ]; then
  python3 - "$WORK/llama-last.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
print(f"- llama.cpp: llama-bench from scripts/llama-ref.sh, backends {r.get('backends')}, "
      f"cpu {r.get('cpu_info')}, n_batch {r.get('n_batch')}, n_ubatch {r.get('n_ubatch')}")
PY
  flags=$(sed -n 's/^CMAKE_CXX_FLAGS:STRING=//p' "$ROOT/.llama-ref/build/CMakeCache.txt" 2>/dev/null)
  echo "- llama.cpp build: -march=native ${flags:-(AMX on where the CPU has it)}"
elif [ "$HAVE_LLAMA" = 0 ]; then
  echo "- llama.cpp: not built (scripts/llama-ref.sh), so its columns are left out"
fi
[ -n "$BASE_GEN" ] && echo "- base: $BASE_GEN"
echo
python3 - "$RESULTS" "$HAVE_LLAMA" "$FILES" "$BASE_GEN" "$BYTES" "$READS" <<'PY'
import statistics, sys
from collections import defaultdict
path, have_llama, files = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split()
have_base = bool(sys.argv[4])
reads = defaultdict(list)  # threads -> read GB/s measured after each Strata tg64 run
for line in open(sys.argv[6]):
    threads, value = line.rstrip("\n").split("\t")
    if value:
        reads[threads].append(float(value))
bytes_per_token = {}  # file -> weight bytes one decode token reads (Strata's JSON)
for line in open(sys.argv[5]):
    file, value = line.rstrip("\n").split("\t")
    if value and file not in bytes_per_token:
        bytes_per_token[file] = int(float(value))
values = defaultdict(list)  # (file, threads, test, engine) -> tokens/s of the runs that worked
failed = defaultdict(int)
for line in open(path):
    file, threads, test, engine, value = line.rstrip("\n").split("\t")
    if value:
        values[(file, threads, test, engine)].append(float(value))
    else:
        failed[(file, threads, test, engine)] += 1

def median(key):
    return statistics.median(values[key]) if values[key] else None

cols = [("pp128", "1"), ("tg64", "1"), ("pp128", "2"), ("tg64", "2")]
head = ["file"] + [f"{t} {n} thread{'s' if n != '1' else ''}" for t, n in cols]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for file in files:
    cells = [file.split("/")[-1]]
    for test, threads in cols:
        s = median((file, threads, test, "strata"))
        text = f"{s:.0f}" if s is not None else "failed"
        if have_llama:
            l = median((file, threads, test, "llama"))
            text += f" / {l:.0f}" if l is not None else " / failed"
            if s is not None and l is not None:
                text += f" ({s / l:.2f})"
        if have_base:
            b = median((file, threads, test, "base"))
            text += f"; base {b:.0f}" if b is not None else "; base failed"
            if s is not None and b is not None:
                text += f" (×{s / b:.2f})"
        cells.append(text)
    print("| " + " | ".join(cells) + " |")
print()
print("Cells: Strata" + (" / llama.cpp (Strata ÷ llama.cpp)" if have_llama else "")
      + ("; the base build (this ÷ base)" if have_base else "") + ", tokens/s.")
for key, n in sorted(failed.items()):
    print(f"- {n} failed run(s): {key[3]} on {key[0]}, {key[2]}, {key[1]} thread(s) (see stderr)")

# Decode bandwidth: the weight bytes a token reads, times tokens/s. Both engines read the same
# bytes per token (the same file, the same experts' share), so the ratio is the table's.
print()
print("Decode bandwidth, tg64: tokens/s × weight bytes per token (Strata's "
      "weight_bytes_per_token) = GB/s of weights read; in brackets, Strata's share of the "
      "read bandwidth measured right after its runs (median over the table: "
      + ", ".join(f"{n} thread{'s' if n != '1' else ''} {statistics.median(v):.1f} GB/s"
                  for n, v in sorted(reads.items())) + "):")
print()
engines = [("strata", "Strata")] + ([("llama", "llama.cpp")] if have_llama else []) \
    + ([("base", "base")] if have_base else [])
for file in files:
    name = file.split("/")[-1]
    b = bytes_per_token.get(file)
    if b is None:
        print(f"- {name}: no weight_bytes_per_token (no tg64 run of this build worked, or "
              "its --timings-json lacks the key)")
        continue
    parts = []
    for threads in ("1", "2"):
        figs = []
        for engine, label in engines:
            s = median((file, threads, "tg64", engine))
            figs.append(f"{label} {s * b / 1e9:.2f}" if s is not None else f"{label} failed")
            if engine == "strata" and s is not None and reads[threads]:
                figs[-1] += f" ({s * b / 1e9 / statistics.median(reads[threads]):.0%})"
        parts.append(f"{threads} thread{'s' if threads != '1' else ''}: " + ", ".join(figs))
    print(f"- {name}: {b / 1e6:.1f} MB per token; " + "; ".join(parts) + " GB/s")
PY
