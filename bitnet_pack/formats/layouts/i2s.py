"""`i2_s`: bitnet.cpp's 2-bit ternary type (ggml type 36 in its fork), and `i2_s_arm`.

The [out, in] codes are read row-major as one stream q[0 .. M*K) and cut into blocks of
B elements: B = 128 on x86 (`i2_s`, every official file) and B = 64 on ARM NEON builds of
bitnet.cpp since Nov 2025 (`i2_s_arm`, an explicit option). A block becomes B/4 bytes;
byte p holds four elements B/4 apart, the FIRST one in the TOP bits (code = t + 1):

    i2_s      byte[32*b + p]:  bit 7 6  | 5 4       | 3 2       | 1 0        (p = 0..31)
                                   q[p]  | q[p + 32] | q[p + 64] | q[p + 96]  of block b

    i2_s_arm  byte[16*b + p]:  bit 7 6  | 5 4       | 3 2       | 1 0        (p = 0..15)
                                   q[p]  | q[p + 16] | q[p + 32] | q[p + 48]  of block b

    codes: 0 -> -1, 1 -> 0, 2 -> +1; 3 is never written (decode refuses it)

After the M*K/4 code bytes comes a 32-byte tail, so a tensor is M*K/4 + 32 bytes:

    +0 .. +3    beta, float32 little-endian (the runtime multiplies: W ~= t * beta)
    +4 .. +31   zero here; llama-quantize leaves them uninitialised, so decode ignores them

The kernels address row m at byte m*K/4, so a block must not cross a row: K % B == 0.
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary
from .. import fastpath
from ..ggml_types import i2s_nbytes, scale_slot, slot_beta
from ..kernel_formats import FIELD_IS_3, ByteRun, Walk, beta_after_codes
from ..ternary import TernaryWeight, check_ternary
from . import Layout, LayoutSpec

I2S_TYPE_ID = 36  # in every bitnet.cpp fork generation
GROUPS = 4  # elements per byte
# Group g of a block (elements g*B/4 ..) sits at bit shift 6 - 2g: the first group on top.
SHIFTS = np.array([6, 4, 2, 0], dtype=np.uint8)


def _kernel_problems(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> list[ByteRun]:
    return [ByteRun("codes are 3", 0, 1, shape[0] * shape[1] // 4, 0, FIELD_IS_3, "field3")]


def _kernel_walk(quarter: int) -> Walk:
    """The kernel's reading of blocks of 4 * `quarter` elements: element g*quarter + p of a
    block at bits 6-2g of its byte p; f32 beta after the codes."""
    def codes(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> np.ndarray:
        m, k = shape
        body = flat[: m * k // 4].reshape(-1, 1, quarter)  # [block, group, p]
        fields = (body >> np.array([6, 4, 2, 0], np.uint8)[:, None]) & 3
        return fields.reshape(m, k).astype(np.int8) - 1
    return Walk(beta_after_codes, _kernel_problems, codes)


class _I2S(Layout):
    """The I2_S family; subclasses only choose the block size."""

    def file_nbytes(self, rows: int, cols: int) -> int:
        """bitnet.cpp's size rule (its ggml_nbytes), whatever the blocks: a reader sizes a tensor
        before its shape is checked against the model's."""
        return i2s_nbytes(rows, cols)

    def encode(self, weight: TernaryWeight) -> np.ndarray:
        """M*K/4 code bytes, f32 beta, 28 zero bytes (flat uint8, `nbytes(shape)` long)."""
        self.check_shape(weight.shape)
        fast = fastpath.i2s_encode(weight, self.spec.block_size, self.nbytes(weight.shape))
        return fast if fast is not None else self._encode_reference(weight)

    def _encode_reference(self, weight: TernaryWeight) -> np.ndarray:
        check_ternary(weight.codes)
        stride = self.spec.block_size // GROUPS
        # int8 -1/0/1 seen as uint8 255/0/1, plus 1 (wrapping): codes 0/1/2 in a new array.
        codes = (weight.codes.view(np.uint8) + np.uint8(1)).reshape(-1, GROUPS, stride)
        blob = np.zeros(self.nbytes(weight.shape), dtype=np.uint8)
        body = blob[: codes.shape[0] * stride].reshape(-1, stride)
        np.left_shift(codes[:, 0], SHIFTS[0], out=body)
        for group in range(1, GROUPS):
            body |= codes[:, group] << SHIFTS[group]
        scale_at = body.size
        blob[scale_at:] = scale_slot(weight.beta)
        return blob

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        """Codes and beta from the bytes; `beta=`, if given, must equal the stored one."""
        flat = self._check_blob(data, shape)
        scale_at = shape[0] * shape[1] // GROUPS
        stored = slot_beta(flat[scale_at:])
        self.check_given_beta(stored, beta)
        fast = fastpath.i2s_decode(flat[:scale_at], shape, self.spec.block_size, stored)
        codes = self._decode_reference(flat[:scale_at], shape) if fast is None else fast
        checked = self.read_beta(stored, codes)
        if checked != stored:  # an all-zero tensor stored with beta 0
            return TernaryWeight(np.zeros(shape, np.int8), checked)
        return fast if fast is not None else TernaryWeight(codes, stored)

    def _decode_reference(self, body: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """int8 codes [out, in] from the M*K/4 code bytes."""
        rows, cols = shape
        stride = self.spec.block_size // GROUPS
        body = body.reshape(-1, 1, stride)
        codes = (body >> SHIFTS[:, None]) & np.uint8(3)  # [blocks, group, p]
        bad = int(np.count_nonzero(codes == 3))
        if bad:
            raise NotTernary(
                f"{bad} of {rows * cols} {self.name} codes are 3 (no ternary value; "
                f"bitnet.cpp would read them as 0), shape {list(shape)}"
            )
        codes -= np.uint8(1)  # 0/1/2 -> 255/0/1, i.e. int8 -1/0/1
        return codes.view(np.int8).reshape(rows, cols)


class I2S(_I2S):
    kernel_walk = _kernel_walk(32)
    spec = LayoutSpec(
        name="i2_s",
        block_size=128,
        type_size=32,
        tail_bytes=32,
        scale="tail:f32",
        source="bitnet.cpp src/ggml-bitnet-mad.cpp quantize_i2_s (x86, QK_I2_S = 128)",
        type_name="I2_S",
        type_ids={"2025": I2S_TYPE_ID, "2026": I2S_TYPE_ID},
        file_type=40,
        runtimes=("bitnet.cpp",),
        variant="x86",
        kernel="i2_s",
        kernel_id=0,
    )


class I2SArm(_I2S):
    kernel_walk = _kernel_walk(16)
    spec = LayoutSpec(
        name="i2_s_arm",
        block_size=64,
        type_size=16,
        tail_bytes=32,
        scale="tail:f32",
        source="bitnet.cpp src/ggml-bitnet-mad.cpp quantize_i2_s (ARM NEON since 112f853, QK_I2_S = 64)",
        type_name="I2_S",
        type_ids={"2025": I2S_TYPE_ID, "2026": I2S_TYPE_ID},
        file_type=40,
        runtimes=("bitnet.cpp",),
        variant="arm",
        type_default=False,
        kernel="i2_s_arm",
        kernel_id=2,
    )
