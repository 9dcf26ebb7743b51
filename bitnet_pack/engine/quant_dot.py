"""A float matrix stored in a ggml block type (Q8_0, Q6_K, Q5_K, Q4_K: a quantized token_embd /
output) read and multiplied as ggml's x86 CPU backend does it, for `--numerics bitnet.cpp`.

* Rows (the embedding lookup, `get_rows`) are dequantize_row_* of ggml-quants.c, rounding as
  the C: Q4_K/Q5_K's `d1 * q - m1` is one fused multiply-add (-march=native builds contract
  it), Q6_K's `(d * sc) * q`, Q8_0's `d * q`.
* The product with activations x (`mul_mat`, one row at a time, as llama.cpp runs the output
  projection) quantizes x to the type's `vec_dot_type` first -- Q8_K for the K-quants
  (quantize_row_q8_K_ref: d = max / -127 from the first largest |x|), Q8_0 for Q8_0 (the
  AVX2 quantize_row_q8_0: id = 127 / amax, round half to even) -- and sums integer products
  in eight int32 lanes per block (the AVX2 vec_dot_*: lane k holds the elements with
  e % 32 in 4k..4k+3, times their sub-block scale). Each block adds `d * float(lane)` to
  eight float lanes with one rounding (FMA); the lanes fold as hsum_float_8:
  ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)). Q4_K adds the mins' four lanes folded
  ((m0+m2) + (m1+m3)), Q5_K their scalar sum (fused, one block after the other).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UsageError
from ..formats.floatmath import fmaf
from ..formats.quant_floats import EMBEDDING_TYPES, QK_K, nearest_int
from . import kernel as _kernel

F32 = np.float32
GGML_NAMES = {spec[0].name: name for name, spec in EMBEDDING_TYPES.items()}  # "Q6_K" -> "q6_k"
ROW_BLOCK = 1024  # weight rows unpacked at a time (bounds the int32 temporaries)


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(F32)[..., 0]


def _k_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins of K-quant scales[12] (get_scale_min_k4) -> int32 [..., 8]."""
    s = scales.astype(np.int32)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | (s[..., 0:4] >> 6) << 4], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | (s[..., 4:8] >> 6) << 4], axis=-1)
    return sc, mn


def unpack(rows: np.ndarray, type_name: str) -> dict[str, np.ndarray]:
    """uint8 [R, row bytes] -> q (int32 [R, nb, block] levels as the dot product reads them),
    d (f32 [R, nb]) and per type: sc (per 16 or 32 values), dmin and mins."""
    _, block, size = EMBEDDING_TYPES[type_name]
    b = rows.reshape(rows.shape[0], -1, size)
    if type_name == "q8_0":
        return {"q": b[..., 2:].view(np.int8).astype(np.int32), "d": _f16(b[..., 0:2])}
    if type_name == "q6_k":
        ql, qh = b[..., 0:128].astype(np.int32), b[..., 128:192].astype(np.int32)
        q = np.empty(b.shape[:2] + (2, 4, 32), np.int32)
        for half in range(2):
            lo, hi = ql[..., 64 * half: 64 * half + 64], qh[..., 32 * half: 32 * half + 32]
            for c in range(4):
                nibble = (lo[..., 32 * (c % 2): 32 * (c % 2) + 32] >> (4 * (c // 2))) & 0xF
                q[..., half, c, :] = (nibble | ((hi >> (2 * c)) & 3) << 4) - 32
        return {"q": q.reshape(b.shape[:2] + (QK_K,)), "sc": b[..., 192:208].view(np.int8).astype(np.int32),
                "d": _f16(b[..., 208:210])}
    sc, mins = _k_scales_mins(b[..., 4:16])
    qs = b[..., -128:].astype(np.int32).reshape(b.shape[:2] + (4, 32))
    q = np.stack([qs & 0xF, qs >> 4], axis=3)  # [R, nb, 4, 2, 32]: sub-block 2j, 2j+1
    if type_name == "q5_k":
        qh = b[..., 16:48].astype(np.int32)
        bits = np.stack([(qh >> bit) & 1 for bit in range(8)], axis=-2).reshape(b.shape[:2] + (4, 2, 32))
        q = q + (bits << 4)
    return {"q": q.reshape(b.shape[:2] + (QK_K,)), "sc": sc, "mins": mins, "d": _f16(b[..., 0:2]),
            "dmin": _f16(b[..., 2:4])}


def dequantize(rows: np.ndarray, type_name: str) -> np.ndarray:
    """dequantize_row_* of ggml-quants.c: uint8 [R, row bytes] -> float32 [R, cols]."""
    u = unpack(rows, type_name)
    q = u["q"].astype(F32)
    if type_name == "q8_0":
        values = u["d"][..., None] * q
    elif type_name == "q6_k":
        scale = u["d"][..., None] * u["sc"].astype(F32)  # [R, nb, 16]
        values = np.repeat(scale, 16, axis=-1) * q
    else:
        d1 = np.repeat(u["d"][..., None] * u["sc"].astype(F32), 32, axis=-1)
        m1 = np.repeat(u["dmin"][..., None] * u["mins"].astype(F32), 32, axis=-1)
        values = fmaf(d1, q, -m1)
    return values.reshape(rows.shape[0], -1)


# ---- activations ----------------------------------------------------------------------------


def quantize_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q8_K_ref: x [N, K] -> (d [N, nb] f32, qs int32 [N, nb, 256])."""
    blocks = np.ascontiguousarray(x, F32).reshape(x.shape[0], -1, QK_K)
    pick = np.argmax(np.abs(blocks), axis=-1)
    peak = np.take_along_axis(blocks, pick[..., None], axis=-1)[..., 0]
    zero = peak == 0
    iscale = F32(-127.0) / np.where(zero, F32(1), peak)
    qs = np.minimum(127, nearest_int(iscale[..., None] * blocks))
    d = np.where(zero, F32(0), F32(1) / iscale)
    return d.astype(F32), np.where(zero[..., None], 0, qs)


def quantize_q8_0_act(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q8_0 (AVX2): x [N, K] -> (d [N, nb] as f16 values, qs int32 [N, nb, 32])."""
    blocks = np.ascontiguousarray(x, F32).reshape(x.shape[0], -1, 32)
    amax = np.abs(blocks).max(axis=-1)
    d = (amax / F32(127)).astype(np.float16).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, F32(127) / amax, F32(0))
    return d, np.rint(blocks * inv[..., None]).astype(np.int32)


# ---- the dot products -------------------------------------------------------------------------


def _lanes(products: np.ndarray) -> np.ndarray:
    """int [..., nb, block] products -> the 8 int32 lanes per block: e % 32 in 4k..4k+3."""
    shape = products.shape
    return products.reshape(shape[:-1] + (shape[-1] // 32, 8, 4)).sum(axis=(-3, -1))


def _hsum8(acc: np.ndarray) -> np.ndarray:
    r = acc[..., 4:8] + acc[..., 0:4]
    return (r[..., 0] + r[..., 2]) + (r[..., 1] + r[..., 3])


def _accumulate(d: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """acc = fma(d_block, float(lane), acc) over the blocks in order: [..., nb] x [..., nb, L]."""
    acc = np.zeros(lanes.shape[:-2] + (lanes.shape[-1],), F32)
    for i in range(lanes.shape[-2]):
        acc = fmaf(d[..., i, None], lanes[..., i, :].astype(F32), acc)
    return acc


def _row_block_dot(u: dict, type_name: str, act: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One activation row's (d [nb], qs [nb, block]) against unpacked weight rows -> [R]."""
    yd, yq = act
    if type_name == "q8_0":
        return _hsum8(_accumulate(u["d"] * yd, _lanes(u["q"] * yq)))
    nb = yd.shape[0]
    per = 16 if type_name == "q6_k" else 32
    scale = np.repeat(u["sc"], per, axis=-1)  # [R, nb, 256]
    yq = yq.reshape(nb, QK_K)
    total = _hsum8(_accumulate(yd * u["d"], _lanes(scale * u["q"] * yq)))
    if type_name == "q6_k":
        return total
    dmin = -yd * u["dmin"]  # [R, nb]
    sums32 = yq.reshape(nb, 8, 32).sum(axis=-1)  # the bsums, paired
    mins = u["mins"] * sums32  # [R, nb, 8]
    if type_name == "q4_k":
        m = _accumulate(dmin, mins.reshape(mins.shape[:-1] + (4, 2)).sum(axis=-1))
        return total + ((m[..., 0] + m[..., 2]) + (m[..., 1] + m[..., 3]))
    summs = np.zeros(total.shape, F32)
    for i in range(nb):
        summs = fmaf(dmin[..., i], mins[..., i, :].sum(axis=-1).astype(F32), summs)
    return total + summs


def matmul(rows: np.ndarray, type_name: str, x: np.ndarray) -> np.ndarray:
    """x [N, K] float32 times the stored matrix (uint8 [V, row bytes], K columns) -> [N, V],
    each output as ggml's vec_dot of that type with x quantized to its vec_dot_type."""
    if type_name not in EMBEDDING_TYPES:
        raise UsageError(f"no ggml dot product for {type_name!r}; known: {', '.join(EMBEDDING_TYPES)}")
    x = np.ascontiguousarray(x, F32)
    _, block, size = EMBEDDING_TYPES[type_name]
    if x.ndim != 2 or x.shape[1] % block or rows.shape[1] != x.shape[1] // block * size:
        raise ShapeError(f"{type_name} matmul: weights {list(rows.shape)} bytes, x {list(x.shape)}")
    if _kernel.BACKEND != "numpy" and getattr(_kernel._ext, "quant_matmul", None) is not None:
        y = np.empty((x.shape[0], rows.shape[0]), F32)  # kernels/quant_floats.c: the same bits
        _kernel._ext.quant_matmul(int(EMBEDDING_TYPES[type_name][0]), np.ascontiguousarray(rows, np.uint8),
                                  x.shape[1], x, y)
        return y
    return reference_matmul(rows, type_name, x)


def reference_matmul(rows: np.ndarray, type_name: str, x: np.ndarray) -> np.ndarray:
    """The numpy reference of `matmul` (shapes checked there)."""
    act = quantize_q8_0_act(x) if type_name == "q8_0" else quantize_q8_k(x)
    y = np.empty((x.shape[0], rows.shape[0]), F32)
    for start in range(0, rows.shape[0], ROW_BLOCK):
        u = unpack(rows[start:start + ROW_BLOCK], type_name)
        for t in range(x.shape[0]):
            y[t, start:start + ROW_BLOCK] = _row_block_dot(u, type_name, (act[0][t], act[1][t]))
    return y


class QuantTensor:
    """A token_embd / output matrix held as its file's ggml blocks (uint8 [rows, row bytes]);
    `np.asarray(t)` gives ggml's dequantized float32 values."""

    def __init__(self, type_name: str, blocks: np.ndarray):
        self.kind, self.blocks = type_name, blocks
        _, block, size = EMBEDDING_TYPES[type_name]
        self.shape = (blocks.shape[0], blocks.shape[1] // size * block)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = dequantize(np.asarray(self.blocks), self.kind)
        return values if dtype is None else values.astype(dtype, copy=False)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return dequantize(np.asarray(self.blocks[ids]), self.kind)

    def values(self) -> np.ndarray:
        """All values as float32, kept after the first call (the reference numerics' lm_head)."""
        if not hasattr(self, "_values"):
            self._values = np.asarray(self)
        return self._values

    def ggml_matmul(self, x: np.ndarray) -> np.ndarray:
        """x [N, K] -> [N, V] through ggml's quantized dot product (see `matmul`)."""
        return matmul(np.asarray(self.blocks), self.kind, x)


def quant_tensor(value: object) -> QuantTensor | None:
    """A stored tensor in one of the block types above (checkpoints.gguf.DequantizedTensor), as
    its blocks; None for anything else."""
    qtype = getattr(value, "qtype", None)
    blocks = getattr(value, "rows", None)
    if qtype is None or not isinstance(blocks, np.ndarray) or qtype.name not in GGML_NAMES:
        return None
    return QuantTensor(GGML_NAMES[qtype.name], blocks)
