"""An integer oracle for the kernel, written from the format descriptions (the byte pictures in
shared/reference and the peers' docs), in the other direction from everything in bitnet_pack:
for every element (m, k) it computes which byte and which bits hold its code, and reads it.
It calls no bitnet_pack layout, decoder or kernel code; only numpy."""
from __future__ import annotations

import numpy as np


def codes_of(layout: str, data: np.ndarray, shape: tuple[int, int], tiling: tuple[int, int, int] | None = None
             ) -> np.ndarray:
    """int64 ternary values [M, K] of stored bytes `data` (flat uint8)."""
    m, k = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    flat = np.asarray(data, np.uint8).reshape(-1).astype(np.int64)
    return READERS[layout](flat, shape, m, k, tiling)


def sums(layout: str, data: np.ndarray, shape: tuple[int, int], q: np.ndarray,
         tiling: tuple[int, int, int] | None = None) -> np.ndarray:
    """Exact sum_k t[m, k] * q[n, k] as int64 [N, M]."""
    return np.asarray(q, np.int64) @ codes_of(layout, data, shape, tiling).T


def _field(byte: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return ((byte >> shift) & 3) - 1


def _i2s(block: int):
    """Row-major stream e = m*K + k in blocks of `block`; element g*block/4 + p of a block
    is byte p of the block's block/4, at bits 6 - 2g."""
    def read(flat, shape, m, k, _):
        e = m * shape[1] + k
        quarter = block // 4
        byte = e // block * quarter + e % quarter
        return _field(flat[byte], 6 - 2 * (e % block // quarter))
    return read


def _hf(flat, shape, m, k, _):
    rows = -(-shape[0] // 4)  # output row p*rows + j is packed row j, bits 2p
    return _field(flat[(m % rows) * shape[1] + k], 2 * (m // rows))


def _tq2(flat, shape, m, k, _):
    """66-byte blocks of 256: element 128h + 32n + j at bits 2n of byte 32h + j."""
    e = m * shape[1] + k
    i = e % 256
    return _field(flat[e // 256 * 66 + 32 * (i // 128) + i % 32], 2 * (i % 128 // 32))


# TQ1_0: a byte stores v = 81 a0 + 27 a1 + 9 a2 + 3 a3 + a4 as ceil(v * 256 / 243).
_VALUE_OF_BYTE = np.full(256, -1, np.int64)
_VALUE_OF_BYTE[(np.arange(243) * 256 + 242) // 243] = np.arange(243)


def _tq1(flat, shape, m, k, _):
    """54-byte blocks: trit n of byte j < 32 is element j + 32n; of byte 32 + j (j < 16)
    element 160 + j + 16n; of byte 48 + j (j < 4) element 240 + j + 4n."""
    e = m * shape[1] + k
    i = e % 256
    byte = np.where(i < 160, i % 32, np.where(i < 240, 32 + (i - 160) % 16, 48 + (i - 240) % 4))
    n = np.where(i < 160, i // 32, np.where(i < 240, (i - 160) // 16, (i - 240) // 4))
    value = _VALUE_OF_BYTE[flat[e // 256 * 54 + byte]]
    assert (value >= 0).all(), "a TQ1_0 byte that no encoder writes"
    return value // 3 ** (4 - n) % 3 - 1


def _pair(nibble: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pair index 3*t0 + t1 + 4: t0 for the pair's first column, t1 for its second."""
    return np.where(second, nibble % 3, nibble // 3) - 1


def _nibble(byte: np.ndarray, low: np.ndarray) -> np.ndarray:
    return np.where(low, byte & 15, byte >> 4)


def _tl1(flat, shape, m, k, tiling):
    BM, BK, bm = tiling
    by = 256 // bm
    dims = (shape[0] // BM, shape[1] // BK, BM // bm, BK // by, bm // 16, by // 4, 16)
    byte = np.ravel_multi_index((m // BM, k // BK, m % BM // bm, k % BK // by, m % bm // 16, k % by // 4, m % 16), dims)
    return _pair(_nibble(flat[byte], k % 4 >= 2), k % 2 == 1)


SWAP_POSITION = np.array([0, 2, 1, 3])  # where 8-row chunk c of 32 rows is stored (its own inverse)


def _tl2(flat, shape, m, k, tiling):
    BM, BK, _ = tiling
    rows, cols = shape
    three_k = cols // BK * BK
    two_k = cols - three_k
    mags, signs = rows * three_k // 6, rows * three_k // 24
    r32 = m % 32
    chunk = SWAP_POSITION[r32 // 8]
    # three part: byte per (row, 6 columns), the first triplet in the high nibble
    kk = np.minimum(k, max(three_k - 1, 0))
    at = np.ravel_multi_index((m // BM, kk // BK, m % BM // 32, kk % BK // 6, chunk, r32 % 8),
                              (rows // BM, max(three_k // BK, 1), BM // 32, BK // 6, 4, 8))
    magnitude = _nibble(flat[np.minimum(at, len(flat) - 1)], kk % 6 >= 3)
    word_at = mags + 2 * np.ravel_multi_index((m // BM, kk // BK, m % BM // 32, kk % BK // 24, r32 % 16),
                                              (rows // BM, max(three_k // BK, 1), BM // 32, BK // 24, 16))
    word = flat[np.minimum(word_at, len(flat) - 2)] | flat[np.minimum(word_at + 1, len(flat) - 1)] << 8
    negative = (word >> (15 - (2 * (kk % 24 // 3) + r32 // 16))) & 1
    v = np.where(negative == 1, -magnitude, magnitude) + 13  # base 3 digits of 9 t0 + 3 t1 + t2 + 13
    triplet = v // 3 ** (2 - kk % 3) % 3 - 1
    if not two_k:
        return triplet
    # two part: TL1's pair bytes, 32-column tiles, the same row order
    k2 = np.maximum(k - three_k, 0)
    at2 = signs + mags + np.ravel_multi_index((m // BM, k2 // 32, m % BM // 32, k2 % 32 // 4, chunk, r32 % 8),
                                              (rows // BM, two_k // 32, BM // 32, 8, 4, 8))
    pair = _pair(_nibble(flat[np.minimum(at2, len(flat) - 1)], k2 % 4 >= 2), k2 % 2 == 1)
    return np.where(k < three_k, triplet, pair)


READERS = {"i2_s": _i2s(128), "i2_s_arm": _i2s(64), "hf": _hf, "tq2_0": _tq2, "tq1_0": _tq1,
           "tl1": _tl1, "tl2": _tl2}
