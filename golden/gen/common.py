"""Shared pieces of the golden-data generators: writing arrays with a manifest, and making
random blocks with sane scales.

Every array is one raw little-endian file `<name>.bin`; the folder's MANIFEST.txt has one
line per file: `<file> <dtype> <dim,dim,...> key=value ...` (dtype: u8, f32 or f64).
The Rust loader is tests/src/golden.rs.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "golden", "data")

QK_K = 256

# ggml block size and bytes per block, as gguf lists them (checked against docs/formats.md).
SIZES = {name: gguf.GGML_QUANT_SIZES[T[name]] for name in (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")}

DTYPES = {np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def versions() -> str:
    return f"gguf={_gguf_version()} numpy={np.__version__} python={sys.version.split()[0]}"


def _gguf_version() -> str:
    from importlib.metadata import version
    return version("gguf")


class Writer:
    """Writes arrays into one folder of golden/data and keeps its manifest."""

    def __init__(self, folder: str, header: str):
        self.dir = os.path.join(DATA, folder)
        os.makedirs(self.dir, exist_ok=True)
        for f in os.listdir(self.dir):
            if f.endswith(".bin") or f == "MANIFEST.txt":
                os.remove(os.path.join(self.dir, f))
        self.lines = [f"# {line}" for line in header.strip().splitlines()]
        self.lines.append(f"# {versions()}")
        self.lines.append("# file dtype shape key=value...")
        self.total = 0

    def put(self, name: str, arr: np.ndarray, **attrs) -> None:
        arr = np.ascontiguousarray(arr)
        dtype = DTYPES[arr.dtype]
        fname = f"{name}.bin"
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        with open(os.path.join(self.dir, fname), "wb") as f:
            f.write(data)
        self.total += len(data)
        shape = ",".join(str(d) for d in arr.shape)
        kv = "".join(f" {k}={v}" for k, v in attrs.items())
        for v in attrs.values():
            assert " " not in str(v), v
        self.lines.append(f"{fname} {dtype} {shape}{kv}")

    def close(self) -> None:
        with open(os.path.join(self.dir, "MANIFEST.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print(f"{self.dir}: {len(self.lines)} lines, {self.total} bytes of arrays")


def f16_bytes(v) -> np.ndarray:
    """f32/f64 values rounded to f16 (nearest, ties to even), as little-endian bytes."""
    return np.atleast_1d(np.asarray(v, dtype=np.float32)).astype("<f2").view(np.uint8)


def sane_scales(rng: np.random.Generator, n: int, signed: bool = True) -> np.ndarray:
    """n scales log-uniform in [1e-3, 1e-1] (random sign if `signed`), as f32."""
    mag = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), size=n))
    sign = rng.choice([-1.0, 1.0], size=n) if signed else np.ones(n)
    return (mag * sign).astype(np.float32)


def random_blocks(rng: np.random.Generator, ty: str, n: int) -> np.ndarray:
    """n blocks of `ty` with random quant bytes and sane f16 scales, shape (n, type_size).

    Only the f16 scale fields are constrained; every other byte (nibbles, high bits,
    packed 6-bit sub-block scales, Q6_K's i8 scales) is uniformly random."""
    _, size = SIZES[ty]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    d = f16_bytes(sane_scales(rng, n)).reshape(n, 2)
    m = f16_bytes(sane_scales(rng, n)).reshape(n, 2)
    if ty in ("Q4_0", "Q5_0", "Q8_0"):
        b[:, 0:2] = d
    elif ty in ("Q4_1", "Q5_1"):
        b[:, 0:2] = d
        b[:, 2:4] = m
    elif ty in ("Q4_K", "Q5_K"):  # d, dmin first; real files have dmin >= 0
        b[:, 0:2] = d
        b[:, 2:4] = f16_bytes(np.abs(m.view("<f2").astype(np.float32))).reshape(n, 2)
    elif ty == "Q2_K":  # ..., d, dmin last
        b[:, 80:82] = d
        b[:, 82:84] = f16_bytes(np.abs(m.view("<f2").astype(np.float32))).reshape(n, 2)
    elif ty in ("Q3_K", "Q6_K"):  # d last
        b[:, size - 2:size] = d
    else:
        raise ValueError(ty)
    return b


def scale_offsets(ty: str) -> list[int]:
    """Byte offsets of the f16 scale fields (d, then m/dmin) in a block of `ty`."""
    _, size = SIZES[ty]
    return {
        "Q4_0": [0], "Q5_0": [0], "Q8_0": [0], "Q4_1": [0, 2], "Q5_1": [0, 2],
        "Q4_K": [0, 2], "Q5_K": [0, 2], "Q2_K": [80, 82], "Q3_K": [size - 2], "Q6_K": [size - 2],
    }[ty]


def dequantize(ty: str, blocks: np.ndarray) -> np.ndarray:
    """gguf.quants.dequantize of raw bytes, flattened to f32."""
    out = gguf.quants.dequantize(np.ascontiguousarray(blocks).reshape(-1), T[ty])
    assert out.dtype == np.float32
    return out.reshape(-1)


def quantize(ty: str, values: np.ndarray) -> np.ndarray:
    """gguf.quants.quantize of f32 values, flattened to bytes."""
    out = gguf.quants.quantize(np.asarray(values, dtype=np.float32).reshape(1, -1), T[ty])
    return out.view(np.uint8).reshape(-1)
