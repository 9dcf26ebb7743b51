"""Stored tensors compared a block of rows at a time, never whole: float tensors (float32
arrays, model.HalfTensor, 16-bit checkpoint `Tensor`s) by their bits where both sides store the
same type (or bf16 against f16 through the compiled exact conversion), else widened one block at
a time; packed bytes compared a block at a time. Mapped pages under each block leave the process
once it is compared (`fastpath.drop_mapped_pages`), so a 2B4T embedding pair costs a block.
"""
from __future__ import annotations

import numpy as np

from ..formats import fastpath
from ..pipeline.sources import Tensor

HALF_DTYPES = {"BF16": "bf16", "F16": "f16"}


def float_differences(a: object, b: object) -> tuple[int, float]:
    """(elements whose float32 bits differ, max |diff|), a block of rows at a time: a 16-bit
    embedding is compared as its bits when both sides hold the same type, else widened a
    block at a time, never whole."""
    rows_a, rows_b = _float_rows(a), _float_rows(b)
    step = max(1, fastpath.CHUNK_BYTES // max(1, 4 * rows_a.shape[1]))
    differing, worst = 0, 0.0
    for start in range(0, rows_a.shape[0], step):
        block_a, block_b = rows_a[start:start + step], rows_b[start:start + step]
        if not equal_blocks(block_a, a, block_b, b):
            va, vb = _block_values(block_a, a), _block_values(block_b, b)
            unequal = va.view(np.uint32) != vb.view(np.uint32)
            if unequal.any():
                differing += int(np.count_nonzero(unequal))
                worst = max(worst, float(np.abs(va - vb).max()))
        fastpath.drop_mapped_pages(block_a)
        fastpath.drop_mapped_pages(block_b)
    return differing, worst


def equal_blocks(block_a: np.ndarray, a: object, block_b: np.ndarray, b: object) -> bool:
    """Two blocks of stored rows (of float tensors `a`, `b`) shown equal cheaply: the same
    stored type and bytes, or bf16 and f16 bits of the same values. False: compare the values."""
    if half_kind(a) == half_kind(b) and block_a.dtype == block_b.dtype and np.array_equal(block_a, block_b):
        return True
    return _equal_halves(block_a, a, block_b, b)


def _equal_halves(block_a: np.ndarray, a: object, block_b: np.ndarray, b: object) -> bool:
    """A bf16 block equal to an f16 block, shown without widening either: the bf16 values
    converted exactly to f16 bits (the compiled table) are the f16 side's bits."""
    kinds = (half_kind(a), half_kind(b))
    if sorted(map(str, kinds)) != ["bf16", "f16"]:
        return False
    bf16, f16 = (block_a, block_b) if kinds[0] == "bf16" else (block_b, block_a)
    converted = fastpath.convert_float(np.ascontiguousarray(bf16), "BF16", "F16")
    return converted is not None and converted[1] == 0 and np.array_equal(converted[0].view(np.uint16), f16)


def half_kind(value: object) -> str | None:
    if isinstance(value, Tensor):
        return HALF_DTYPES.get(value.dtype)
    return getattr(value, "kind", None) if hasattr(value, "bits") else None


def _float_rows(value: object) -> np.ndarray:
    """The stored array as rows: a HalfTensor's or 16-bit Tensor's bits, else the float32 array."""
    if isinstance(value, Tensor):
        data = value.data.view(np.uint16) if half_kind(value) else np.asarray(value.data, np.float32)
    else:
        data = value.bits if half_kind(value) else np.asarray(value, np.float32)
    return data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)


def _block_values(block: np.ndarray, value: object) -> np.ndarray:
    kind = half_kind(value)
    if kind is None:
        return np.ascontiguousarray(block, np.float32)
    if kind == "f16":  # (not kernel_half: a diff does not load the kernel)
        return block.view(np.float16).astype(np.float32)
    return (block.astype(np.uint32) << 16).view(np.float32)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Two flat byte arrays compared a block at a time (mapped pages dropped as it goes)."""
    if a.size != b.size:
        return False
    step = fastpath.CHUNK_BYTES
    for start in range(0, a.size, step):
        same = np.array_equal(a[start:start + step], b[start:start + step])
        fastpath.drop_mapped_pages(a[start:start + step])
        fastpath.drop_mapped_pages(b[start:start + step])
        if not same:
            return False
    return True
