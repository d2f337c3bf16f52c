"""Golden data for every format's dequantize and, where gguf can, quantize.

Writes golden/data/formats/:
  <T>.dequant.blocks.bin  u8  (n_blocks, type_size)  seeded random blocks, sane f16 scales
  <T>.dequant.values.bin  f32 (n_blocks, block_size) gguf.quants.dequantize of them
  <T>.quant.input.bin     f32 (n_blocks, block_size) seeded random f32 + crafted tie cases
  <T>.quant.blocks.bin    u8  (n_blocks, type_size)  gguf.quants.quantize of them
Each quant/dequant line of the manifest has `labels=` naming what each block is (one label
per block, comma separated) so a failing test can say which case it hit.

Run from the repo root with the pinned venv: python3 golden/gen/formats.py
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from common import QK_K, SIZES, Writer, dequantize, f16_bytes, quantize, random_blocks, scale_offsets

SEED = 20261127
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def rng_for(kind: str, ty: str) -> np.random.Generator:
    # One stream per (file kind, format) so adding a format does not change the others.
    return np.random.default_rng([SEED, sum(map(ord, kind)), sum(ord(c) * 31**i for i, c in enumerate(ty))])


# ---------------------------------------------------------------- dequantize inputs

def float_elements(rng: np.random.Generator, ty: str) -> tuple[np.ndarray, list[str]]:
    """Raw bytes of F32/F16/BF16 elements: random bit patterns (every exponent, subnormals
    included) without NaNs, then the specials: ±0, ±inf, the canonical quiet NaNs.
    Signalling NaNs are left out: converters differ on quieting them (x86 F16C quiets,
    a plain shift does not) and no weight file holds them."""
    if ty == "F32":
        bits = rng.integers(0, 2**32, size=500, dtype=np.uint64).astype(np.uint32)
        bits = bits[(bits & 0x7F800000) != 0x7F800000]
        specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                             0x00000001, 0x807FFFFF, 0x7F7FFFFF], dtype=np.uint32)
        exp_mask, word = 0x7F80, np.uint32
    else:
        bits = rng.integers(0, 2**16, size=500, dtype=np.uint32).astype(np.uint16)
        exp_mask = 0x7C00 if ty == "F16" else 0x7F80
        bits = bits[(bits & exp_mask) != exp_mask]
        qnan = 0x7E00 if ty == "F16" else 0x7FC0
        inf = exp_mask
        specials = np.array([0, 0x8000, inf, inf | 0x8000, qnan, qnan | 0x8000, 1, 0x8001, 0x03FF],
                            dtype=np.uint16)
        word = np.uint16
    allbits = np.concatenate([specials, bits[: 256 - len(specials)]]).astype(word)
    assert len(allbits) == 256
    labels = ["special"] * len(specials) + ["random"] * (256 - len(specials))
    return allbits.astype(allbits.dtype.newbyteorder("<")).view(np.uint8), labels


def quant_blocks(rng: np.random.Generator, ty: str) -> tuple[np.ndarray, list[str]]:
    """Random blocks with sane scales, then edge cases on the scale fields: d = 0, d = -0,
    a subnormal f16 d, the largest f16 d (65504), negative mins."""
    n_random = 12 if ty in LEGACY else 6
    blocks = random_blocks(rng, ty, n_random)
    labels = ["random"] * n_random
    offs = scale_offsets(ty)
    edge = random_blocks(rng, ty, 4)
    for i, (bits, label) in enumerate([(0x0000, "d=+0"), (0x8000, "d=-0"),
                                       (0x0201, "d=subnormal"), (0x7BFF, "d=65504")]):
        edge[i, offs[0]:offs[0] + 2] = np.array([bits & 0xFF, bits >> 8], dtype=np.uint8)
        if len(offs) > 1:
            # min / dmin: negative here (random blocks have it positive for K-quants)
            edge[i, offs[1]:offs[1] + 2] = f16_bytes(-0.0371)
        labels.append(label)
    return np.concatenate([blocks, edge]), labels


# ---------------------------------------------------------------- quantize inputs

def bf16_inputs(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """f32 values for BF16 rounding: random values of many magnitudes, then exact ties
    (low half 0x8000 with even and odd kept half), near-ties (0x7FFF, 0x8001), overflow to
    inf (0x7F7FFFFF), subnormals, ±0, ±inf and NaNs with payloads."""
    random = (rng.standard_normal(224) * np.exp(rng.uniform(-20, 20, 224))).astype(np.float32)
    special_bits = [
        0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000,  # ties: to even (down), to even (up)
        0x3F807FFF, 0x3F808001, 0x40490FDB, 0x7F7FFFFF,  # near ties, pi, max finite -> inf
        0x7F7F8000, 0x00008000, 0x00018000, 0x80008000,  # tie to inf, subnormal ties
        0x00000001, 0x00000000, 0x80000000, 0x7F800000,
        0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,  # NaNs: quiet, signalling
        0x7F812345, 0xFFA00000, 0x7FFFFFFF, 0x3F7FFFFF,
        0x47800000, 0x477F8000, 0x477F7FFF, 0x477FFFFF,
        0x3E99999A, 0xBE99999A, 0x3DCCCCCD, 0x00800000,
    ]
    specials = np.array(special_bits, dtype=np.uint32).view(np.float32)
    values = np.concatenate([specials, random]).astype(np.float32)
    assert len(values) == 256
    return values, ["special"] * len(specials) + ["random"] * 224


def legacy_inputs(rng: np.random.Generator, ty: str) -> tuple[np.ndarray, list[str]]:
    """Blocks of 32 f32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0: random blocks of several magnitudes,
    then crafted cases (see README): exact rounding ties, the f16 tie of d, a ±amax tie,
    all-zero, constant, tiny (subnormal f16 d), and for Q4_0/Q5_0 values where a fused
    multiply-add would round differently."""
    blocks, labels = [], []
    for scale in (1.0, 0.02, 37.0, 1e-3, 0.5, 3.0):
        blocks.append(rng.standard_normal(32) * scale)
        labels.append(f"normal*{scale}")
    blocks.append(rng.uniform(-1, 3, 32))
    labels.append("uniform(-1..3)")
    blocks.append(rng.uniform(0.5, 2, 32))
    labels.append("uniform(0.5..2)")

    nmax = {"Q4_0": 8, "Q5_0": 16, "Q8_0": 127, "Q4_1": 15, "Q5_1": 31}[ty]
    for s, sign, label in ((0.25, -1, "ties_neg_max"), (2.0, 1, "ties_pos_max")):
        blocks.append(tie_block(rng, ty, nmax, s, sign))
        labels.append(label)
    for k, label in ((1, "d_f16_tie_even_down"), (3, "d_f16_tie_even_up")):
        # d lands exactly halfway between two f16 values: 1 + k*2^-11
        blocks.append(d_tie_block(rng, ty, nmax, 1 + k * 2.0**-11))
        labels.append(label)
    b = rng.standard_normal(32)
    a = np.abs(b).max() * 1.5
    b[5], b[20] = a, -a
    blocks.append(b)
    labels.append("amax_tie_pos_first")
    b = b.copy()
    b[5], b[20] = -a, a
    blocks.append(b)
    labels.append("amax_tie_neg_first")
    blocks.append(np.zeros(32))
    labels.append("all_zero")
    blocks.append(np.full(32, 0.3))
    labels.append("constant")
    blocks.append(rng.standard_normal(32) * 1e-6)
    labels.append("tiny_subnormal_d")
    if ty in ("Q4_0", "Q5_0"):
        blocks.append(fma_block(rng, ty, nmax))
        labels.append("fma_sensitive")
    return np.stack(blocks).astype(np.float32), labels


def tie_block(rng, ty, nmax, s, sign):
    """Values on exact half steps of a power-of-two d, so x·id (and x − min) are exact and
    every element is a rounding tie."""
    if ty in ("Q4_0", "Q5_0"):
        # d = max / -nmax = -sign*s, id exact; x·id = -(j + 0.5)·sign
        x = (rng.integers(-nmax, nmax, 32) + 0.5) * s
        x[0] = sign * nmax * s
    elif ty == "Q8_0":
        x = (rng.integers(-nmax, nmax, 32) + 0.5) * s
        x[0] = sign * nmax * s
    else:  # Q4_1 / Q5_1: d = (max - min)/nmax = s, q = trunc((x - min)/s + 0.5)
        lo = -3 * s
        x = lo + (rng.integers(0, nmax, 32) + 0.5) * s
        x[0], x[1] = lo, lo + nmax * s
    return x


def d_tie_block(rng, ty, nmax, d):
    """A block whose f32 d is exactly halfway between two f16 values."""
    if ty in ("Q4_1", "Q5_1"):
        x = rng.uniform(0.05, 0.95, 32) * nmax * d - d  # inside [min, max] below
    else:
        x = rng.uniform(-0.9, 0.9, 32) * d * nmax
    if ty in ("Q4_0", "Q5_0"):
        x[3] = -nmax * d  # d = max / -nmax
    elif ty == "Q8_0":
        x[3] = -nmax * d  # d = amax / 127
    else:
        x[3], x[9] = -d, -d + nmax * d  # d = (max - min)/nmax, min = -d (another f16 tie)
    return x


def fma_block(rng, ty, nmax):
    """Q4_0/Q5_0: values where trunc(fl(fl(x·id) + nmax+0.5)) (plain f32, what gguf 0.19
    does) differs from trunc(fl(x·id + nmax+0.5)) (one rounding, what a fused multiply-add
    gives). The golden follows gguf; see README."""
    mx = np.float32(-nmax * 1.3)
    d = np.float32(mx / np.float32(-nmax))
    inv = np.float32(1) / d
    off = np.float32(nmax + 0.5)
    found = []
    for k in range(1, 2 * nmax):
        x0 = np.float32((k - float(off)) / float(inv))
        x = x0
        for _ in range(400):
            plain = np.trunc(np.float32(np.float32(x * inv) + off))
            exact = Fraction(float(x)) * Fraction(float(inv)) + Fraction(float(off))
            fused = np.trunc(round_f32(exact))
            if plain != fused:
                found.append(x)
                break
            x = np.nextafter(x, np.float32(-np.inf) if k > nmax else np.float32(np.inf))
    assert len(found) >= 4, found
    x = rng.uniform(-nmax, nmax, 32) * 1.2
    x[0] = mx
    x[1:1 + len(found[:16])] = found[:16]
    return x


def round_f32(exact: Fraction) -> np.float32:
    """The f32 nearest to an exact rational, ties to even (no double rounding)."""
    f = np.float32(float(exact))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    def key(c):
        return (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1)
    return min(cands, key=key)


def ranges(labels: list[str]) -> str:
    """Per-block labels as `label:start-end` runs (end exclusive), comma separated."""
    assert all("," not in l and ":" not in l and " " not in l for l in labels), labels
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append(f"{labels[start]}:{start}-{i}")
            start = i
    return ",".join(out)


# ---------------------------------------------------------------- main

def main() -> None:
    w = Writer("formats", """
golden/gen/formats.py: dequantize and quantize golden data for every format.
Made by gguf.quants (the pinned versions below); see golden/README.md.""")
    for ty in ["F32", "F16", "BF16"] + LEGACY + KQUANTS:
        rng = rng_for("dequant", ty)
        if ty in ("F32", "F16", "BF16"):
            raw, labels = float_elements(rng, ty)
            values = dequantize(ty, raw)
            block_size, size = 1, SIZES[ty][1]
        else:
            blocks, labels = quant_blocks(rng, ty)
            raw = blocks.reshape(-1)
            values = dequantize(ty, raw)
            block_size, size = SIZES[ty]
        n = raw.size // size
        w.put(f"{ty}.dequant.blocks", raw.reshape(n, size), type=ty, seed=SEED, labels=ranges(labels))
        w.put(f"{ty}.dequant.values", values.reshape(n, block_size), type=ty)

    for ty in ["BF16"] + LEGACY:
        rng = rng_for("quant", ty)
        if ty == "BF16":
            values, labels = bf16_inputs(rng)
            out = quantize(ty, values)
            w.put("BF16.quant.input", values.reshape(-1, 1), type=ty, seed=SEED, labels=ranges(labels))
            w.put("BF16.quant.blocks", out.reshape(-1, 2), type=ty)
            continue
        values, labels = legacy_inputs(rng, ty)
        out = quantize(ty, values)
        _, size = SIZES[ty]
        # Our inputs must survive the round trip through gguf's own dequantize.
        assert dequantize(ty, out).shape == (values.size,)
        w.put(f"{ty}.quant.input", values, type=ty, seed=SEED, labels=ranges(labels))
        w.put(f"{ty}.quant.blocks", out.reshape(len(values), size), type=ty)
    w.close()


if __name__ == "__main__":
    main()
