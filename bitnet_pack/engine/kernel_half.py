"""16-bit weights (the lm_head): float32 activations times bf16/f16 weights, with one
float32 summation order that the compiled kernel and the numpy reference share."""
from __future__ import annotations

import sys

import numpy as np

from ..errors import ShapeError, UsageError
from ..formats.floatmath import lane_matmul
from . import kernel as _kernel

#
# half_matmul(w, kind, x): y[n, v] = sum_k float32(w[v, k]) * x[n, k], w the uint16 bits of
# bf16 or f16 values, in one float32 summation order every backend and the reference share
# (kernels/half_isa.h):
#
#     k:      0  1 .. 15 | 16 17 .. 31 | ... | last block, zero-padded to 16
#     lane:   0  1 .. 15 |  0  1 .. 15 | ...
#     lane[j] = (((+0 + p[j]) + p[16 + j]) + p[32 + j]) + ...   p = w * x rounded, no FMA
#     fold:   a[j] = lane[j] + lane[j + 8]; b[j] = a[j] + a[j + 4]; c[j] = b[j] + b[j + 2];
#             y = c[0] + c[1]

HALF_KINDS = ("bf16", "f16")


def half_to_float32(bits: np.ndarray, kind: str) -> np.ndarray:
    """The float32 values of bf16 / f16 bits (exact)."""
    bits = np.asarray(bits)
    _check_half_kind(kind)
    if kind == "f16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def exact_half_bits(values: np.ndarray) -> tuple[str, np.ndarray] | None:
    """(kind, uint16 bits) of a 16-bit type holding every float32 value exactly, bf16 first,
    then f16; None if neither does. Bitwise: -0 stays -0, a NaN only if its payload fits."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    halves = values.reshape(-1).view(np.uint16).reshape(-1, 2)  # no 4-byte temporaries
    low = 0 if sys.byteorder == "little" else 1
    if not np.any(halves[:, low]):
        return "bf16", np.ascontiguousarray(halves[:, 1 - low]).reshape(values.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        f16 = values.astype(np.float16)
    if np.array_equal(f16.astype(np.float32).view(np.uint32), values.view(np.uint32)):
        return "f16", f16.view(np.uint16)
    return None


def _check_half_kind(kind: str) -> None:
    if kind not in HALF_KINDS:
        raise UsageError(f"16-bit weight kind must be one of {', '.join(HALF_KINDS)}, got {kind!r}")


def _half_weights(weights: np.ndarray, kind: str) -> np.ndarray:
    _check_half_kind(kind)
    weights = np.asarray(weights)
    if kind == "f16" and weights.dtype == np.float16:
        weights = weights.view(np.uint16)
    if weights.dtype != np.uint16 or weights.ndim != 2 or 0 in weights.shape:
        raise ShapeError(f"{kind} weights must be non-empty uint16 [V, K], got {weights.dtype} {list(weights.shape)}")
    return np.ascontiguousarray(weights)


def half_matmul(weights: np.ndarray, kind: str, x: np.ndarray) -> np.ndarray:
    """float32 x [..., K] times the 16-bit weights [V, K] (bits of `kind`) -> float32 [..., V],
    bit-identical on every backend to `reference_half_matmul`."""
    weights = _half_weights(weights, kind)
    x = np.asarray(x, dtype=np.float32)
    rows = _kernel._rows(x, weights.shape[1], "x")
    if _kernel.BACKEND == "numpy" or rows.shape[0] == 0:
        y = reference_half_matmul(weights, kind, rows)
    else:
        y = np.empty((rows.shape[0], weights.shape[0]), np.float32)
        _kernel._ext.half_matmul(_kernel.BACKEND, kind, weights, np.ascontiguousarray(rows), y)
    return y.reshape(x.shape[:-1] + (weights.shape[0],))


def reference_half_matmul(weights: np.ndarray, kind: str, x: np.ndarray) -> np.ndarray:
    """The numpy replay of the kernel's order: [N, V] float32 from x [N, K]."""
    weights = _half_weights(weights, kind)
    x = np.asarray(x, dtype=np.float32).reshape(-1, weights.shape[1])
    return lane_matmul(lambda start, stop: half_to_float32(weights[:, start:stop], kind), weights.shape[0], x)
