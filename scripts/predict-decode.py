#!/usr/bin/env python3
"""Bandwidth-bound decode prediction for a plan: reads `bench plan -o json` on stdin and
prints the seconds one decoded token spends reading weights on each device, the copies
between devices, and the tokens/s that follow under two schedules.

Usage:
  bench plan -m MODEL --gpus 8x80GiB --host-mem 1TiB [placement flags] -o json \
    | python3 scripts/predict-decode.py [--gpu-bw 2.0e12] [--cpu-bw 3.0e11] [--pcie-bw 2.5e10]

The model (docs/plan-deepseek-r1.md works it through for DeepSeek-R1 on 8 GPUs):
- A device reads its `read_per_token_bytes` per token (every weight it holds but the token
  embedding; a routed expert stack at used/n of its bytes, uniform routing) at its
  bandwidth: CPU `--cpu-bw`, each GPU `--gpu-bw`, bytes/s.
- Each time the residual stream crosses between devices, `--hidden` f32 values cross PCIe
  at `--pcie-bw`. Crossings: embedding (CPU) -> block 0's attention; a block's attention ->
  its FFN -> the next block's attention -> ... -> the output layer, one per change of
  device; for each other device holding some of a block's routed experts, one there and
  one back. A copy's latency and the logits' copy back are not counted.
- sequential: devices take turns (llama.cpp's schedule when tensors are overridden):
  seconds/token = sum over devices of read / bandwidth + copies.
- overlapped: devices sharing a block's routed experts compute their shares at the same
  time (Strata's runner): for each such block only the slowest share counts, so the
  others' time is taken off the sequential figure. A device holding c of a block's n
  experts reads used*c/n experts' bytes of it per token.
KV cache reads are left out (at most the plan's KV total per token, small here).
`--used` and `--hidden` are DeepSeek-R1's by default (8 of 256 experts; hidden 7168); the
per-expert bytes come from the JSON (expert_bytes over the experts of all blocks).
"""

import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-bw", type=float, default=2.0e12, help="GPU memory bytes/s")
    ap.add_argument("--cpu-bw", type=float, default=3.0e11, help="host memory bytes/s")
    ap.add_argument("--pcie-bw", type=float, default=2.5e10, help="host<->GPU bytes/s")
    ap.add_argument("--used", type=int, default=8, help="routed experts read per token")
    ap.add_argument("--hidden", type=int, default=7168, help="residual stream width")
    a = ap.parse_args()

    p = json.load(sys.stdin)
    kind = {d["name"]: d["kind"] for d in p["devices"]}

    def bw(dev):
        return a.cpu_bw if kind[dev] == "cpu" else a.gpu_bw

    # Per-expert bytes: every routed expert of every block is the same size here.
    n_experts = [max((r["end"] for r in b["experts"]), default=0) for b in p["block_parts"]]
    per_expert = p["expert_bytes"] / sum(n_experts) if sum(n_experts) else 0

    print(f"per device (bandwidth {a.gpu_bw / 1e12:g} TB/s GPU, {a.cpu_bw / 1e9:g} GB/s CPU):")
    t_read = 0.0
    for d in p["devices"]:
        b = d["read_per_token_bytes"]
        if b == 0:
            continue
        t = b / bw(d["name"])
        t_read += t
        print(f"  {d['name']:6} {b / 1e9:7.3f} GB / {bw(d['name']) / 1e9:6g} GB/s = {t * 1e3:7.3f} ms")

    crossings = 0
    cur = "CPU"  # the token embedding stays on the CPU
    saved = 0.0
    groups = {}  # (shares as (device, c)) -> [blocks], for the overlap table
    for i, b in enumerate(p["block_parts"]):
        for dev in (b["attention"], b["ffn"]):
            if dev != cur:
                crossings += 1
                cur = dev
        count = {}
        for r in b["experts"]:
            count[r["device"]] = count.get(r["device"], 0) + r["end"] - r["first"]
        crossings += 2 * len([dev for dev in count if dev != b["ffn"]])
        if len(count) > 1:
            n = n_experts[i]
            t = {dev: a.used * c / n * per_expert / bw(dev) for dev, c in count.items()}
            saved += sum(t.values()) - max(t.values())
            groups.setdefault(tuple(sorted(count.items())), []).append(i)
    if p["output_device"] != cur:
        crossings += 1
    copy_bytes = a.hidden * 4
    t_copy = crossings * copy_bytes / a.pcie_bw
    print(f"copies: {crossings} crossings x {copy_bytes} B / {a.pcie_bw / 1e9:g} GB/s = {t_copy * 1e3:.3f} ms")

    if groups:
        print(f"blocks whose experts are split ({per_expert / 1e6:.1f} MB an expert, "
              f"{a.used} of n read per token): ms per block for each share, the slowest counts")
        for shares, blocks in groups.items():
            n = n_experts[blocks[0]]
            parts = []
            for dev, c in shares:
                t = a.used * c / n * per_expert / bw(dev)
                parts.append(f"{dev} {c}: {t * 1e3:.4f}")
            t_all = [a.used * c / n * per_expert / bw(dev) for dev, c in shares]
            print(f"  {len(blocks):2} block(s) {blocks[0]}..{blocks[-1]}: " + ", ".join(parts)
                  + f" -> saves {(sum(t_all) - max(t_all)) * 1e3:.4f} each")

    seq = t_read + t_copy
    ovl = seq - saved
    print(f"sequential: {seq * 1e3:.2f} ms/token = {1 / seq:.1f} tokens/s")
    print(f"overlapped: {seq * 1e3:.2f} - {saved * 1e3:.2f} = {ovl * 1e3:.2f} ms/token = {1 / ovl:.1f} tokens/s")


if __name__ == "__main__":
    main()
