"""`hf`: the packed 1.58-bit layout transformers loads (`integrations/bitnet.py`).

uint8 [R, in] with R = ceil(out / 4); the four "planes" of R rows share a byte:

    output row  p*R + j   ->  packed row j,  bits 2p..2p+1,  code = t + 1

    packed[j, c]:   bit 7 6 | 5 4 | 3 2 | 1 0
                     plane 3 | 2   | 1   | 0        (row 3R+j ... row j)
    codes: 0 -> -1, 1 -> 0, 2 -> +1 (3 is never written)

beta is not in the bytes: it lives in `<name>.weight_scale`, a bf16 tensor of shape [1],
multiplied (`autobitlinear`) or its reciprocal divided (`bitlinear`); see convert.py.
Rows past `out` in the last plane (out not a multiple of 4) are written as code 1 (0).
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary, ShapeError
from .. import fastpath
from ..kernel_formats import FIELD_IS_3, ByteRun, Walk, no_beta
from ..ternary import TernaryWeight, check_ternary
from . import Layout, LayoutSpec

PLANES = 4


def _kernel_problems(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> list[ByteRun]:
    return [ByteRun("codes are 3", 0, 1, flat.size, 0, FIELD_IS_3, "field3")]


def _kernel_codes(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> np.ndarray:
    """The kernel's reading: output row p*R + j at bits 2p of packed row j."""
    m, k = shape
    rows = -(-m // 4)
    planes = (flat.reshape(rows, k)[None] >> np.array([0, 2, 4, 6], np.uint8)[:, None, None]) & 3
    return planes.reshape(4 * rows, k)[:m].astype(np.int8) - 1


class HFPacked(Layout):
    spec = LayoutSpec(
        name="hf",
        block_size=1,
        type_size=1,
        scale="tensor:bf16",
        source="transformers integrations/bitnet.py pack_weights/unpack_weights",
        outtype="hf-packed",
        container="safetensors",
        runtimes=("transformers",),
        kernel="hf",
        kernel_id=1,
    )
    embeds_scale = False
    kernel_walk = Walk(no_beta, _kernel_problems, _kernel_codes)

    def nbytes(self, shape: tuple[int, int]) -> int:
        self.check_shape(shape)
        return -(-shape[0] // PLANES) * shape[1]

    def stored_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        self.check_shape(shape)
        return (-(-shape[0] // PLANES), shape[1])

    def encode(self, weight: TernaryWeight) -> np.ndarray:
        fast = fastpath.hf_encode(weight)
        if fast is not None:
            return fast
        out_features, in_features = weight.shape
        check_ternary(weight.codes)
        rows = -(-out_features // PLANES)
        codes = np.ones((PLANES * rows, in_features), dtype=np.uint8)
        codes[:out_features] = weight.codes + 1  # a copy: the caller's array is untouched
        planes = codes.reshape(PLANES, rows, in_features)
        return planes[0] | (planes[1] << 2) | (planes[2] << 4) | (planes[3] << 6)

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        if beta is None:
            raise ShapeError("the hf layout keeps beta in weight_scale; pass beta=")
        want = self.stored_shape(shape)
        packed = np.asarray(data, dtype=np.uint8)
        if packed.shape != want:
            raise ShapeError(f"hf packed weight for shape {list(shape)} must be {list(want)}, got {list(packed.shape)}")
        fast = fastpath.hf_decode(packed, shape, np.float32(beta))
        weight = fast if fast is not None else self._decode_reference(packed, shape, np.float32(beta))
        checked = self.read_beta(beta, weight)
        if checked != np.float32(beta):  # an all-zero tensor with weight_scale 0
            return TernaryWeight(np.zeros(shape, np.int8), checked)
        return weight

    def _decode_reference(self, packed: np.ndarray, shape: tuple[int, int], beta: np.float32) -> TernaryWeight:
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(PLANES, 1, 1)
        codes = (packed[None] >> shifts) & 3
        if (codes == 3).any():
            raise NotTernary(f"{int((codes == 3).sum())} hf codes are 3 (would unpack to +2)")
        ternary = codes.reshape(-1, shape[1])[: shape[0]].astype(np.int8) - 1
        return TernaryWeight(ternary.astype(np.int8), np.float32(beta))
