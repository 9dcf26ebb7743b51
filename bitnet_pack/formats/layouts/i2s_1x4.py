"""`i2_s_1x4`: bitnet.cpp's weight-parallel I2_S (ggml type 36, like `i2_s`).

bitnet.cpp's x86 `quantize_i2_s` writes this layout when `include/gemm-config.h` does not
define ACT_PARALLEL (microsoft/BitNet 16da220, src/ggml-bitnet-mad.cpp, the `#else` branch);
its `ggml_vec_dot_i2_i8_s_1x4_32W` kernel reads it. Four consecutive rows share a byte per
column: row group rg = m // 4 is one run of K bytes, and the FIRST row sits in the TOP bits
(code = t + 1):

    byte[rg*K + col]:  bit 7 6      | 5 4          | 3 2          | 1 0
                           q(4rg,col) | q(4rg+1,col) | q(4rg+2,col) | q(4rg+3,col)

    codes: 0 -> -1, 1 -> 0, 2 -> +1; 3 is never written (decode refuses it)

Then the same 32-byte tail as `i2_s`: f32 beta at byte M*K/4, 28 zero bytes; M*K/4 + 32 bytes
in all. Same type id, same size, same scale slot, and no marker: nothing in a GGUF says which
build wrote it (bitnet-pack records its own `bitnet_pack.layout`; bitnet.cpp reads none). The
quantizer asserts M % 4 == 0; the kernel walks 128 columns per block (nb = K / 128), so
K % 128 == 0 as for x86 I2_S.
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary, ShapeError
from ..ggml_types import i2s_nbytes, scale_slot, slot_beta
from ..kernel_formats import RowOrder, beta_after_codes
from ..ternary import TernaryWeight, check_ternary
from . import Layout, LayoutSpec
from .i2s import I2S_TYPE_ID

ROWS_PER_BYTE = 4
SHIFTS = np.array([6, 4, 2, 0], dtype=np.uint8)  # row 4rg + j at bits 6 - 2j
WRITE_NOTE = ("i2_s_1x4 is bitnet.cpp's weight-parallel I2_S (built without ACT_PARALLEL): nothing in the file "
              "tells it from x86 I2_S (same type 36, size and scale slot), and a default bitnet.cpp build "
              "reads it as garbage; read it back with --i2s-variant 1x4")


def _code_bytes(flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return flat[: shape[0] * shape[1] // ROWS_PER_BYTE]


def _hf_rows(shape: tuple[int, int]) -> np.ndarray:
    """The code bytes are hf's planes (R = M/4 packed rows of K bytes, row p*R + rg at bits 2p
    of packed row rg) with the rows reordered: bits 2p hold row 4rg + 3 - p. So the hf tile's
    output p*R + rg is row 4rg + 3 - p; row 4rg + j is its output (3 - j)*R + rg."""
    groups = shape[0] // ROWS_PER_BYTE
    rg, j = np.divmod(np.arange(shape[0]), ROWS_PER_BYTE)
    return (ROWS_PER_BYTE - 1 - j) * groups + rg


class I2S1x4(Layout):
    spec = LayoutSpec(
        name="i2_s_1x4",
        block_size=128,
        type_size=32,
        tail_bytes=32,
        scale="tail:f32",
        source="bitnet.cpp src/ggml-bitnet-mad.cpp quantize_i2_s without ACT_PARALLEL (16da220)",
        type_name="I2_S",  # stored as bitnet.cpp's I2_S: type 36, file type 40
        type_ids={"2025": I2S_TYPE_ID, "2026": I2S_TYPE_ID},
        file_type=40,
        runtimes=("bitnet.cpp",),  # built without ACT_PARALLEL (include/gemm-config.h)
        variant="1x4",  # --i2s-variant that reads a GGUF's I2_S tensors this way
        type_default=False,
        kernel="hf",  # the code bytes are hf's tile with the rows in another order (kernel_rows)
        kernel_id=1,
    )
    kernel_rows = RowOrder(beta_after_codes, _code_bytes, _hf_rows)

    def write_notes(self, entries: list, embedding_type: str) -> list[str]:
        return [WRITE_NOTE]

    def check_shape(self, shape: tuple[int, ...], tensor: str | None = None) -> None:
        super().check_shape(shape, tensor=tensor)
        if shape[0] % ROWS_PER_BYTE:
            raise ShapeError(f"{self.name} needs out_features % {ROWS_PER_BYTE} == 0 (four rows share a byte), "
                             f"got out_features {shape[0]} (shape {list(shape)})", tensor=tensor)

    def nbytes(self, shape: tuple[int, int]) -> int:
        self.check_shape(shape)
        return i2s_nbytes(shape[0], shape[1])

    def encode(self, weight: TernaryWeight) -> np.ndarray:
        """M*K/4 code bytes, f32 beta, 28 zero bytes (flat uint8, `nbytes(shape)` long)."""
        self.check_shape(weight.shape)
        check_ternary(weight.codes)
        rows, cols = weight.shape
        codes = (weight.codes.view(np.uint8) + np.uint8(1)).reshape(rows // ROWS_PER_BYTE, ROWS_PER_BYTE, cols)
        blob = np.zeros(self.nbytes(weight.shape), dtype=np.uint8)
        body = blob[: rows * cols // ROWS_PER_BYTE].reshape(rows // ROWS_PER_BYTE, cols)
        np.left_shift(codes[:, 0], SHIFTS[0], out=body)
        for j in range(1, ROWS_PER_BYTE):
            body |= codes[:, j] << SHIFTS[j]
        blob[body.size:] = scale_slot(weight.beta)
        return blob

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        """Codes and beta from the bytes; `beta=`, if given, must equal the stored one."""
        flat = self._check_blob(data, shape)
        rows, cols = shape
        scale_at = rows * cols // ROWS_PER_BYTE
        stored = slot_beta(flat[scale_at:])
        self.check_given_beta(stored, beta)
        body = flat[:scale_at].reshape(rows // ROWS_PER_BYTE, 1, cols)
        fields = (body >> SHIFTS[:, None]) & np.uint8(3)  # [rg, j, col]: row 4rg + j
        bad = int(np.count_nonzero(fields == 3))
        if bad:
            raise NotTernary(f"{bad} of {rows * cols} {self.name} codes are 3 (no ternary value; "
                             f"bitnet.cpp would read them as 0), shape {list(shape)}")
        codes = (fields - np.uint8(1)).view(np.int8).reshape(rows, cols)
        checked = self.read_beta(stored, codes)
        if checked != stored:  # an all-zero tensor stored with beta 0
            return TernaryWeight(np.zeros(shape, np.int8), checked)
        return TernaryWeight(codes, stored)
