"""`--numerics ik_llama.cpp`: how ik_llama.cpp quantizes activations for its BitNet types.

ik multiplies IQ1_BN / IQ2_BN rows with Q8_K64 activations and IQ2_BN_R4 rows with Q8_K16
(ggml.c vec_dot_type; iqk_quantize.cpp quantize_row_q8_K64 / quantize_row_q8_K16), not with
one absmax scale per token as bitnet.cpp and transformers do. Per token row x [K]:

    Q8_K64 (x86 AVX branch): element e is in group (e % 16) // 4; d_g = max|x_g| / 127,
                              q = round_half_even(x * (1 / d_g))
    Q8_K16 (generic branch):  element e is in group (e % 64) // 16; d_g = max|x_g| / 127,
                              q = nearest_int(x / d_g)

    y[m] = d_row[m] * sum_g d_g * sum_{e in g} t[m, e] * q[e]      (float32, g = 0..3)

The integer sums are exact; the float epilogue follows the formula above in float32 (ik's
kernels form d_g * sum(c q) - d_g * sum(q) in SIMD lanes, which can differ in the last bit).
Other layouts keep bitnet.cpp's per-token quantization (ik cannot run them anyway).
"""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteActivation


def group_index(k: int, kind: str) -> np.ndarray:
    """The activation group (0..3) of each of K elements."""
    e = np.arange(k)
    return (e % 16) // 4 if kind == "k64" else (e % 64) // 16


def quantize_groups(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """int8 q [N, K] and float32 d [N, 4] as ik's Q8_K64 / Q8_K16 rows hold them."""
    x = np.ascontiguousarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise NonFiniteActivation(f"{int(np.count_nonzero(~np.isfinite(x).all(axis=-1)))} of {x.shape[0]} "
                                  "activation rows hold NaN/Inf")
    g = group_index(x.shape[-1], kind)
    amax = np.stack([np.abs(x[:, g == i]).max(axis=1) for i in range(4)], axis=1).astype(np.float32)
    d = (amax / np.float32(127)).astype(np.float32)
    safe = np.where(d > 0, d, np.float32(1))[:, g]
    with np.errstate(divide="ignore"):
        scaled = x * (np.float32(1) / safe) if kind == "k64" else x / safe
    q = np.rint(scaled).astype(np.float32)
    q = np.where(d[:, g] > 0, q, 0)
    return np.clip(q, -127, 127).astype(np.int8), d


def ik_linear(matrix, x: np.ndarray, kind: str) -> np.ndarray:
    """float32 x [..., K] -> y [..., M] with ik's activation groups `kind` ("k64" / "k16", the
    layout's `activation_blocks`)."""
    from .kernel import ternary_matmul_int

    rows = np.asarray(x, np.float32).reshape(-1, matrix.shape[1])
    q, d = quantize_groups(rows, kind)
    g = group_index(matrix.shape[1], kind)
    y = np.zeros((rows.shape[0], matrix.shape[0]), np.float32)
    for i in range(4):
        part = np.where(g == i, q, 0).astype(np.int8)
        y += d[:, i:i + 1] * ternary_matmul_int(matrix, part).astype(np.float32)
    return (y * matrix.beta).reshape(np.shape(x)[:-1] + (matrix.shape[0],))
