"""`tl1`: bitnet.cpp's ARM lookup-table layout (GGML type 38), laid out per shape by a `Tiling`.

Two neighbouring columns make a pair index, two pairs (4 columns) make a byte:

    idx(m, p) = 3*t[m, 2p] + t[m, 2p+1] + 4          0..8 (9..15 never written)

    byte:   bit 7 6 5 4 | 3 2 1 0
                idx(m,p) | idx(m,p+1)         columns 2p..2p+3 of row m

Bytes are emitted in this loop order (outermost first); by = 256 / bm columns per block:

    tm < M/BM    row tile                 m = tm*BM + rb*bm + rg*16 + rj
    tk < K/BK    column tile              p = (tk*BK + kb*by + kh*4) / 2
    rb < BM/bm   block of bm rows
    kb < BK/by   block of by columns
    rg < bm/16   group of 16 rows
    kh < by/4    byte within the block's columns
    rj < 16      row within the group

    tensor data:  [ M*K/4 code bytes ][ f32 beta | 28 zero bytes ]     = ggml_types.tl1_nbytes

The converter keeps beta as a `<name>_scale` tensor that the fork's gguf-py leaves out of the
tensor table but writes after the codes; the runtime reads it at data + M*K/4 (§3.3 of the
bitnet.cpp reference notes). beta = max|W'| of the fake-quantised weight = `ternarize`'s beta.
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary, ShapeError
from ..ggml_types import scale_slot, slot_beta, tl1_nbytes
from ..kernel_config import KernelConfig, Tiling, resolve_tiling
from ..kernel_formats import NIBBLE_ABOVE_8, ByteRun, Walk, beta_after_codes
from ..ternary import TernaryWeight, check_ternary
from . import Layout, LayoutSpec


def _pair_byte_tables() -> tuple[np.ndarray, np.ndarray]:
    """byte -> the 4 codes it holds (int8 [256, 4]) and whether both nibbles are <= 8."""
    nibble = np.arange(256, dtype=np.uint8)
    hi, lo = nibble >> 4, nibble & 15
    codes = np.stack([hi // 3, hi % 3, lo // 3, lo % 3], axis=1).astype(np.int8) - 1
    return codes, (hi <= 8) & (lo <= 8)


PAIR_BYTE_CODES, PAIR_BYTE_VALID = _pair_byte_tables()


def pair_bytes(codes: np.ndarray) -> np.ndarray:
    """Row-major pair bytes: codes [M, K] (K % 4 == 0) -> uint8 [M, K/4], byte q = columns 4q..4q+3."""
    c = codes.reshape(codes.shape[0], -1, 4).astype(np.int8)
    hi = 3 * c[..., 0] + c[..., 1] + 4
    lo = 3 * c[..., 2] + c[..., 3] + 4
    return ((hi << 4) | lo).astype(np.uint8)


def pair_codes(data: np.ndarray, what: str, tensor: str | None = None) -> np.ndarray:
    """Inverse of `pair_bytes` for bytes of any shape: -> int8 [..., 4]; NotTernary on an index > 8."""
    bad = np.count_nonzero(~PAIR_BYTE_VALID[data])
    if bad:
        raise NotTernary(f"{bad} {what} bytes hold a pair index above 8", tensor=tensor)
    return PAIR_BYTE_CODES[data]


def _kernel_pair_codes() -> np.ndarray:
    """The kernel's table: byte -> the 4 codes of a pair byte, (t0, t1) of the high nibble's
    pair, then the low's (indices above 8 are refused before any reading)."""
    nibble = np.arange(256)[:, None] >> np.array([4, 4, 0, 0]) & 15
    digit = np.where(np.arange(4) % 2 == 0, nibble // 3, nibble % 3)
    return (digit - 1).astype(np.int8)


KERNEL_PAIR_CODES = _kernel_pair_codes()


def _kernel_codes(flat: np.ndarray, shape: tuple[int, int], t: Tiling) -> np.ndarray:
    """The kernel's reading. Stored order tm, tk, rb, kb, rg, kh, rj: row tm*BM + rb*bm + rg*16
    + rj, column quad (tk*BK + kb*by + kh*4) / 4."""
    m, k = shape
    by = 256 // t.bm
    stored = flat[: m * k // 4].reshape(m // t.BM, k // t.BK, t.BM // t.bm, t.BK // by, t.bm // 16, by // 4, 16)
    quads = stored.transpose(0, 2, 4, 6, 1, 3, 5).reshape(m, k // 4)
    return KERNEL_PAIR_CODES[quads].reshape(m, k)


def _kernel_problems(flat: np.ndarray, shape: tuple[int, int], tiling: Tiling) -> list[ByteRun]:
    return [ByteRun("pair indices are above 8", 0, 1, shape[0] * shape[1] // 4, 0, NIBBLE_ABOVE_8, "nibble>8")]


class TiledLayout(Layout):
    """What TL1 and TL2 share: bytes that depend on a tiling, sizes from bitnet.cpp's nbytes."""

    kind = ""  # "tl1" / "tl2": the kernel_config rules that apply
    size = staticmethod(tl1_nbytes)

    def check_shape(self, shape: tuple[int, ...], tensor: str | None = None, *,
                    tiling: Tiling | KernelConfig | None = None) -> None:
        """ShapeError naming the shape and the rule; without `tiling`, whether any tiling fits."""
        if len(shape) != 2 or min(shape) < 1:
            raise ShapeError(f"{self.kind.upper()} needs a non-empty 2-D [out, in] shape, got {list(shape)}",
                             tensor=tensor)
        resolve_tiling(self.kind, shape, tiling, tensor=tensor)

    def nbytes(self, shape: tuple[int, int]) -> int:
        self.check_shape(shape)
        return self.size(*shape)

    def file_nbytes(self, rows: int, cols: int) -> int:
        """bitnet.cpp's size rule, whatever the tiling (a reader sizes tensors before tilings)."""
        return self.size(rows, cols)


class TL1(TiledLayout):
    spec = LayoutSpec(
        name="tl1",
        block_size=4,
        type_size=1,
        tail_bytes=32,  # (tiled: bytes depend on the tiling, the size does not)
        scale="sidecar:f32",
        source="microsoft/BitNet utils/convert-hf-to-gguf-bitnet.py preprocess_weights_tl1, codegen_tl1.py",
        type_name="TL1",
        type_ids={"2025": 38, "2026": 38},
        file_type=38,
        runtimes=("bitnet.cpp",),
        tiled=True,
        kernel="tl1",
        kernel_id=5,
    )
    kind = "tl1"
    kernel_walk = Walk(beta_after_codes, _kernel_problems, _kernel_codes)

    def encode(self, weight: TernaryWeight, *, tiling: Tiling | KernelConfig | None = None, tensor: str | None = None) -> np.ndarray:
        """The tensor's GGUF bytes (codes + scale slot); tiling defaults to `choose_tiling`."""
        check_ternary(weight.codes, tensor=tensor)
        m, k = weight.shape
        t = resolve_tiling("tl1", (m, k), tiling, tensor=tensor)
        by = 256 // t.bm
        rows = pair_bytes(weight.codes).reshape(m // t.BM, t.BM // t.bm, t.bm // 16, 16, k // t.BK, t.BK // by, by // 4)
        tiled = rows.transpose(0, 4, 1, 5, 2, 6, 3)
        return np.concatenate([tiled.reshape(-1), scale_slot(weight.beta)])

    def decode(
        self,
        data: np.ndarray,
        shape: tuple[int, int],
        beta: float | None = None,
        *,
        tiling: Tiling | KernelConfig | None = None,
        tensor: str | None = None,
    ) -> TernaryWeight:
        """Codes and beta (from the scale slot unless `beta` is given) of TL1 tensor bytes."""
        m, k = shape
        t = resolve_tiling("tl1", (m, k), tiling, tensor=tensor)
        flat = self._check_blob(data, shape, tensor=tensor)
        by = 256 // t.bm
        tiled = flat[: m * k // 4].reshape(m // t.BM, k // t.BK, t.BM // t.bm, t.BK // by, t.bm // 16, by // 4, 16)
        codes = pair_codes(tiled, "TL1", tensor).transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(m, k)
        stored = slot_beta(flat[m * k // 4 :]) if beta is None else beta
        return TernaryWeight(codes, self.read_beta(stored, codes, tensor))
