"""Ternarizing an embedding model's latent projection the way bitnet.cpp's embedding converter
does (`convert-bitnet-embedding-to-gguf.py`, microsoft/BitNet 16da220), or by the exact mean.

    beta = float32 mean|W|, floored at 1e-5 (an all-zero W gets float32(1e-5) = 0x3727c5ac)
    t    = clip(round_half_even(W * float32(1/beta)), -1, 1)     (products in float32)

The converter takes the mean with `np.mean` on float32, so beta's last bit is whatever that
numpy's float32 summation gives. Its requirements pin numpy 1.26, which sums in consecutive
chunks of 8192 elements (numpy's ufunc buffer), each chunk by pairwise summation, the chunk
sums added left to right; numpy 2 sums the whole array pairwise. `SUMS` names both rules and
the exact one (the float64 sum of float32 values is exact below 2^29 elements of bf16 data,
so its rounding is the correctly rounded mean):

    "numpy1"  the shipped GGUFs' rule (default: byte-identical to the converter's files)
    "numpy2"  the converter run under numpy 2 (6 / 7 of 14 scales differ in the last bit)
    "exact"   float32 of the exactly rounded mean, independent of any numpy

pairwise(x), numpy's `pairwise_sum` for float32:
    n < 8      left to right from -0.0
    n <= 128   8 lanes r[j] += x[8i + j], then ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)),
               then the n % 8 left-overs left to right
    else       n2 = n // 2 rounded down to a multiple of 8: pairwise(x[:n2]) + pairwise(x[n2:])
A full 8192 chunk is 64 blocks of 128 combined as a balanced tree of adjacent pairs, which
`_full_chunks` computes for all chunks at once.
"""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteWeight, UsageError
from .ternary import TernaryWeight

SUMS = ("numpy1", "numpy2", "exact")
CHUNK = 8192
BETA_FLOOR = 1e-5  # a Python float in the converter: max(mean, 1e-5)


def pairwise(x: np.ndarray) -> np.float32:
    n = x.size
    if n < 8:
        total = np.float32(-0.0)
        for value in x:
            total = np.float32(total + value)
        return total
    if n <= 128:
        whole = n - n % 8
        lanes = x[:8].copy()
        for row in x[8:whole].reshape(-1, 8):
            lanes += row
        total = np.float32((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + np.float32(
            (lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        for value in x[whole:]:
            total = np.float32(total + value)
        return np.float32(total)
    half = n // 2
    half -= half % 8
    return np.float32(pairwise(x[:half]) + pairwise(x[half:]))


def _full_chunks(x: np.ndarray) -> np.ndarray:
    """pairwise() of each row of x [chunks, 8192], vectorized over the rows."""
    lanes = x.reshape(x.shape[0], 64, 16, 8)
    acc = lanes[:, :, 0, :].copy()
    for row in range(1, 16):
        acc += lanes[:, :, row, :]
    sums = ((acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])) + ((acc[..., 4] + acc[..., 5])
                                                                          + (acc[..., 6] + acc[..., 7]))
    while sums.shape[1] > 1:
        sums = sums[:, 0::2] + sums[:, 1::2]
    return sums[:, 0]


def float32_sum(x: np.ndarray, rule: str) -> np.float32:
    """The float32 sum of a flat float32 array as numpy 1.26 ("numpy1") or 2.x ("numpy2") gets it."""
    if rule == "numpy2":
        return pairwise(x)
    whole = x.size - x.size % CHUNK
    total = np.float32(0.0)
    for chunk_sum in _full_chunks(x[:whole].reshape(-1, CHUNK)) if whole else ():
        total = np.float32(total + chunk_sum)
    return np.float32(total + pairwise(x[whole:])) if x.size > whole else total


def absmean(values: np.ndarray, rule: str = "numpy1") -> np.float64:
    """mean|W| before the floor, as float64 holding the float32 the rule gives."""
    if rule not in SUMS:
        raise UsageError(f"unknown beta rule {rule!r}; known: {', '.join(SUMS)}")
    flat = np.abs(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    if rule == "exact":
        return np.float64(np.float32(flat.sum(dtype=np.float64) / flat.size))
    return np.float64(np.float32(np.float64(float32_sum(flat, rule)) / flat.size))


def ternarize(values: np.ndarray, rule: str = "numpy1", *, tensor: str | None = None) -> TernaryWeight:
    """The converter's ternary codes and beta of a latent [out, in] float32 weight."""
    values = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise NonFiniteWeight(f"{int(np.count_nonzero(~np.isfinite(values)))} NaN/Inf values in a latent projection",
                              tensor=tensor)
    mean = absmean(values, rule)
    beta = mean if mean >= BETA_FLOOR else np.float64(BETA_FLOOR)
    inverse = np.float32(1.0 / beta)  # float64 quotient rounded once, as numpy multiplies
    scaled = np.clip(np.round(values * inverse), -1, 1)
    codes = np.where(scaled > 0.5, 1, np.where(scaled < -0.5, -1, 0)).astype(np.int8)
    return TernaryWeight(codes, np.float32(beta))
