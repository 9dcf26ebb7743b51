"""`tl2`: bitnet.cpp's x86 lookup-table layout (GGML type 39; 42 with `--type-ids 2026`), tiled per shape.

K splits into a three-column part and a two-column remainder (three_k = K // BK * BK):

    [ magnitudes M*three_k/6 ][ signs M*three_k/24 ][ pairs M*two_k/4 ][ 00.. to pad32(F) ][ f32 beta | 28 x 00 ]
      F = (K-256)*M//3*5//8 + 256*M//2*4//8   (ggml_types.tl2_nbytes = pad32(F) + 32)

Three part. Triplet g of row m, v = 9*t[m,3g] + 3*t[m,3g+1] + t[m,3g+2] in -13..13:

    magnitude byte:  bit 7 6 5 4 | 3 2 1 0         columns 3g..3g+5 of row m
                        |v(m,g)| | |v(m,g+1)|
    order: tm < M/BM, tk < three_k/BK, rb < BM/32, kb < BK/6, c in (0, 2, 1, 3), r8 < 8
           m = tm*BM + rb*32 + 8c + r8,   g = (tk*BK + 6*kb) / 3
    (c runs 0, 2, 1, 3: rows 8-15 and 16-23 of every 32 swap places)

    sign words: 16 little-endian uint16 w[b] per (tm, tk, rb, ks < BK/24):
           bit 15-a of w[b] = [v(m, g) < 0],  m = tm*BM + rb*32 + 16*(a % 2) + b,
                                             g = (tk*BK + 24*ks) / 3 + a // 2

Two part (columns three_k..K-1): TL1's pair byte (`tl1.pair_bytes`, 4 columns a byte), with
32-column tiles and the same row swap:
    order: tm, tk < two_k/32, rb < BM/32, kb < 8, c in (0, 2, 1, 3), r8 < 8
           m = tm*BM + rb*32 + 8c + r8,   columns three_k + tk*32 + 4*kb .. +3

The bytes between the codes and pad32(F) are zero (the converter pads to F with zeros, the
GGUF writer to 32); the scale slot is TL1's.
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary
from ..ggml_types import SLOT_BYTES, scale_slot, slot_beta, tl2_nbytes
from ..kernel_config import KernelConfig, Tiling, resolve_tiling, tl2_split
from ..kernel_formats import NIBBLE_ABOVE_8, NIBBLE_ABOVE_13, ByteRun, Walk, beta_in_last_slot
from ..ternary import TernaryWeight, check_ternary
from . import LayoutSpec
from .tl1 import KERNEL_PAIR_CODES, TiledLayout, pair_bytes, pair_codes

ROW_SWAP = [0, 2, 1, 3]  # its own inverse
TWO_BK = 32


def _triplet_table() -> np.ndarray:
    """(sign << 4 | magnitude) -> the 3 codes (int8 [32, 3]); rows of magnitude > 13 are unused."""
    key = np.arange(32)
    v = np.where(key >= 16, -(key & 15), key & 15)
    u = np.clip(v + 13, 0, 26)  # 9*(t0+1) + 3*(t1+1) + (t2+1)
    return (np.stack([u // 9, u // 3 % 3, u % 3], axis=1) - 1).astype(np.int8)


TRIPLET_CODES = _triplet_table()


def _swap_rows(tiles: np.ndarray) -> np.ndarray:
    """Axis 2 is the 4 chunks of 8 rows in each 32-row block: order them 0, 2, 1, 3."""
    return tiles[:, :, ROW_SWAP]


def _triplets(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """codes [M, 3n] -> (|v| uint8 [M, n], [v < 0] uint8 [M, n])."""
    c = codes.reshape(codes.shape[0], -1, 3).astype(np.int8)
    v = 9 * c[..., 0] + 3 * c[..., 1] + c[..., 2]
    return np.abs(v).astype(np.uint8), (v < 0).astype(np.uint8)


def _encode_three(codes: np.ndarray, t: Tiling) -> tuple[np.ndarray, np.ndarray]:
    m, three_k = codes.shape
    mag, sgn = _triplets(codes)
    byte = (mag[:, 0::2] << 4) | mag[:, 1::2]
    tiles = _swap_rows(byte.reshape(m // t.BM, t.BM // 32, 4, 8, three_k // t.BK, t.BK // 6))
    magnitudes = tiles.transpose(0, 4, 1, 5, 2, 3).reshape(-1)
    bits = sgn.reshape(m // t.BM, t.BM // 32, 2, 16, three_k // t.BK, t.BK // 24, 8)
    bits = bits.transpose(0, 4, 1, 5, 3, 6, 2).reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 24, 16, 16)
    big_endian = np.packbits(bits, axis=-1, bitorder="big")  # bit 15-a of each word first
    return magnitudes, big_endian[..., ::-1].reshape(-1)


def _decode_three(magnitudes: np.ndarray, signs: np.ndarray, m: int, three_k: int, t: Tiling, tensor: str | None) -> np.ndarray:
    tiles = magnitudes.reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 6, 4, 8)
    byte = _swap_rows(tiles.transpose(0, 2, 4, 5, 1, 3)).reshape(m, three_k // 6)
    mag = np.stack([byte >> 4, byte & 15], axis=-1).reshape(m, three_k // 3)
    bad = np.count_nonzero(mag > 13)
    if bad:
        raise NotTernary(f"{bad} TL2 triplet magnitudes are above 13", tensor=tensor)
    words = signs.reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 24, 16, 2)[..., ::-1]
    bits = np.unpackbits(words, axis=-1, bitorder="big").reshape(*words.shape[:-1], 8, 2)
    sgn = bits.transpose(0, 2, 6, 4, 1, 3, 5).reshape(m, three_k // 3)
    return TRIPLET_CODES[(sgn << 4) | mag].reshape(m, three_k)


def _encode_two(codes: np.ndarray, BM: int) -> np.ndarray:
    m, two_k = codes.shape
    tiles = _swap_rows(pair_bytes(codes).reshape(m // BM, BM // 32, 4, 8, two_k // TWO_BK, 8))
    return tiles.transpose(0, 4, 1, 5, 2, 3).reshape(-1)


def _decode_two(data: np.ndarray, m: int, two_k: int, BM: int, tensor: str | None) -> np.ndarray:
    tiles = data.reshape(m // BM, two_k // TWO_BK, BM // 32, 8, 4, 8)
    rows = _swap_rows(tiles.transpose(0, 2, 4, 5, 1, 3))
    return pair_codes(rows, "TL2 two-part", tensor).reshape(m, two_k)


def _sections(m: int, k: int, t: Tiling) -> tuple[int, int, int, int]:
    """(three_k, two_k, end of magnitudes, end of signs) in bytes."""
    three_k, two_k = tl2_split(k, t.BK)
    return three_k, two_k, m * three_k // 6, m * three_k // 6 + m * three_k // 24


def _kernel_problems(flat: np.ndarray, shape: tuple[int, int], t: Tiling) -> list[ByteRun]:
    three_k, two_k, mags, signs = _sections(*shape, t)
    return [ByteRun("triplet magnitudes are above 13", 0, 1, mags, 0, NIBBLE_ABOVE_13, "nibble>13"),
            ByteRun("pair indices are above 8", signs, 1, shape[0] * two_k // 4, 0, NIBBLE_ABOVE_8, "nibble>8")]


def _kernel_codes(flat: np.ndarray, shape: tuple[int, int], t: Tiling) -> np.ndarray:
    """The kernel's reading, byte by byte in stored order (not `decode`'s reshapes)."""
    m, k = shape
    three_k, two_k, mags, signs = _sections(m, k, t)
    swap = np.array(ROW_SWAP)
    codes = np.empty(shape, np.int8)
    # magnitudes, stored tm, tk, rb, kb, chunk, r8: rows tm*BM + rb*32 + 8*swap(chunk) + r8, triplets 2kb, 2kb + 1
    stored = flat[:mags].reshape(m // t.BM, three_k // t.BK, t.BM // 32, t.BK // 6, 4, 8)
    pairs_of_triplets = stored.transpose(0, 2, 4, 5, 1, 3)[:, :, swap].reshape(m, three_k // 6)
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
        quads = stored.transpose(0, 2, 4, 5, 1, 3)[:, :, swap].reshape(m, two_k // 4)
        codes[:, three_k:] = KERNEL_PAIR_CODES[quads].reshape(m, two_k)
    return codes


class TL2(TiledLayout):
    spec = LayoutSpec(
        name="tl2",
        block_size=24,
        type_size=5,  # three part: 24 weights -> 4 magnitude bytes + 1 sign byte
        scale="sidecar:f32",
        source="microsoft/BitNet utils/convert-hf-to-gguf-bitnet.py preprocess_weights_tl2, codegen_tl2.py; "
        "type id 39 in the 2025 fork, 42 in 2026 forks (upstream's MXFP4 took 39, microsoft/BitNet#631)",
        type_name="TL2",
        type_ids={"2025": 39, "2026": 42},
        file_type=39,
        runtimes=("bitnet.cpp",),
        tiled=True,
        kernel="tl2",
        kernel_id=6,
    )
    kind = "tl2"
    kernel_walk = Walk(beta_in_last_slot, _kernel_problems, _kernel_codes)
    size = staticmethod(tl2_nbytes)

    def encode(self, weight: TernaryWeight, *, tiling: Tiling | KernelConfig | None = None, tensor: str | None = None) -> np.ndarray:
        """The tensor's GGUF bytes (codes, zero pad, scale slot); tiling defaults to `choose_tiling`."""
        check_ternary(weight.codes, tensor=tensor)
        m, k = weight.shape
        t = resolve_tiling("tl2", (m, k), tiling, tensor=tensor)
        three_k, two_k, _, data_end = _sections(m, k, t)
        out = np.zeros(tl2_nbytes(m, k), dtype=np.uint8)
        magnitudes, signs = _encode_three(weight.codes[:, :three_k], t)
        parts = [magnitudes, signs, _encode_two(weight.codes[:, three_k:], t.BM) if two_k else magnitudes[:0]]
        np.concatenate(parts, out=out[: data_end + m * two_k // 4])
        out[-SLOT_BYTES:] = scale_slot(weight.beta)
        return out

    def decode(
        self,
        data: np.ndarray,
        shape: tuple[int, int],
        beta: float | None = None,
        *,
        tiling: Tiling | KernelConfig | None = None,
        tensor: str | None = None,
    ) -> TernaryWeight:
        """Codes and beta (from the scale slot unless `beta` is given) of TL2 tensor bytes."""
        m, k = shape
        t = resolve_tiling("tl2", (m, k), tiling, tensor=tensor)
        flat = self._check_blob(data, shape, tensor=tensor)
        three_k, two_k, mag_end, sign_end = _sections(m, k, t)
        codes = np.empty((m, k), dtype=np.int8)
        codes[:, :three_k] = _decode_three(flat[:mag_end], flat[mag_end:sign_end], m, three_k, t, tensor)
        if two_k:
            codes[:, three_k:] = _decode_two(flat[sign_end : sign_end + m * two_k // 4], m, two_k, t.BM, tensor)
        stored = slot_beta(flat[-SLOT_BYTES:]) if beta is None else beta
        return TernaryWeight(codes, self.read_beta(stored, codes, tensor))
