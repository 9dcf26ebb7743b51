"""RoPE as bitnet.cpp's x86-64 builds compute it (`--numerics bitnet.cpp`), bit for bit.

ggml_rope_cache_init and the rotation in ggml.c (llama.cpp fork 40ed0f2):

    theta_0 = pos, theta_i = theta_{i-1} * powf(base, -2/d)      (float32, as floatops)
    cos_i, sin_i = cosf(theta_i), sinf(theta_i)                   the C library's, in float
    out_a = x_a*cos - x_b*sin      ->  fma(x_a, cos, -(x_b*sin))  gcc -march=native contracts the
    out_b = x_a*sin + x_b*cos      ->  fma(x_a, sin,  (x_b*cos))  first product of each line

Both details matter: glibc's cosf/sinf are not correctly rounded (for tiny-a's theta they
differ from floatmath's once-rounded double result in about 40 of the 3200 entries of
positions 0-99, by an ulp), and rounding the products twice moves q and k by an ulp. Without
either, int8 activations of tiny-a's 64-token prompt flip and rows diverge (fixtures/
tiny-a-logits-more; tests/test_runtime_logits.py).

This is the one place the project's numerics call the C library: bitnet.cpp does, so the
runtime-exact mode does too (glibc 2.28 and later share one cosf/sinf). The other numerics keep
floatmath.h's own functions.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

import numpy as np

from ..errors import UsageError
from ..formats import floatmath as fm

F32 = np.float32


@lru_cache(maxsize=1)
def _libm() -> tuple:
    name = ctypes.util.find_library("m") or "libm.so.6"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise UsageError(f"--numerics bitnet.cpp takes RoPE's cos/sin from the C library's cosf/sinf as ggml does, "
                         f"and {name!r} cannot be loaded: {exc}") from None
    functions = []
    for fn_name in ("cosf", "sinf"):
        fn = getattr(lib, fn_name)
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
        functions.append(fn)
    return tuple(functions)


@lru_cache(maxsize=4096)
def _row(position: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    cosf, sinf = _libm()
    step = fm.pow_d(theta, np.array([F32(-2.0) / F32(head_dim)], np.float64)).astype(F32)[0]
    angle = F32(position)
    cos, sin = np.empty(head_dim // 2, F32), np.empty(head_dim // 2, F32)
    for i in range(head_dim // 2):
        cos[i], sin[i] = cosf(float(angle)), sinf(float(angle))
        angle = F32(angle * step)
    return cos, sin


def rope_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, head_dim/2] float32 for the NeoX pairs (i, i + head_dim/2)."""
    rows = [_row(int(p), head_dim, float(theta)) for p in np.asarray(positions).reshape(-1)]
    if not rows:
        return np.zeros((0, head_dim // 2), F32), np.zeros((0, head_dim // 2), F32)
    return np.stack([c for c, _ in rows]), np.stack([s for _, s in rows])


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [T, heads, d] rotated with ggml's fused multiply-adds (a new array)."""
    x = np.asarray(x, F32)
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([fm.fmaf(a, c, -(b * s)), fm.fmaf(a, s, b * c)], axis=-1).astype(F32)
