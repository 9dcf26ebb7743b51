"""`iq1_bn`, `iq2_bn`, `iq2_bn_r4`: ik_llama.cpp's BitNet types (ggml types 134, 135, 335).

Every row of W [M, K] (K % 64 == 0) starts with its own scale d, then K/64 blocks of 64
weights; the value is d_row * (c - 1), with code c = t + 1 in {0, 1, 2}. ik's quantizer
(`IQ1BNQuantizer`) takes d = max|x| of the row and codes |x| < d/2 as 1, else the sign: for a
ternary row t * beta that is d = beta and c = t + 1. An all-zero row gets d = 0 and every
code 2 (|0| < 0 is false, and so is 0 < 0): `encode` writes exactly that, `decode` reads a
d = 0 row as zeros whatever its codes. ik's own `to_float` forgets the row scale (it decodes
the scale bytes as codes); we apply it.

IQ2_BN row, 4 + K/4 bytes:   [f32 d] [block 0: 16 bytes] [block 1] ...
    byte j of a block (j = 0..15):   bit 7 6    | 5 4      | 3 2      | 1 0
                                         c[j+48] | c[j+32]  | c[j+16]  | c[j]

IQ1_BN row, 2 + 13*K/64 bytes:  [fp16 d] [block 0: ql[12], extra] [block 1] ...
    the block is four groups of 16 (i16 = 0..3); group i16 puts weights 16*i16 + 5k + j
    (k = 0..2, j = 0..4) in ql[3*i16 + k] and its 16th weight in `extra`:
        ql[3*i16 + k] = ceil(256 * v / 243),  v = sum_j 3**j * c[16*i16 + 5k + j]   (0..242)
        extra         = ceil(256 * v / 243),  v = sum_i16 3**i16 * c[16*i16 + 15]    (0..80)
    digit j of a byte b reads back as ((b * 3**(4-j)) mod 256) * 3 >> 8 (tq.BYTE_TRITS).
    d is fp16 (round to nearest even): a fp32 beta is rounded, by at most 2**-11 relative.

IQ2_BN_R4, rows in groups of four (M % 4 == 0), 16 + K bytes per group (= 4 IQ2_BN rows):
    [f32 d0][f32 d1][f32 d2][f32 d3]  then per 64 columns (ib) 64 bytes:
    byte 64*ib + 16*l + 4*r + i  (l, r, i = 0..3), bits 2*m, holds
        c of row 4g + r, column 64*ib + 16*l + 4*m + i
    It is IQ2_BN with the bytes permuted (ik's `--repack` / `-rtr`).

Facts for the registry (ik_llama.cpp 8337e4c, ../shared/reference/ik-llama-formats.md).
"""
from __future__ import annotations

import numpy as np

from ...errors import NotTernary, ScaleNotRepresentable, ShapeError
from ..ternary import ZERO_BETA, TernaryWeight, check_ternary
from . import Layout, LayoutSpec
from .iq_bn_kernel import EXTRA_VALID, QL_VALID, walk
from .tq import BYTE_TRITS, TRIT_BYTE

# ---- plain facts (the entries below hold the per-type ones) ------------------------------
BLOCK = 64
IK_RUNTIME = "ik_llama.cpp"  # also the --numerics mode that runs its activation blocks (runtime_linear)
IK_TABLE = IK_RUNTIME  # the type-id table of ik's own ids (ggml.h enum ggml_type; no runtime reuses them)
# --target: ik reads bitnet.cpp's arch names and tokenizer keys (its 2B4T files are bitnet-25);
# mainline's `bitnet` arch would run 2B4T with SiLU there. The types run only in ik_llama.cpp.
NAMING_TARGET = "bitnet.cpp"
IK_ARCH_2B4T = "bitnet-25"  # what ik's own files carry (from bitnet.cpp's I2_S); ik also runs bitnet-b1.58
# What ik_llama.cpp cannot run among the other layouts (measured, reference section 4).
IK_CANNOT_RUN = {
    "i2_s": "ik_llama.cpp loads I2_S but has no I2_S matmul: it prints garbage with no error; "
            "requantize there (llama-quantize --allow-requantize) or convert to iq2_bn / iq1_bn / iq2_bn_r4",
    "i2_s_arm": "ik_llama.cpp has no I2_S matmul (garbage output) and reads I2_S only in x86 128-blocks",
    "tq1_0": "ik_llama.cpp has no type 34 (TQ1_0): its loader crashes (SIGFPE) parsing the file",
    "tq2_0": "ik_llama.cpp has no type 35 (TQ2_0): its loader crashes (SIGFPE) parsing the file",
    "tl1": "ik_llama.cpp has no type 38 (TL1): it cannot load the file",
    "tl2": "ik_llama.cpp reads type 39 as MXFP4, not TL2: the load fails (data not within the file bounds)",
}
SMALL_K_WARNING = ("ik_llama.cpp's IQ1_BN/IQ2_BN matmul quantizes activations to Q8_K64, which aborts for "
                   "in_features < 512 (GGML_ASSERT k >= 8*QK_IQ1BN); iq2_bn_r4 has no such limit")
EMBEDDING_NOTE = ("token_embd is written {type}: ik's llama-quantize picks Q6_K (Q8_0 when ne0 % 256 != 0) for a "
                  "tied embedding, with its own Q6_K quantizer; F16 loads in ik just as well and is more accurate "
                  "(ik's -embd_f16 files, --token-embedding-type f16, are this output)")
QUANT_EMBEDDING_NOTE = ("token_embd is written {type} by ggml's reference quantizer; ik's llama-quantize uses its own "
                        "Q6_K (a modified make_qx_quants), so its default files' embedding bytes can differ")

P3 = np.array([1, 3, 9, 27, 81], np.int32)
SHIFTS = np.array([0, 2, 4, 6], np.uint8)


def ik_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ik's quantizer on float rows x [M, K]: (codes uint8 0..2, d f32 [M]) as IQ1BNQuantizer does."""
    x = np.asarray(x, np.float32)
    d = np.abs(x).max(axis=1).astype(np.float32)
    small = np.abs(x) < (np.float32(0.5) * d)[:, None]
    return np.where(small, 1, np.where(x < 0, 0, 2)).astype(np.uint8), d


def ternary_codes(weight: TernaryWeight) -> tuple[np.ndarray, np.ndarray]:
    """The same for t * beta without forming floats: d = beta on rows with a non-zero code, else
    0, and an all-zero row coded all 2 (ik's rule)."""
    check_ternary(weight.codes)
    codes = (weight.codes.view(np.uint8) + np.uint8(1))
    nonzero = np.any(weight.codes != 0, axis=1)
    codes[~nonzero] = 2
    return codes, np.where(nonzero, np.float32(weight.beta), np.float32(0)).astype(np.float32)


class _RowScaled(Layout):
    """Shared by the three: rows of [d][blocks]; subclasses pack codes and d."""

    d_dtype = "<f4"

    def check_shape(self, shape: tuple[int, ...], tensor: str | None = None) -> None:
        super().check_shape(shape, tensor)
        if self.spec.name.endswith("_r4") and shape[0] % 4:
            raise ShapeError(f"{self.name} interleaves rows in fours: needs out_features % 4 == 0, got "
                             f"{shape[0]} (shape {list(shape)})", tensor=tensor)

    # -- what the GGUF sink and inspect ask a layout (layouts.Layout hooks) ----------------
    activation_blocks = "k64"  # how ik quantizes activations for it (iq_bn_numerics.py)

    def target_refusal(self, target: str, also: tuple[str, ...] = ()) -> str | None:
        if target == NAMING_TARGET:
            return None
        return (f"--outtype {self.name} is for ik_llama.cpp, which loads bitnet.cpp's arch names "
                f"(--target bitnet.cpp, the default), not {target}'s")

    def gguf_arch(self, family, target: str, arch: str | None) -> str | None:
        """ik runs 2B4T through bitnet.cpp's arch names (relu2 and sub-norms): bitnet-25, as ik's files."""
        return arch or (IK_ARCH_2B4T if IK_ARCH_2B4T in family.gguf_archs.get(NAMING_TARGET, ()) else None)

    def write_notes(self, entries: list, embedding_type: str) -> list[str]:
        spec = self.spec
        notes = [f"{spec.type_name} (type {spec.type_ids[IK_TABLE]}, file type {spec.file_type}) runs only in "
                 "ik_llama.cpp; bitnet.cpp and llama.cpp do not know it",
                 (EMBEDDING_NOTE if embedding_type in ("f16", "bf16", "f32") else QUANT_EMBEDDING_NOTE)
                 .format(type=embedding_type.upper())]
        small = sorted({e.shape[1] for e in entries if e.kind == "linear" and e.shape[1] < 512})
        if self.activation_blocks == "k64" and small:
            notes.append(f"{SMALL_K_WARNING}: this model has in_features {', '.join(map(str, small))}")
        return notes

    def inspect_notes(self) -> list[str]:
        return [f"{self.spec.type_name} runs only in ik_llama.cpp; bitnet.cpp and llama.cpp do not know "
                f"type {self.spec.type_ids[IK_TABLE]}"]

    def notes_about(self, other: Layout) -> list[str]:
        return [IK_CANNOT_RUN[other.name]] if other.name in IK_CANNOT_RUN else []

    def runtime_linear(self, numerics: str):
        """ik's own activation blocks under `--numerics ik_llama.cpp` (iq_bn_numerics.py)."""
        if numerics != IK_RUNTIME:
            return None
        from ...engine.iq_bn_numerics import ik_linear

        return lambda matrix, x: ik_linear(matrix, x, self.activation_blocks)

    def encode(self, weight: TernaryWeight, *, lossy: bool = False) -> np.ndarray:
        """The GGUF tensor bytes (flat uint8); `lossy` allows IQ1_BN's fp16 rounding of beta."""
        self.check_shape(weight.shape)
        codes, d = ternary_codes(weight)
        return self.pack(codes, self.row_scales(d, lossy))

    def encode_float(self, x: np.ndarray) -> np.ndarray:
        """ik's llama-quantize on float rows (any values, ternary or not)."""
        self.check_shape(np.shape(x))
        codes, d = ik_codes(x)
        with np.errstate(over="ignore"):
            return self.pack(codes, d.astype(self.d_dtype))

    def row_scales(self, d: np.ndarray, lossy: bool) -> np.ndarray:
        return d.astype(self.d_dtype)

    def decode(self, data: np.ndarray, shape: tuple[int, int], beta: float | None = None) -> TernaryWeight:
        """Codes times each row's d as one ternary tensor: d = 0 rows are zero; the other rows
        with a non-zero code must share one d (it is beta)."""
        flat = self._check_blob(data, shape)
        codes, d = self.unpack(flat, shape)
        t = codes.view(np.int8) - np.int8(1)
        t[d == 0] = 0
        live = np.any(t != 0, axis=1)
        found = np.unique(d[live].astype(np.float32))
        if found.size > 1:
            raise NotTernary(f"{found.size} different row scales on the non-zero rows of a {self.name} tensor "
                             f"(e.g. {float(found[0])!r}, {float(found[1])!r}), shape {list(shape)}: not one "
                             "ternary tensor with one beta")
        if found.size == 0:
            return TernaryWeight(t, ZERO_BETA if beta is None else self.read_beta(beta, t))
        self.check_given_beta(found[0], beta)
        return TernaryWeight(t, self.read_beta(found[0], t))

    def row_d(self, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The stored row scales, float32 [M] (IQ1_BN's fp16 widened)."""
        raise NotImplementedError

    def pack(self, codes: np.ndarray, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def unpack(self, flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _two_bit_fields(qs: np.ndarray, what: str, shape: tuple[int, int]) -> np.ndarray:
    """[..., bytes] -> [..., 4, bytes] codes at bits 0, 2, 4, 6; a code 3 is refused."""
    codes = (qs[..., None, :] >> SHIFTS[:, None]) & np.uint8(3)
    bad = int(np.count_nonzero(codes == 3))
    if bad:
        raise NotTernary(f"{bad} of {shape[0] * shape[1]} {what} codes are 3 (no ternary value), "
                         f"shape {list(shape)}")
    return codes


class IQ2BN(_RowScaled):
    spec = LayoutSpec(
        name="iq2_bn", block_size=BLOCK, type_size=16, row_bytes=4, scale="row:f32",
        source="ik_llama.cpp ggml-common.h block_iq2_bn; iqk_quantize.cpp quantize_one_row_2bn",
        type_name="IQ2_BN", type_ids={IK_TABLE: 135}, file_type=137, runtimes=(NAMING_TARGET,),
        kernel="iq2_bn", kernel_id=8)
    kernel_walk = walk("iq2_bn")

    def pack(self, codes: np.ndarray, d: np.ndarray) -> np.ndarray:
        m, k = codes.shape
        c = codes.reshape(m, k // 64, 4, 16)  # [row, block, l, j]: weight 16l + j
        qs = c[:, :, 0] | c[:, :, 1] << 2 | c[:, :, 2] << 4 | c[:, :, 3] << 6
        out = np.empty((m, 4 + k // 4), np.uint8)
        out[:, :4] = d.astype("<f4").view(np.uint8).reshape(m, 4)
        out[:, 4:] = qs.reshape(m, k // 4)
        return out.reshape(-1)

    def unpack(self, flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        m, k = shape
        rows = flat.reshape(m, 4 + k // 4)
        codes = _two_bit_fields(rows[:, 4:].reshape(m, k // 64, 16), self.name, shape)
        return codes.reshape(m, k), self.row_d(flat, shape)

    def row_d(self, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        m, k = shape
        return np.ascontiguousarray(flat.reshape(m, 4 + k // 4)[:, :4]).view("<f4").reshape(m).astype(np.float32)


class IQ2BNR4(_RowScaled):
    spec = LayoutSpec(
        name="iq2_bn_r4", block_size=BLOCK, type_size=16, row_bytes=4, scale="row:f32",
        source="ik_llama.cpp iqk_quantize.cpp quantize_iq2_bn_r4 / repack_iq2_bn",
        type_name="IQ2_BN_R4", type_ids={IK_TABLE: 335}, file_type=337, runtimes=(NAMING_TARGET,),
        kernel="iq2_bn_r4", kernel_id=9)
    kernel_walk = walk("iq2_bn_r4")
    activation_blocks = "k16"

    def pack(self, codes: np.ndarray, d: np.ndarray) -> np.ndarray:
        m, k = codes.shape
        c = codes.reshape(m // 4, 4, k // 64, 4, 4, 4)  # [g, r, ib, l, m, i]
        b = c[..., 0, :] | c[..., 1, :] << 2 | c[..., 2, :] << 4 | c[..., 3, :] << 6  # [g, r, ib, l, i]
        out = np.empty((m // 4, 16 + k), np.uint8)
        out[:, :16] = d.astype("<f4").view(np.uint8).reshape(m // 4, 16)
        out[:, 16:] = b.transpose(0, 2, 3, 1, 4).reshape(m // 4, k)  # [g, ib, l, r, i]
        return out.reshape(-1)

    def unpack(self, flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        m, k = shape
        b = flat.reshape(m // 4, 16 + k)[:, 16:].reshape(m // 4, k // 64, 4, 4, 4)  # [g, ib, l, r, i]
        codes = _two_bit_fields(b, self.name, shape)  # [g, ib, l, r, m, i]
        return codes.transpose(0, 3, 1, 2, 4, 5).reshape(m, k), self.row_d(flat, shape)

    def row_d(self, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        m, k = shape
        return np.ascontiguousarray(flat.reshape(m // 4, 16 + k)[:, :16]).view("<f4").reshape(m).astype(np.float32)


class IQ1BN(_RowScaled):
    spec = LayoutSpec(
        name="iq1_bn", block_size=BLOCK, type_size=13, row_bytes=2, scale="row:f16",
        source="ik_llama.cpp ggml-common.h block_iq1_bn; iqk_quantize.cpp quantize_one_row_1bn",
        type_name="IQ1_BN", type_ids={IK_TABLE: 134}, file_type=136, runtimes=(NAMING_TARGET,), beta_rounding="fp16",
        kernel="iq1_bn", kernel_id=7)
    kernel_walk = walk("iq1_bn")
    d_dtype = "<f2"

    def row_scales(self, d: np.ndarray, lossy: bool) -> np.ndarray:
        with np.errstate(over="ignore"):
            half = d.astype("<f2")
        bad = (~np.isfinite(half)) | ((half == 0) & (d != 0))
        if np.any(bad):
            raise ScaleNotRepresentable(f"{self.name} stores the row scale as fp16; beta {float(d[bad][0])!r} is "
                                        "outside fp16's range (nonzero magnitudes 2**-24 .. 65504)")
        if not lossy and np.any(half.astype(np.float32) != d):
            beta = float(d[half.astype(np.float32) != d][0])
            raise ScaleNotRepresentable(f"{self.name} stores the row scale as fp16; beta {beta!r} is not exactly "
                                        f"representable (nearest fp16 {float(np.float16(beta))!r}); pass lossy=True "
                                        "to round")
        return half

    def pack(self, codes: np.ndarray, d: np.ndarray) -> np.ndarray:
        m, k = codes.shape
        c = codes.reshape(m, k // 64, 4, 16).astype(np.int32)  # [row, block, i16, e]
        idx = (c[..., :15].reshape(m, k // 64, 4, 3, 5) * P3).sum(-1)  # [row, block, i16, k]
        out = np.empty((m, 2 + 13 * (k // 64)), np.uint8)
        out[:, :2] = d.astype("<f2").view(np.uint8).reshape(m, 2)
        blocks = out[:, 2:].reshape(m, k // 64, 13)
        blocks[..., :12] = TRIT_BYTE[idx].reshape(m, k // 64, 12)
        blocks[..., 12] = TRIT_BYTE[(c[..., 15] * P3[:4]).sum(-1)]
        return out.reshape(-1)

    def unpack(self, flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        m, k = shape
        blocks = flat.reshape(m, 2 + 13 * (k // 64))[:, 2:].reshape(m, k // 64, 13)
        bad = int(np.count_nonzero(~QL_VALID[blocks[..., :12]]) + np.count_nonzero(~EXTRA_VALID[blocks[..., 12]]))
        if bad:
            raise NotTernary(f"{bad} of {blocks.size} {self.name} bytes are not the base-3 encoding of any trits "
                             f"(never written by a quantizer), shape {list(shape)}")
        # digit j (weight 3**j) is BYTE_TRITS' trit 4 - j (most significant first)
        five = BYTE_TRITS[blocks[..., :12]][..., ::-1].reshape(m, k // 64, 4, 15)
        extra = BYTE_TRITS[blocks[..., 12]][..., :0:-1]  # [row, block, i16]
        codes = np.concatenate([five, extra[..., None]], axis=-1)
        return codes.reshape(m, k), self.row_d(flat, shape)

    def row_d(self, flat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        m, k = shape
        rows = flat.reshape(m, 2 + 13 * (k // 64))
        return np.ascontiguousarray(rows[:, :2]).view("<f2").reshape(m).astype(np.float32)


