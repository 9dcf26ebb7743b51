"""The stored bytes each layout hands the kernel, as the kernel reads them.

For each layout the kernel multiplies from: where beta is (`stored_beta`), which byte values
no encoder writes (`byte_problems`, counted before a product, so garbage is refused, not
multiplied), and `reference_codes`, the numpy reading of the bytes that the numpy reference products use. It
walks the bytes in their stored order and places each code (byte -> element), written from
the byte pictures in layouts/*.py; it does not call the layouts' decoders, so an error
repeated in a layout's encode and decode still shows up as different products.

    i2_s, i2_s_arm   blocks of B = 128 / 64 elements in B/4 bytes, code t + 1 of element
                     g*B/4 + p of a block at bits 6-2g of its byte p; f32 beta after the codes
    hf               [ceil(M/4), K]: output row p*R + j at bits 2p of packed row j
    tq2_0            per 256 elements 64 code bytes (element 128h + 32n + m at bits 2n of
                     byte 32h + m), then fp16 d
    tq1_0            per 256 elements 48 + 4 base-3 bytes (5 / 4 trits, first one most
                     significant), then fp16 d
    tl1, tl2         tiled by (BM, BK, bm), see layouts/tl1.py and tl2.py; f32 beta after
                     the codes (TL1) or at pad32(F) (TL2)

TQ's per-block scale. A TQ tensor stores W[m, k] = t[m, k] * d_b for the block b holding k.
The kernel computes y = float(sum_b sum_{k in b} t q) / s * D, with D the one non-zero d the
tensor's blocks share: exact whenever every d_b is D or 0, and a d_b = 0 block holds only
zero codes (what every TQ quantizer writes). A tensor whose non-zero blocks disagree on d, or
whose d = 0 block holds a non-zero code, is refused (NotTernary / FormatError): it is not one
ternary matrix with one scale, and no W1.58A8 product equals it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormatError, NotTernary
from .ggml_types import SLOT_BYTES, slot_beta
from .kernel_config import Tiling, tl2_split
from .layouts import iq_bn_kernel

__all__ = ["ByteRun", "byte_problems", "count_run", "reference_codes", "stored_beta"]

TQ_BLOCK = 256
ROW_SWAP = np.array([0, 2, 1, 3])


def _table(bad: np.ndarray) -> np.ndarray:
    return bad.astype(np.uint8)


_BYTE = np.arange(256)
FIELD_IS_3 = _table(sum(((_BYTE >> s) & 3) == 3 for s in (0, 2, 4, 6)))
NIBBLE_ABOVE_8 = _table(((_BYTE >> 4) > 8).astype(int) + ((_BYTE & 15) > 8))
NIBBLE_ABOVE_13 = _table(((_BYTE >> 4) > 13).astype(int) + ((_BYTE & 15) > 13))
# TQ1_0: a byte holds v (five trits, 0..242) as ceil(v * 256 / 243); qh's fifth trit is 0.
_TRIT_BYTES = (np.arange(243) * 256 + 242) // 243
TQ1_QS_BAD = _table(~np.isin(_BYTE, _TRIT_BYTES))
TQ1_QH_BAD = _table(~np.isin(_BYTE, _TRIT_BYTES[::3]))


# TQ: (bytes of a 256-element block, offset of its fp16 d)
TQ_BLOCKS = {"tq2_0": (66, 64), "tq1_0": (54, 52)}


def _tl2_parts(shape: tuple[int, int], tiling: Tiling) -> tuple[int, int, int, int]:
    """(three_k, two_k, end of magnitudes, end of signs)."""
    m, k = shape
    three_k, two_k = tl2_split(k, tiling.BK)
    return three_k, two_k, m * three_k // 6, m * three_k // 6 + m * three_k // 24


# ---- beta ----------------------------------------------------------------------------------


def stored_beta(name: str, flat: np.ndarray, shape: tuple[int, int]) -> np.float32 | None:
    """The beta the bytes carry (None for hf, which keeps it in weight_scale)."""
    m, k = shape
    if name in iq_bn_kernel.LAYOUTS:
        return iq_bn_kernel.stored_beta(name, flat, shape)
    if name in ("i2_s", "i2_s_arm", "tl1"):
        return slot_beta(flat[m * k // 4:])
    if name == "tl2":
        return slot_beta(flat[-SLOT_BYTES:])
    if name in ("tq2_0", "tq1_0"):
        return _tq_common_d(name, flat, shape)
    return None


def _tq_common_d(name: str, flat: np.ndarray, shape: tuple[int, int]) -> np.float32:
    block_bytes, d_at = TQ_BLOCKS[name]
    blocks = flat.reshape(-1, block_bytes)
    d_bits = np.ascontiguousarray(blocks[:, d_at:d_at + 2]).view("<u2").reshape(-1)
    nonzero = np.unique(d_bits[d_bits != 0])
    if nonzero.size > 1:
        raise NotTernary(f"{name} blocks carry {nonzero.size} different non-zero d values (e.g. "
                         f"{float(nonzero[:1].view('<f2')[0])!r}, {float(nonzero[1:2].view('<f2')[0])!r}), "
                         f"shape {list(shape)}: not one ternary matrix with one scale")
    zero = np.flatnonzero(d_bits == 0)
    if zero.size:
        codes = _tq_block_codes(name, blocks[zero])
        if np.any(codes):
            raise FormatError(f"{int(np.count_nonzero(np.any(codes, axis=1)))} {name} blocks with d = 0 hold "
                              f"non-zero codes, shape {list(shape)}")
    return np.float32(nonzero[:1].view("<f2")[0]) if nonzero.size else np.float32(0)


# ---- byte values no encoder writes ---------------------------------------------------------


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


def byte_problems(name: str, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None) -> list[ByteRun]:
    m, k = shape
    if name in iq_bn_kernel.LAYOUTS:
        return iq_bn_kernel.byte_problems(name, flat, shape, ByteRun)
    if name in ("i2_s", "i2_s_arm", "hf"):
        return [ByteRun("codes are 3", 0, 1, flat.size if name == "hf" else m * k // 4, 0, FIELD_IS_3, "field3")]
    nblocks = m * k // TQ_BLOCK
    if name == "tq2_0":
        return [ByteRun("codes are 3", 0, nblocks, 64, 66, FIELD_IS_3, "field3")]
    if name == "tq1_0":
        return [ByteRun("bytes are no base-3 trits", 0, nblocks, 48, 54, TQ1_QS_BAD),
                ByteRun("qh bytes are no base-3 trits", 48, nblocks, 4, 54, TQ1_QH_BAD)]
    if name == "tl1":
        return [ByteRun("pair indices are above 8", 0, 1, m * k // 4, 0, NIBBLE_ABOVE_8, "nibble>8")]
    three_k, two_k, mags, signs = _tl2_parts(shape, tiling)
    return [ByteRun("triplet magnitudes are above 13", 0, 1, mags, 0, NIBBLE_ABOVE_13, "nibble>13"),
            ByteRun("pair indices are above 8", signs, 1, m * two_k // 4, 0, NIBBLE_ABOVE_8, "nibble>8")]


def count_run(run: ByteRun, flat: np.ndarray) -> int:
    """The numpy count of one run."""
    if not run.rows or not run.length:
        return 0
    span = flat[run.offset: run.offset + (run.rows - 1) * run.stride + run.length]
    view = np.lib.stride_tricks.as_strided(span, (run.rows, run.length), (run.stride, 1)) if run.rows > 1 \
        else span[:run.length]
    return int(run.table[view].sum(dtype=np.int64))


# ---- the numpy reading of the bytes --------------------------------------------------------


def reference_codes(name: str, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None = None) -> np.ndarray:
    """int8 ternary codes [M, K] read from the stored bytes, byte by byte in stored order."""
    m, k = shape
    if name in iq_bn_kernel.LAYOUTS:
        return iq_bn_kernel.reference_codes(name, flat, shape)
    if name == "hf":
        rows = -(-m // 4)
        planes = (flat.reshape(rows, k)[None] >> np.array([0, 2, 4, 6], np.uint8)[:, None, None]) & 3
        return planes.reshape(4 * rows, k)[:m].astype(np.int8) - 1
    if name in ("i2_s", "i2_s_arm"):
        quarter = 32 if name == "i2_s" else 16
        body = flat[: m * k // 4].reshape(-1, 1, quarter)  # [block, group, p]: element group*quarter + p
        fields = (body >> np.array([6, 4, 2, 0], np.uint8)[:, None]) & 3
        return fields.reshape(m, k).astype(np.int8) - 1
    if name in ("tq2_0", "tq1_0"):
        return _tq_block_codes(name, flat.reshape(-1, TQ_BLOCKS[name][0])).reshape(m, k)
    if name == "tl1":
        return _tl1_codes(flat, shape, tiling)
    return _tl2_codes(flat, shape, tiling)


def _tq_block_codes(name: str, blocks: np.ndarray) -> np.ndarray:
    """int8 codes [blocks, 256] of TQ blocks (d not read)."""
    n = blocks.shape[0]
    if name == "tq2_0":
        qs = blocks[:, :64].reshape(n, 2, 1, 32)  # [block, h, n, m]: element 128h + 32n + m
        return (((qs >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3).reshape(n, 256)).astype(np.int8) - 1
    pow3 = np.array([1, 3, 9, 27, 81], np.uint16)
    trits = ((blocks[:, :52, None].astype(np.uint16) * pow3) & 255) * 3 >> 8  # [block, byte, n]
    codes = np.empty((n, 256), np.int8)
    codes[:, :160] = trits[:, :32].transpose(0, 2, 1).reshape(n, 160)      # m + 32n
    codes[:, 160:240] = trits[:, 32:48].transpose(0, 2, 1).reshape(n, 80)  # 160 + m + 16n
    codes[:, 240:] = trits[:, 48:52, :4].transpose(0, 2, 1).reshape(n, 16)  # 240 + j + 4n
    return codes - 1


def _pair_byte_codes() -> np.ndarray:
    """byte -> the 4 codes of a pair byte: (t0, t1) of the high nibble's pair, then the low's,
    a pair index being 3*t0 + t1 + 4 (indices above 8 are refused before any reading)."""
    nibble = np.arange(256)[:, None] >> np.array([4, 4, 0, 0]) & 15
    digit = np.where(np.arange(4) % 2 == 0, nibble // 3, nibble % 3)
    return (digit - 1).astype(np.int8)


PAIR_BYTE_CODES = _pair_byte_codes()


def _rows_in_order(tiles: np.ndarray) -> np.ndarray:
    """Axis 2 of [tm, rb, chunk, ...] from the stored chunk order (0, 2, 1, 3) back to 0..3."""
    return tiles[:, :, ROW_SWAP]


def _tl1_codes(flat: np.ndarray, shape: tuple[int, int], t: Tiling) -> np.ndarray:
    """Stored order tm, tk, rb, kb, rg, kh, rj: row tm*BM + rb*bm + rg*16 + rj, column quad
    (tk*BK + kb*by + kh*4) / 4."""
    m, k = shape
    by = 256 // t.bm
    stored = flat[: m * k // 4].reshape(m // t.BM, k // t.BK, t.BM // t.bm, t.BK // by, t.bm // 16, by // 4, 16)
    quads = stored.transpose(0, 2, 4, 6, 1, 3, 5).reshape(m, k // 4)
    return PAIR_BYTE_CODES[quads].reshape(m, k)


def _tl2_codes(flat: np.ndarray, shape: tuple[int, int], t: Tiling) -> np.ndarray:
    m, k = shape
    three_k, two_k, mags, signs = _tl2_parts(shape, t)
    codes = np.empty(shape, np.int8)
    # magnitudes, stored tm, tk, rb, kb, chunk, r8: rows tm*BM + rb*32 + 8*swap(chunk) + r8, triplets 2kb, 2kb + 1
    stored = flat[:mags].reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 6, 4, 8)
    pairs_of_triplets = _rows_in_order(stored.transpose(0, 2, 4, 5, 1, 3)).reshape(m, three_k // 6)
    magnitude = np.stack([pairs_of_triplets >> 4, pairs_of_triplets & 15], axis=-1).reshape(m, three_k // 3)
    # signs, 16 words w[b] per (tm, tk, rb, ks): bit 15 - a is row 16*(a % 2) + b, triplet 8*ks + a // 2
    words = flat[mags:signs].view("<u2").reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 24, 16)
    bits = (words[..., None] >> np.arange(15, -1, -1, dtype=np.uint16)) & 1  # [..., b, a]
    bits = bits.reshape(*words.shape, 8, 2)  # a = 2u + half
    negative = bits.transpose(0, 2, 6, 4, 1, 3, 5).reshape(m, three_k // 3)
    u = np.where(negative == 1, -magnitude.astype(np.int16), magnitude) + 13  # 9*(t0+1) + 3*(t1+1) + (t2+1)
    codes[:, :three_k] = (np.stack([u // 9, u // 3 % 3, u % 3], axis=-1) - 1).reshape(m, three_k)
    if two_k:
        stored = flat[signs: signs + m * two_k // 4].reshape(m // t.BM, two_k // 32, t.BM // 32, 8, 4, 8)
        quads = _rows_in_order(stored.transpose(0, 2, 4, 5, 1, 3)).reshape(m, two_k // 4)
        codes[:, three_k:] = PAIR_BYTE_CODES[quads].reshape(m, two_k)
    return codes
