"""The kernel walks: how the kernel reads each layout's stored bytes.

A layout's entry names its walk (`LayoutSpec.kernel`, with the C walk number `kernel_id`), and
the layout's class carries the walk's Python side (`Layout.kernel_walk`, a `Walk`) beside its
codec and bit diagram. A layout without a C tile of its own names "generic" and is decoded
once, then multiplied through the hf walk (see kernel.py). A walk no registered layout brings
is refused by name, never read as another layout.

For each walk: where beta is (`beta_in_bytes`), which byte values no encoder writes
(`byte_problems`, counted before a product, so garbage is refused, not multiplied), and
`reference_codes`, the numpy reading of the bytes that the numpy reference products use. A
walk's reading goes through the bytes in their stored order and places each code (byte ->
element), written from the layout's byte picture; it does not call the layout's decoder, so
an error repeated in a layout's encode and decode still shows up as different products.

Per-block scales (TQ). A tensor storing W[m, k] = t[m, k] * d_b for the block b holding k is
multiplied as y = float(sum_b sum_{k in b} t q) / s * D, with D the one non-zero d the blocks
share: exact whenever every d_b is D or 0, and a d_b = 0 block holds only zero codes (what
every TQ quantizer writes). A tensor whose non-zero blocks disagree on d, or whose d = 0 block
holds a non-zero code, is refused (`common_block_scale`): it is not one ternary matrix with
one scale, and no W1.58A8 product equals it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, NotTernary, UnknownLayout
from .ggml_types import SLOT_BYTES, slot_beta
from .kernel_config import Tiling

__all__ = ["FIELD_IS_3", "NIBBLE_ABOVE_13", "NIBBLE_ABOVE_8", "ByteRun", "RowOrder", "Walk", "beta_after_codes",
           "beta_in_last_slot", "byte_problems", "byte_table", "common_block_scale", "count_run", "no_beta",
           "reference_codes", "beta_in_bytes", "walk_of"]


def byte_table(bad: np.ndarray) -> np.ndarray:
    """table[byte] = how many fields of the byte no encoder writes (uint8 [256])."""
    return bad.astype(np.uint8)


_BYTE = np.arange(256)
# The tables the C counts 8 bytes at a time (ByteRun.pattern); any other table is "table".
FIELD_IS_3 = byte_table(sum(((_BYTE >> s) & 3) == 3 for s in (0, 2, 4, 6)))
NIBBLE_ABOVE_8 = byte_table(((_BYTE >> 4) > 8).astype(int) + ((_BYTE & 15) > 8))
NIBBLE_ABOVE_13 = byte_table(((_BYTE >> 4) > 13).astype(int) + ((_BYTE & 15) > 13))


@dataclass(frozen=True)
class ByteRun:
    """`rows` runs of `length` bytes, `stride` apart from `offset`, where table[byte] counts
    the fields no encoder writes; `pattern` names the same count done 8 bytes at a time."""

    what: str
    offset: int
    rows: int
    length: int
    stride: int
    table: np.ndarray
    pattern: str = "table"


def count_run(run: ByteRun, flat: np.ndarray) -> int:
    """The numpy count of one run."""
    if not run.rows or not run.length:
        return 0
    span = flat[run.offset: run.offset + (run.rows - 1) * run.stride + run.length]
    view = np.lib.stride_tricks.as_strided(span, (run.rows, run.length), (run.stride, 1)) if run.rows > 1 \
        else span[:run.length]
    return int(run.table[view].sum(dtype=np.int64))


@dataclass(frozen=True)
class Walk:
    """How the kernel reads one walk's bytes (flat uint8, the matrix shape [M, K], the TL
    tiling or None): beta (None when the bytes do not carry it), the byte runs to refuse,
    and the int8 codes [M, K]."""

    beta: Callable[[np.ndarray, tuple[int, int]], np.float32 | None]
    problems: Callable[[np.ndarray, tuple[int, int], Tiling | None], list[ByteRun]]
    codes: Callable[[np.ndarray, tuple[int, int], Tiling | None], np.ndarray]


@dataclass(frozen=True)
class RowOrder:
    """A layout whose code bytes another walk's C tile reads with the rows in another order (no
    tile of its own, no decode): `walk` names that walk (the entry's `kernel`), `body` cuts its
    bytes out of the stored ones, `beta` reads the stored beta, and `rows(shape)[m]` is the
    tile's output row holding matrix row m (the products are taken in that order)."""

    beta: Callable[[np.ndarray, tuple[int, int]], np.float32]
    body: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
    rows: Callable[[tuple[int, int]], np.ndarray]


# ---- where beta is: the common cases ------------------------------------------------------


def beta_after_codes(flat: np.ndarray, shape: tuple[int, int]) -> np.float32:
    """f32 beta right after M*K/4 code bytes (bitnet.cpp's 2-bit types)."""
    return slot_beta(flat[shape[0] * shape[1] // 4:])


def beta_in_last_slot(flat: np.ndarray, shape: tuple[int, int]) -> np.float32:
    """f32 beta at the start of the last 32 bytes (after a layout's zero padding)."""
    return slot_beta(flat[-SLOT_BYTES:])


def no_beta(flat: np.ndarray, shape: tuple[int, int]) -> None:
    """The bytes do not carry beta (hf: weight_scale)."""
    return None


def common_block_scale(name: str, blocks: np.ndarray, d_at: int, block_codes: Callable[[np.ndarray], np.ndarray],
                       shape: tuple[int, int]) -> np.float32:
    """The one non-zero fp16 d of blocks [n, bytes] (at byte `d_at` of each), after checking
    that the d = 0 blocks hold zero codes (`block_codes` reads [n', bytes] -> codes)."""
    d_bits = np.ascontiguousarray(blocks[:, d_at:d_at + 2]).view("<u2").reshape(-1)
    nonzero = np.unique(d_bits[d_bits != 0])
    if nonzero.size > 1:
        raise NotTernary(f"{name} blocks carry {nonzero.size} different non-zero d values (e.g. "
                         f"{float(nonzero[:1].view('<f2')[0])!r}, {float(nonzero[1:2].view('<f2')[0])!r}), "
                         f"shape {list(shape)}: not one ternary matrix with one scale")
    zero = np.flatnonzero(d_bits == 0)
    if zero.size:
        codes = block_codes(blocks[zero])
        if np.any(codes):
            raise FormatError(f"{int(np.count_nonzero(np.any(codes, axis=1)))} {name} blocks with d = 0 hold "
                              f"non-zero codes, shape {list(shape)}")
    return np.float32(nonzero[:1].view("<f2")[0]) if nonzero.size else np.float32(0)


# ---- dispatch: by the walk's name, refused when unknown ----------------------------------


def walk_of(walk: str) -> Walk:
    """The `kernel_walk` of the registered layout whose entry names `walk`; UnknownLayout names
    the walks there are (nothing falls through to another layout's reading)."""
    from .layouts import layouts

    walks = {lay.spec.kernel: lay.kernel_walk for lay in layouts() if lay.kernel_walk is not None}
    found = walks.get(walk)
    if found is None:
        raise UnknownLayout(f"no kernel walk {walk!r}; walks: {', '.join(sorted(walks))} "
                            "(or a layout entry's kernel='generic')")
    return found


def beta_in_bytes(walk: str, flat: np.ndarray, shape: tuple[int, int]) -> np.float32 | None:
    """The beta the bytes carry (None when they do not: hf keeps it in weight_scale)."""
    return walk_of(walk).beta(flat, shape)


def byte_problems(walk: str, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None) -> list[ByteRun]:
    """The runs of bytes to count before a product (each must count 0)."""
    return walk_of(walk).problems(flat, shape, tiling)


def reference_codes(walk: str, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None = None) -> np.ndarray:
    """int8 ternary codes [M, K] read from the stored bytes, byte by byte in stored order."""
    return walk_of(walk).codes(flat, shape, tiling)
