"""`tq2_0` and `tq1_0`: mainline llama.cpp's ternary types (ggml types 35 and 34).

Each row is cut into 256-element blocks (QK_K); every block ends with an fp16 `d`
(little-endian), the block's absmax: d = beta when the block holds a non-zero code,
d = 0 for an all-zero block. e[i] below is element i of the block, a = t + 1.

TQ2_0, 66 bytes per block: 2-bit codes, the first element in the LOW bits (unlike I2_S).

    qs[32*h + m]  (h = 0, 1;  m = 0..31):
        bit 7 6             | 5 4              | 3 2              | 1 0
            a[128h + 96 + m] | a[128h + 64 + m] | a[128h + 32 + m] | a[128h + m]
    bytes 64..65: d

TQ1_0, 54 bytes per block: base 3, five trits per byte, the first trit most significant.

    qs[m]       (m = 0..31)  trits a[m],       a[m + 32],  a[m + 64],  a[m + 96],  a[m + 128]
    qs[32 + m]  (m = 0..15)  trits a[160 + m], a[176 + m], a[192 + m], a[208 + m], a[224 + m]
    qh[j]       (j = 0..3)   trits a[240 + j], a[244 + j], a[248 + j], a[252 + j], 0
    bytes 52..53: d

    a byte stores v = 81*a0 + 27*a1 + 9*a2 + 3*a3 + a4 (0..242) as ceil(v * 256 / 243),
    so that trit n of byte b reads back as ((b * 3**n) mod 256) * 3 >> 8.

Only 243 of the 256 byte values (81 for qh) are ever written; decode refuses the others.
d is fp16, so encode refuses a beta fp16 cannot hold exactly unless `lossy=True` (every
bf16 value in [2**-14, 65504] fits).
"""
from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ...errors import NonFiniteWeight, NotTernary, ScaleNotRepresentable
from .. import fastpath
from ..kernel_formats import FIELD_IS_3, ByteRun, Walk, byte_table, common_block_scale
from ..ternary import ZERO_BETA, TernaryWeight, check_ternary
from . import Layout, LayoutSpec

QK_K = 256
D_BYTES = 2



class _TQ(Layout):
    """What TQ1_0 and TQ2_0 share: 256-element blocks of codes followed by fp16 d."""

    fast_kind = ""  # the compiled block coder (fastpath.tq_encode / tq_decode): "tq1" / "tq2"

    def encode(self, weight: TernaryWeight, *, lossy: bool = False) -> np.ndarray:
        """The GGUF tensor bytes: per block, the packed codes then d (flat uint8)."""
        self.check_shape(weight.shape)
        fast = self._encode_fast(weight, lossy)
        if fast is not None:
            return fast
        check_ternary(weight.codes)
        d = self._fp16_scale(np.float32(weight.beta), lossy)
        trits = (weight.codes.view(np.uint8) + np.uint8(1)).reshape(-1, QK_K)  # a new array
        blocks = np.empty((trits.shape[0], self.spec.type_size), dtype=np.uint8)
        blocks[:, :-D_BYTES] = self._pack(trits)
        nonzero = np.any(trits != 1, axis=1)
        scales = np.where(nonzero, d, np.float16(0)).astype("<f2")
        blocks[:, -D_BYTES:] = scales.view(np.uint8).reshape(-1, D_BYTES)
        return blocks.reshape(-1)

    def _encode_fast(self, weight: TernaryWeight, lossy: bool) -> np.ndarray | None:
        """The compiled encoder, or None: then the reference runs and raises what it finds first."""
        if not fastpath.compiled():
            return None
        try:
            d = self._fp16_scale(np.float32(weight.beta), lossy)
        except (NonFiniteWeight, ScaleNotRepresentable):
            return None
        return fastpath.tq_encode(self.fast_kind, self.spec.type_size, weight, d)

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        """Codes, and beta = the common d of the non-zero blocks (or `beta=`, else ZERO_BETA,
        when every block is zero). Blocks that disagree on d are not one ternary tensor; a d
        that is NaN, Inf, zero or negative is refused."""
        flat = self._check_blob(data, shape)
        fast = fastpath.tq_decode(self.fast_kind, self.spec.type_size, flat, shape)
        if fast is not None:
            codes, d_bits = fast
            found = None if d_bits is None else np.float32(np.uint16(d_bits).view(np.float16))
        else:
            codes, found = self._decode_reference(flat, shape)
        if found is None:  # every block is zero: the tensor carries no beta
            return TernaryWeight(codes, ZERO_BETA if beta is None else self.read_beta(beta, codes))
        self.check_given_beta(found, beta)
        return TernaryWeight(codes, self.read_beta(found, codes))

    def _decode_reference(self, flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.float32 | None]:
        blocks = flat.reshape(-1, self.spec.type_size)
        trits = self._unpack(blocks[:, :-D_BYTES])
        d_bits = np.ascontiguousarray(blocks[:, -D_BYTES:]).view("<u2").reshape(-1)
        nonzero = np.any(trits != 1, axis=1)
        found = self._common_d(d_bits[nonzero], shape)
        trits -= np.uint8(1)  # 0/1/2 -> 255/0/1, i.e. int8 -1/0/1
        return trits.view(np.int8).reshape(shape), found

    def _fp16_scale(self, beta: np.float32, lossy: bool) -> np.float16:
        if not np.isfinite(beta):
            raise NonFiniteWeight(f"{self.name} cannot store beta {beta!r}")
        with np.errstate(over="ignore"):
            half = np.float16(beta)
        if not np.isfinite(half) or (half == 0 and beta != 0):
            raise ScaleNotRepresentable(
                f"{self.name} stores beta as fp16 d; beta {float(beta)!r} is outside fp16's range "
                f"(nonzero magnitudes 2**-24 .. 65504)"
            )
        if np.float32(half) != beta and not lossy:
            raise ScaleNotRepresentable(
                f"{self.name} stores beta as fp16 d; beta {float(beta)!r} is not exactly representable "
                f"(nearest fp16 {float(half)!r}, relative error {abs(float(half) / float(beta) - 1):.2e}); "
                f"pass lossy=True to round"
            )
        return half

    def _common_d(self, d_bits: np.ndarray, shape: tuple[int, int]) -> np.float32 | None:
        """The one d all non-zero blocks share, as float32; None when there is none."""
        if d_bits.size == 0:
            return None
        if np.any(d_bits != d_bits[0]):
            values, counts = np.unique(d_bits, return_counts=True)
            top = values[np.argmax(counts)]
            raise NotTernary(
                f"{d_bits.size - int(counts.max())} of {d_bits.size} non-zero {self.name} blocks have a d "
                f"other than the most common {float(top.view(np.float16))!r} ({values.size} distinct "
                f"values), shape {list(shape)}: not one ternary tensor with one beta"
            )
        return np.float32(d_bits[:1].view("<f2")[0])

    def _pack(self, trits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _unpack(self, qs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _tq_walk(name: str, block_bytes: int, block_codes, problems) -> Walk:
    """The kernel's reading of TQ bytes: per 256 elements the code bytes, then fp16 d (not read
    by the C; its one non-zero value is the tensor's beta, see kernel_formats)."""
    def beta(flat: np.ndarray, shape: tuple[int, int]) -> np.float32:
        return common_block_scale(name, flat.reshape(-1, block_bytes), block_bytes - D_BYTES, block_codes, shape)

    def codes(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> np.ndarray:
        return block_codes(flat.reshape(-1, block_bytes)).reshape(shape)
    return Walk(beta, problems, codes)


def _tq2_kernel_codes(blocks: np.ndarray) -> np.ndarray:
    """int8 codes [n, 256]: element 128h + 32n + m at bits 2n of byte 32h + m."""
    n = blocks.shape[0]
    qs = blocks[:, :64].reshape(n, 2, 1, 32)  # [block, h, n, m]
    return (((qs >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3).reshape(n, 256)).astype(np.int8) - 1


def _tq2_problems(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> list[ByteRun]:
    return [ByteRun("codes are 3", 0, shape[0] * shape[1] // QK_K, 64, 66, FIELD_IS_3, "field3")]


class TQ2_0(_TQ):
    fast_kind = "tq2"
    kernel_walk = _tq_walk("tq2_0", 66, _tq2_kernel_codes, _tq2_problems)
    spec = LayoutSpec(
        name="tq2_0",
        block_size=QK_K,
        type_size=GGML_QUANT_SIZES[GGMLQuantizationType.TQ2_0][1],  # 64 + 2
        scale="block:f16",
        source="llama.cpp ggml-common.h block_tq2_0; gguf-py quants.py TQ2_0",
        type_name="TQ2_0",
        type_ids={"mainline": int(GGMLQuantizationType.TQ2_0)},
        file_type=37,
        runtimes=("llama.cpp", "bitnet.cpp"),
        beta_rounding="fp16",
        kernel="tq2_0",
        kernel_id=3,
    )

    def _pack(self, trits: np.ndarray) -> np.ndarray:
        quarters = trits.reshape(-1, 2, 4, 32)  # [block, half, n, m]: element 128h + 32n + m
        qs = quarters[:, :, 0].copy()
        for n in range(1, 4):
            qs |= quarters[:, :, n] << np.uint8(2 * n)
        return qs.reshape(-1, 64)

    def _unpack(self, qs: np.ndarray) -> np.ndarray:
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]
        codes = (qs.reshape(-1, 2, 1, 32) >> shifts) & np.uint8(3)
        bad = int(np.count_nonzero(codes == 3))
        if bad:
            raise NotTernary(f"{bad} of {codes.size} {self.name} codes are 3 (no ternary value)")
        return codes.reshape(-1, QK_K)


# ceil(v * 256 / 243) for every base-3 value v of five trits.
TRIT_BYTE = ((np.arange(243) * 256 + 242) // 243).astype(np.uint8)
# Trit n (most significant first) of every byte value, as the C and gguf-py decoders read it.
BYTE_TRITS = np.array(
    [[((b * 3**n) % 256 * 3) >> 8 for n in range(5)] for b in range(256)], dtype=np.uint8
)
QS_VALID = np.isin(np.arange(256), TRIT_BYTE)
QH_VALID = np.isin(np.arange(256), TRIT_BYTE[::3])  # qh's fifth trit is always 0


def _base3(groups: np.ndarray) -> np.ndarray:
    """[blocks, trits, width] -> [blocks, width] values, the first trit most significant."""
    value = groups[:, 0].copy()
    for n in range(1, groups.shape[1]):
        value *= np.uint8(3)
        value += groups[:, n]
    return value


# The kernel's own tables: a byte holds v (five trits, 0..242) as ceil(v * 256 / 243); qh's
# fifth trit is 0.
_KERNEL_TRIT_BYTES = (np.arange(243) * 256 + 242) // 243
TQ1_QS_BAD = byte_table(~np.isin(np.arange(256), _KERNEL_TRIT_BYTES))
TQ1_QH_BAD = byte_table(~np.isin(np.arange(256), _KERNEL_TRIT_BYTES[::3]))


def _tq1_kernel_codes(blocks: np.ndarray) -> np.ndarray:
    """int8 codes [n, 256] of 48 + 4 base-3 bytes (5 / 4 trits, the first most significant)."""
    n = blocks.shape[0]
    pow3 = np.array([1, 3, 9, 27, 81], np.uint16)
    trits = ((blocks[:, :52, None].astype(np.uint16) * pow3) & 255) * 3 >> 8  # [block, byte, n]
    codes = np.empty((n, 256), np.int8)
    codes[:, :160] = trits[:, :32].transpose(0, 2, 1).reshape(n, 160)      # m + 32n
    codes[:, 160:240] = trits[:, 32:48].transpose(0, 2, 1).reshape(n, 80)  # 160 + m + 16n
    codes[:, 240:] = trits[:, 48:52, :4].transpose(0, 2, 1).reshape(n, 16)  # 240 + j + 4n
    return codes - 1


def _tq1_problems(flat: np.ndarray, shape: tuple[int, int], tiling: object) -> list[ByteRun]:
    nblocks = shape[0] * shape[1] // QK_K
    return [ByteRun("bytes are no base-3 trits", 0, nblocks, 48, 54, TQ1_QS_BAD),
            ByteRun("qh bytes are no base-3 trits", 48, nblocks, 4, 54, TQ1_QH_BAD)]


class TQ1_0(_TQ):
    fast_kind = "tq1"
    kernel_walk = _tq_walk("tq1_0", 54, _tq1_kernel_codes, _tq1_problems)
    spec = LayoutSpec(
        name="tq1_0",
        block_size=QK_K,
        type_size=GGML_QUANT_SIZES[GGMLQuantizationType.TQ1_0][1],  # 48 + 4 + 2
        scale="block:f16",
        source="llama.cpp ggml-common.h block_tq1_0; gguf-py quants.py TQ1_0",
        type_name="TQ1_0",
        type_ids={"mainline": int(GGMLQuantizationType.TQ1_0)},
        file_type=36,
        runtimes=("llama.cpp", "bitnet.cpp"),
        beta_rounding="fp16",
        kernel="tq1_0",
        kernel_id=4,
    )

    def _pack(self, trits: np.ndarray) -> np.ndarray:
        n = trits.shape[0]
        head = _base3(trits[:, :160].reshape(n, 5, 32))
        middle = _base3(trits[:, 160:240].reshape(n, 5, 16))
        tail = _base3(trits[:, 240:].reshape(n, 4, 4)) * np.uint8(3)
        return TRIT_BYTE[np.concatenate([head, middle, tail], axis=1)]

    def _unpack(self, qs: np.ndarray) -> np.ndarray:
        bad = int(np.count_nonzero(~QS_VALID[qs[:, :48]]) + np.count_nonzero(~QH_VALID[qs[:, 48:]]))
        if bad:
            raise NotTernary(
                f"{bad} of {qs.size} {self.name} bytes are not the base-3 encoding of any trits "
                f"(never written by a quantizer)"
            )
        n = qs.shape[0]
        trits = BYTE_TRITS[qs]  # [block, byte, trit]
        head = trits[:, :32].transpose(0, 2, 1).reshape(n, 160)
        middle = trits[:, 32:48].transpose(0, 2, 1).reshape(n, 80)
        tail = trits[:, 48:, :4].transpose(0, 2, 1).reshape(n, 16)
        return np.concatenate([head, middle, tail], axis=1)
