"""Golden y = W·x for every weight format and a few shapes.

Writes golden/data/matvec/, per case `<T>.<rows>x<cols>`:
  .w.bin        u8  (rows, cols/block*type_size)  seeded random W blocks, sane f16 scales
  .x.bin        f32 (cols,)                       seeded standard normal x
  .xq.bin       u8  (cols/act_block*act_size,)    x quantized to the activation format
  .y.bin        f64 (rows,)  Σ w·x in float64, w from gguf.quants.dequantize (f32)
  .y_q.bin      f64 (rows,)  the product the ggml way, from W and xq (see README)
  .abs_dot.bin  f64 (rows,)  Σ |w·x|, the scale of any summation-order rounding error

The activation quantizers Q8_1 and Q8_K are written here from ggml's definitions
(quantize_row_q8_1_ref, quantize_row_q8_K_ref); Q8_0 is gguf.quants' (bit-exact to ggml's
quantize_row_q8_0_ref, which Q8_1 shares its d and qs with: checked below).

Run from the repo root with the pinned venv: python3 golden/gen/matvec.py
"""

from __future__ import annotations

import numpy as np

from common import QK_K, SIZES, Writer, dequantize, f16_bytes, quantize, random_blocks, scale_offsets

SEED = 20261128
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FLOATS = ["F32", "F16", "BF16"]

ACT = {"Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "Q4_1": "Q8_1", "Q5_1": "Q8_1",
       **{t: "Q8_K" for t in KQUANTS}, **{t: "F32" for t in FLOATS}}

SHAPES = {
    # rows x cols: a single row, odd row counts (tile tails), SmolLM2's hidden size 576
    # (sizes kept small: the whole data set stays a few hundred KiB)
    **{t: [(1, 256), (7, 512), (33, 320), (64, 576)] for t in LEGACY},
    # K-quants need cols % 256 == 0; 2304 = 9 super-blocks
    **{t: [(1, 256), (7, 512), (13, 1024), (3, 2304)] for t in KQUANTS},
    **{t: [(1, 256), (7, 512), (5, 576)] for t in FLOATS},
}
# In this case the first activation block of x is all zeros (d = 0 in the quantized x).
ZERO_BLOCK_CASE = (7, 512)


# ---------------------------------------------------------------- activation quantizers

def round_half_away(v: np.ndarray) -> np.ndarray:
    """C roundf of f32 values: nearest, halfway cases away from zero. In f64 so that
    |v| + 0.5 is exact (in f32, 0.49999997 + 0.5 would round up to 1)."""
    a = np.abs(v.astype(np.float64))
    return (np.sign(v) * np.floor(a + 0.5)).astype(np.float64)


def quantize_q8_1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ggml's quantize_row_q8_1_ref: per 32, d = amax/127 (f32), q = roundf(x·(1/d)),
    s = f16(f32(Σq)·d). Returns (bytes, d as f16→f64, s as f16→f64, q)."""
    xb = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(xb).max(axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = round_half_away((xb * inv[:, None]).astype(np.float32)).astype(np.int8)
    total = q.astype(np.int32).sum(axis=1)
    s32 = (total.astype(np.float32) * d).astype(np.float32)
    d16, s16 = f16_bytes(d).reshape(-1, 2), f16_bytes(s32).reshape(-1, 2)
    raw = np.concatenate([d16, s16, q.view(np.uint8)], axis=1).reshape(-1)
    err = np.abs(np.repeat(d, 32) * q.reshape(-1) - xb.reshape(-1))
    assert np.all(err <= np.repeat(d, 32) * 0.5001), "Q8_1 off by more than d/2"
    return raw, f16_value(d16), f16_value(s16), q.astype(np.int64)


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's quantize_row_q8_K_ref: per 256, max = the element of largest magnitude (first
    one), iscale = -127/max (f32), q = min(127, nearest_int(iscale·x)) where nearest_int
    rounds half to even (the 1.5·2^23 trick under the default rounding mode), d = 1/iscale
    stored as f32, bsums = Σq per 16. All-zero block: d = 0, q = 0 (bsums 0).
    Returns (bytes, d as f64, q)."""
    xb = x.reshape(-1, QK_K).astype(np.float32)
    n = xb.shape[0]
    idx = np.abs(xb).argmax(axis=1)  # first index of the largest |x|, like the C loop's `>`
    mx = xb[np.arange(n), idx]
    zero = mx == 0
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127) / np.where(zero, 1, mx)).astype(np.float32)
    q = np.rint((xb * iscale[:, None]).astype(np.float32)).astype(np.int64)
    q = np.minimum(q, 127)
    q[zero] = 0
    with np.errstate(divide="ignore"):
        d = np.where(zero, np.float32(0), np.float32(1) / np.where(zero, 1, iscale)).astype(np.float32)
    bsums = q.reshape(n, 16, 16).sum(axis=2).astype("<i2")
    raw = np.concatenate([d.astype("<f4").reshape(n, 1).view(np.uint8),
                          q.astype(np.int8).view(np.uint8),
                          bsums.view(np.uint8)], axis=1).reshape(-1)
    assert raw.size == n * 292
    err = np.abs(np.repeat(d, QK_K) * q.reshape(-1) - xb.reshape(-1))
    assert np.all(err <= np.abs(np.repeat(d, QK_K)) * 0.5001), "Q8_K off by more than d/2"
    return raw, d.astype(np.float64), q


def f16_value(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").reshape(-1).astype(np.float64)


# ---------------------------------------------------------------- exact weights

def set_scales(blocks: np.ndarray, ty: str, d: float, m: float | None) -> np.ndarray:
    out = blocks.copy()
    offs = scale_offsets(ty)
    out[:, offs[0]:offs[0] + 2] = f16_bytes(d)
    if m is not None:
        out[:, offs[1]:offs[1] + 2] = f16_bytes(m)
    return out


def exact_weights(ty: str, blocks: np.ndarray) -> np.ndarray:
    """W in f64 without f32 rounding: what an integer kernel computes (d·(sc·q) − dmin·m).

    gguf's dequantize is linear in the f16 scale fields, so with d = 1 and the min scale 0
    it gives the integer part I (sc·q, small integers, exact in f32), with d = 0 and the
    min scale 1 the min part M (−m_j for K-quants, +1 for Q4_1/Q5_1); then w = d·I + m·M
    in f64. The product gguf gives in f32 (`dequantize`) is this rounded, checked below."""
    bs, _ = SIZES[ty]
    offs = scale_offsets(ty)
    nb = blocks.shape[0]
    d = f16_value(blocks[:, offs[0]:offs[0] + 2])
    has_min = len(offs) > 1
    ipart = dequantize(ty, set_scales(blocks, ty, 1.0, 0.0 if has_min else None)).astype(np.float64)
    w = np.repeat(d, bs) * ipart
    if has_min:
        m = f16_value(blocks[:, offs[1]:offs[1] + 2])
        mpart = dequantize(ty, set_scales(blocks, ty, 0.0, 1.0)).astype(np.float64)
        w += np.repeat(m, bs) * mpart
    assert w.size == nb * bs
    return w


# ---------------------------------------------------------------- one case

def make_case(w: Writer, ty: str, rows: int, cols: int) -> None:
    rng = np.random.default_rng([SEED, sum(ord(c) * 31**i for i, c in enumerate(ty)), rows, cols])
    act = ACT[ty]
    x = rng.standard_normal(cols).astype(np.float32)
    if (rows, cols) == ZERO_BLOCK_CASE:
        x[: 256 if act == "Q8_K" else 32] = 0

    if ty in FLOATS:
        wf = (rng.standard_normal(rows * cols) * 0.05).astype(np.float32)
        if ty == "F32":
            wraw = wf.view(np.uint8)
        elif ty == "F16":
            wraw = wf.astype("<f2").view(np.uint8)
        else:
            wraw = quantize("BF16", wf)
        wdeq = dequantize(ty, wraw).astype(np.float64)
        wexact = wdeq
    else:
        bs, size = SIZES[ty]
        blocks = random_blocks(rng, ty, rows * cols // bs)
        wraw = blocks.reshape(-1)
        wdeq = dequantize(ty, wraw).astype(np.float64)
        wexact = exact_weights(ty, blocks)
        # f32 rounding of d·sc and of the product: at most a few ulp of each term
        assert np.all(np.abs(wexact - wdeq) <= 4 * np.spacing(np.abs(wdeq).astype(np.float32)) + 1e-30)

    W = wdeq.reshape(rows, cols)
    x64 = x.astype(np.float64)
    y = W @ x64
    abs_dot = np.abs(W) @ np.abs(x64)
    We = wexact.reshape(rows, cols)

    if act == "F32":
        xq_raw = x.view(np.uint8)
        y_q = y
    elif act == "Q8_0":
        xq_raw = quantize("Q8_0", x)
        xb = xq_raw.reshape(-1, 34)
        dx = f16_value(xb[:, :2])
        qx = xb[:, 2:].view(np.int8).astype(np.float64).reshape(-1)
        y_q = We @ (np.repeat(dx, 32) * qx)
    elif act == "Q8_1":
        xq_raw, dx, sx, qx = quantize_q8_1(x)
        # Q8_1 shares d and qs with Q8_0 (gguf's, bit-exact to ggml)
        ref = quantize("Q8_0", x).reshape(-1, 34)
        assert np.array_equal(ref[:, :2].reshape(-1), xq_raw.reshape(-1, 36)[:, :2].reshape(-1))
        assert np.array_equal(ref[:, 2:].reshape(-1), xq_raw.reshape(-1, 36)[:, 4:].reshape(-1))
        # ggml: Σ_b d_w·d_x·Σ q_w·q_x + m_w·s_x — the min uses s (f16 of f32 d·Σq), not d_x·Σq
        nb = cols // 32
        offs = scale_offsets(ty)
        wb = wraw.reshape(rows, nb, -1)
        mw = f16_value(wb[:, :, offs[1]:offs[1] + 2]).reshape(rows, nb)
        intpart = (We.reshape(rows, nb, 32) - mw[:, :, None]) * (dx[None, :, None] * qx.reshape(1, nb, 32))
        y_q = intpart.sum(axis=(1, 2)) + (mw * sx[None, :]).sum(axis=1)
    else:  # Q8_K
        xq_raw, dx, qx = quantize_q8_k(x)
        y_q = We @ (np.repeat(dx, QK_K) * qx.reshape(-1).astype(np.float64))

    stem = f"{ty}.{rows}x{cols}"
    w.put(f"{stem}.w", wraw.reshape(rows, -1), type=ty, rows=rows, cols=cols, act=act, seed=SEED)
    w.put(f"{stem}.x", x)
    w.put(f"{stem}.xq", np.ascontiguousarray(xq_raw).reshape(-1), type=act)
    w.put(f"{stem}.y", y.astype(np.float64))
    w.put(f"{stem}.y_q", np.asarray(y_q, dtype=np.float64))
    w.put(f"{stem}.abs_dot", abs_dot.astype(np.float64))
    rel = np.max(np.abs(y_q - y) / np.maximum(abs_dot, 1e-30))
    print(f"{stem:>18} act={act:4}  max|y_q - y|/Σ|w·x| = {rel:.2e}")


def main() -> None:
    w = Writer("matvec", """
golden/gen/matvec.py: y = W·x per weight format and shape; y_q with x quantized the ggml way.
W from random blocks, y via gguf.quants.dequantize + float64 numpy; see golden/README.md.""")
    for ty in FLOATS + LEGACY + KQUANTS:
        for rows, cols in SHAPES[ty]:
            make_case(w, ty, rows, cols)
    w.close()


if __name__ == "__main__":
    main()
