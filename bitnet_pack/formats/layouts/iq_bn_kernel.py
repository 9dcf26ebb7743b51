"""The bytes of IQ1_BN, IQ2_BN and IQ2_BN_R4 as the kernel reads them (kernel_formats.py calls
these; kernels/iq_bn.c walks the same bytes).

Written from the byte pictures in iq_bn.py, not by calling its decoders, so a mistake repeated
in encode and decode still shows up as different products. Per row: W[m] = d_m * (c - 1). The
kernel computes y = acc / s * beta with one beta, so the rows must agree: a d = 0 row is read as
zero codes (ik's all-zero row is code 2 everywhere with d = 0), and every other row must carry
the same d, which is beta (IQ1_BN: the fp16 d widened). Rows that disagree are refused
(NotTernary): no single-scale W1.58A8 product equals them.
"""
from __future__ import annotations

import numpy as np

from ...errors import FormatError, NotTernary
from ..kernel_formats import FIELD_IS_3, ByteRun, Walk
from .tq import TRIT_BYTE

ROW_META_BYTES = {"iq1_bn": 2, "iq2_bn": 4, "iq2_bn_r4": 4}  # ggml traits row_meta_size (per row)
QL_VALID = np.isin(np.arange(256), TRIT_BYTE)  # a byte some five trits encode to
EXTRA_VALID = np.isin(np.arange(256), TRIT_BYTE[:81])  # ... four trits (the 16th weights' byte)
QL_BAD, EXTRA_BAD = (~QL_VALID).astype(np.uint8), (~EXTRA_VALID).astype(np.uint8)


def walk(name: str) -> Walk:
    """The kernel walk of one of the three (the layout class's `kernel_walk`)."""
    return Walk(lambda flat, shape: stored_beta(name, flat, shape),
                lambda flat, shape, tiling: byte_problems(name, flat, shape, ByteRun),
                lambda flat, shape, tiling: reference_codes(name, flat, shape))


def row_bytes(name: str, k: int) -> int:
    return ROW_META_BYTES[name] + (k // 64 * 13 if name == "iq1_bn" else k // 4)


def row_scales(name: str, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 [M]: each row's stored d."""
    m, k = shape
    if name == "iq2_bn_r4":
        return np.ascontiguousarray(flat.reshape(m // 4, 16 + k)[:, :16]).view("<f4").reshape(m).astype(np.float32)
    rows = flat.reshape(m, row_bytes(name, k))
    dtype = "<f2" if name == "iq1_bn" else "<f4"
    head = np.ascontiguousarray(rows[:, :ROW_META_BYTES[name]])
    return head.view(dtype).reshape(m).astype(np.float32)


def stored_beta(name: str, flat: np.ndarray, shape: tuple[int, int]) -> np.float32:
    d = row_scales(name, flat, shape)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise FormatError(f"{int(np.count_nonzero(~np.isfinite(d) | (d < 0)))} of {d.size} {name} row scales "
                          f"are NaN, Inf or negative, shape {list(shape)}")
    found = np.unique(d[d != 0])
    if found.size > 1:
        raise NotTernary(f"{name} rows carry {found.size} different non-zero scales (e.g. {float(found[0])!r}, "
                         f"{float(found[1])!r}), shape {list(shape)}: not one ternary matrix with one scale")
    return np.float32(found[0]) if found.size else np.float32(0)


def byte_problems(name: str, flat: np.ndarray, shape: tuple[int, int], run) -> list:
    """`run(what, offset, rows, length, stride, table, pattern)` (kernel_formats.ByteRun) per range."""
    m, k = shape
    if name == "iq2_bn":
        return [run("codes are 3", 4, m, k // 4, row_bytes(name, k), FIELD_IS_3, "field3")]
    if name == "iq2_bn_r4":
        return [run("codes are 3", 16, m // 4, k, 16 + k, FIELD_IS_3, "field3")]
    stride = row_bytes(name, k)  # one run per block position: the 2-byte row head breaks the stride
    return ([run("bytes are no base-3 trits", 2 + 13 * b, m, 12, stride, QL_BAD) for b in range(k // 64)]
            + [run("extra bytes are no base-3 trits", 14 + 13 * b, m, 1, stride, EXTRA_BAD) for b in range(k // 64)])


def reference_codes(name: str, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int8 codes [M, K], d = 0 rows as zeros."""
    m, k = shape
    codes = np.empty((m, k), np.int8)
    if name == "iq2_bn":
        body = flat.reshape(m, row_bytes(name, k))[:, 4:].reshape(m, k // 64, 16)
        for l in range(4):  # noqa: E741  (ik's name for the 16-weight quarter)
            codes.reshape(m, k // 64, 4, 16)[:, :, l] = ((body >> (2 * l)) & 3).astype(np.int8) - 1
    elif name == "iq2_bn_r4":
        body = flat.reshape(m // 4, 16 + k)[:, 16:].reshape(m // 4, k // 64, 4, 4, 4)  # [g, ib, l, rr, i]
        view = codes.reshape(m // 4, 4, k // 64, 4, 4, 4)  # [g, rr, ib, l, mm, i]
        for mm in range(4):
            view[:, :, :, :, mm] = (((body >> (2 * mm)) & 3).astype(np.int8) - 1).transpose(0, 3, 1, 2, 4)
    else:
        blocks = flat.reshape(m, row_bytes(name, k))[:, 2:].reshape(m, k // 64, 13).astype(np.uint32)
        view = codes.reshape(m, k // 64, 4, 16)
        mult = np.array([81, 27, 9, 3, 1], np.uint32)
        for i16 in range(4):
            for kk in range(3):
                y = (blocks[:, :, 3 * i16 + kk, None] * mult) & 255
                view[:, :, i16, 5 * kk:5 * kk + 5] = (y * 3 >> 8).astype(np.int8) - 1
            view[:, :, i16, 15] = ((blocks[:, :, 12] * mult[i16] & 255) * 3 >> 8).astype(np.int8) - 1
    codes[row_scales(name, flat, shape) == 0] = 0
    return codes
