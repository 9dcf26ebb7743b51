"""ggml's reference quantizers for float tensors (token_embd / output): Q8_0, Q6_K, Q5_K, Q4_K,
written as llama-quantize writes them without an importance matrix (ggml-quants.c
quantize_row_*_ref), vectorised over blocks in numpy, byte for byte.

The float rounding is ggml's C, step for step (tests compare every block with llama-quantize's
own files, fixtures/embd-quant):
* nearest_int(f) = bits(f + 12582912.f) & 0x7fffff - 0x400000: round half to even, in float32;
* every product, sum and quotient is one float32 operation in C's order; where gcc contracts
  `a*b + c` into one fused multiply-add (the x86-64 builds use -march=native, so FMA) we
  round once too (`_fma`), which is what makes the K-quants' scale search pick the same
  candidates as the C;
* f16 fields are round-to-nearest-even (F16C `vcvtps2ph`, numpy's float16 cast);
* Q8_0 is gguf-py's quantizer (roundf, half away from zero), equal to quantize_row_q8_0_ref.

Block layouts (QK_K = 256 values per super-block, little-endian f16):

    Q8_0  d:f16 | qs:int8[32]                                               34 bytes / 32
    Q6_K  ql:u8[128] | qh:u8[64] | scales:int8[16] | d:f16                  210 bytes / 256
    Q5_K  d:f16 | dmin:f16 | scales:u8[12] | qh:u8[32] | qs:u8[128]          176 bytes / 256
    Q4_K  d:f16 | dmin:f16 | scales:u8[12] | qs:u8[128]                      144 bytes / 256

    K-quant 6-bit scales (sc) and mins (m) of the 8 sub-blocks in scales[12]:
      j < 4:  scales[j] = sc_j (low 6 bits), scales[j+4] = m_j (low 6 bits)
      j >= 4: scales[j+4] = sc_j & 15 | (m_j & 15) << 4, and the top 2 bits of sc_j / m_j in
              bits 6-7 of scales[j-4] / scales[j]
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType, quants

from ..errors import ShapeError, UsageError
from .floatmath import fmaf

QK_K = 256
# --embedding-type name -> (ggml type, values per block, bytes per block)
EMBEDDING_TYPES = {
    "q8_0": (GGMLQuantizationType.Q8_0, 32, 34),
    "q6_k": (GGMLQuantizationType.Q6_K, QK_K, 210),
    "q5_k": (GGMLQuantizationType.Q5_K, QK_K, 176),
    "q4_k": (GGMLQuantizationType.Q4_K, QK_K, 144),
}
F32 = np.float32


def _fma(a, b, c) -> np.ndarray:
    """a*b + c as gcc contracts it (one rounding)."""
    return fmaf(a, b, c)


def nearest_int(f: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: the float32 sum with 1.5 * 2**23, its low mantissa bits."""
    val = (np.asarray(f, F32) + F32(12582912.0)).view(np.int32)
    return (val & 0x007FFFFF) - 0x00400000


def _f16_bits(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(x, F32).astype(np.float16).view(np.uint16)


def _f16_value(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(F32)


def quantize(values: np.ndarray, type_name: str) -> np.ndarray:
    """values [rows, cols] float32 -> uint8 [rows, bytes per row] in ggml's block type."""
    if type_name not in EMBEDDING_TYPES:
        raise UsageError(f"embedding type must be one of {', '.join(EMBEDDING_TYPES)}, got {type_name!r}")
    qtype, block, size = EMBEDDING_TYPES[type_name]
    values = np.ascontiguousarray(values, F32)
    if values.ndim != 2 or values.shape[1] % block:
        raise ShapeError(f"{type_name} needs rows of a multiple of {block} values, got shape {list(values.shape)}")
    rows = values.shape[0]
    if qtype == GGMLQuantizationType.Q8_0:
        return np.ascontiguousarray(quants.quantize(values, qtype)).reshape(rows, -1)
    blocks = values.reshape(-1, QK_K)
    if _compiled():  # kernels/quant_floats.c: the same bits, tested against this module
        out = np.empty((blocks.shape[0], size), np.uint8)
        _kernel()._ext.quantize_k(int(qtype), blocks, out)
        return out.reshape(rows, -1)
    return reference_quantize(blocks, type_name).reshape(rows, -1)


def reference_quantize(blocks: np.ndarray, type_name: str) -> np.ndarray:
    """The numpy reference of a K-quant: blocks [B, 256] float32 -> uint8 [B, block bytes]."""
    encode = {"q6_k": _q6_k, "q5_k": _q5_k, "q4_k": _q4_k}[type_name]
    return encode(np.ascontiguousarray(blocks, F32))


def _compiled() -> bool:
    return _kernel().BACKEND != "numpy" and getattr(_kernel()._ext, "quantize_k", None) is not None


# ---- Q6_K ---------------------------------------------------------------------------------


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL) over blocks x [B, n]: (scale [B],
    L [B, n] in 0..2*nmax-1)."""
    nb, n = x.shape
    pick = np.argmax(np.abs(x), axis=1)  # the first strict maximum of |x|
    peak = x[np.arange(nb), pick]
    amax = np.abs(peak)
    zero = amax < F32(1e-15)
    safe_peak = np.where(zero, F32(1), peak)
    w = x * x

    def sums(iscale):
        lv = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = lv.astype(F32)
        sumlx = np.zeros(nb, F32)
        suml2 = np.zeros(nb, F32)
        for i in range(n):
            sumlx = _fma(w[:, i] * x[:, i], lf[:, i], sumlx)
            suml2 = _fma(w[:, i] * lf[:, i], lf[:, i], suml2)
        return lv, sumlx, suml2

    iscale = F32(-nmax) / safe_peak
    lv, sumlx, suml2 = sums(iscale)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -_fma(F32(0.1), F32(step), F32(nmax)) / safe_peak
        lv2, sumlx, suml2 = sums(np.broadcast_to(iscale, (nb,)).astype(F32))
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        with np.errstate(divide="ignore", invalid="ignore"):
            new_scale = sumlx / suml2
        lv = np.where(better[:, None], lv2, lv)
        scale = np.where(better, new_scale, scale)
        best = np.where(better, scale * sumlx, best)
    scale = np.where(zero, F32(0), scale)
    levels = np.where(zero[:, None], 0, lv + nmax)
    return scale.astype(F32), levels


def _q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, levels = make_qx_quants(x.reshape(-1, 16), 32)
    scales, levels = scales.reshape(nb, 16), levels.reshape(nb, QK_K)
    pick = np.argmax(np.abs(scales), axis=1)
    max_scale = scales[np.arange(nb), pick]
    empty = np.abs(max_scale) < F32(1e-15)
    iscale = F32(-128.0) / np.where(empty, F32(1), max_scale)
    d_bits = _f16_bits(F32(1) / iscale)
    sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
    d = _f16_value(d_bits)[:, None] * sc.astype(F32)  # [nb, 16]
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(nearest_int(x.reshape(nb, 16, 16) / d[:, :, None]), -32, 31) + 32
    levels = np.where((d != 0)[:, :, None], requant, levels.reshape(nb, 16, 16)).reshape(nb, 2, 4, 32)
    lo, hi = (levels & 0xF).astype(np.uint8), (levels >> 4).astype(np.uint8)
    ql = np.concatenate([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], axis=2)  # [nb, 2, 64]
    qh = hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6  # [nb, 2, 32]
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8),
                          d_bits[:, None].view(np.uint8).reshape(nb, 2)], axis=1)
    out[empty] = 0
    return out


# ---- Q4_K / Q5_K ------------------------------------------------------------------------


def make_qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """make_qkx2_quants(n, nmax, x, weights, ..., use_mad=false) over blocks x [B, n]:
    (scale [B], the_min [B] (= -min), L [B, n] in 0..nmax)."""
    nb, n = x.shape
    lo, hi = x[:, 0].copy(), x[:, 0].copy()
    sum_w = weights[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        lo = np.where(x[:, i] < lo, x[:, i], lo)
        hi = np.where(x[:, i] > hi, x[:, i], hi)
        sum_w = sum_w + weights[:, i]
        sum_x = _fma(weights[:, i], x[:, i], sum_x)
    lo = np.where(lo > 0, F32(0), lo)
    flat = hi == lo
    span = np.where(flat, F32(1), hi - lo)
    with np.errstate(divide="ignore"):
        iscale = F32(nmax) / span
        scale = F32(1) / iscale
    levels = np.clip(nearest_int(iscale[:, None] * (x - lo[:, None])), 0, nmax)
    best_mad = _mad(scale, lo, levels, x, weights)
    for step in range(nstep + 1):  # a better fit moves min, and max - min with it (as in C)
        span = np.where(flat, F32(1), hi - lo)
        iscale = (_fma(F32(rdelta), F32(step), F32(rmin)) + F32(nmax)) / span
        aux = np.clip(nearest_int(iscale[:, None] * (x - lo[:, None])), 0, nmax)
        lf = aux.astype(F32)
        sum_l = np.zeros(nb, F32)
        sum_l2 = np.zeros(nb, F32)
        sum_xl = np.zeros(nb, F32)
        for i in range(n):
            wl = weights[:, i] * lf[:, i]
            sum_l = _fma(weights[:, i], lf[:, i], sum_l)
            sum_l2 = _fma(wl, lf[:, i], sum_l2)
            sum_xl = _fma(wl, x[:, i], sum_xl)
        big_d = _fma(sum_w, sum_l2, -(sum_l * sum_l))
        ok = big_d > 0
        safe_d = np.where(ok, big_d, F32(1))
        this_scale = _fma(sum_w, sum_xl, -(sum_x * sum_l)) / safe_d
        this_min = _fma(sum_l2, sum_x, -(sum_l * sum_xl)) / safe_d
        positive = this_min > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        this_min = np.where(positive, F32(0), this_min)
        mad = _mad(this_scale, this_min, aux, x, weights)
        better = ok & (mad < best_mad)
        levels = np.where(better[:, None], aux, levels)
        best_mad = np.where(better, mad, best_mad)
        scale = np.where(better, this_scale, scale)
        lo = np.where(better, this_min, lo)
    levels = np.where(flat[:, None], 0, levels)
    scale = np.where(flat, F32(0), scale)
    return scale.astype(F32), (-lo).astype(F32), levels


def _mad(scale, lo, levels, x, weights) -> np.ndarray:
    """sum of w * (scale * L + min - x)^2 in C's order (the first product fused with + min)."""
    total = np.zeros(x.shape[0], F32)
    lf = levels.astype(F32)
    for i in range(x.shape[1]):
        diff = _fma(scale, lf[:, i], lo) - x[:, i]
        total = _fma(weights[:, i], diff * diff, total)
    return total


def _k_scales(x: np.ndarray, nmax: int, rmin: float, nstep: int):
    """The shared part of quantize_row_q4_K_ref / q5_K_ref: (d bits, dmin bits, scales[12],
    levels [nb, 256])."""
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    sum_x2 = np.zeros(nb * 8, F32)
    for i in range(32):
        sum_x2 = _fma(sub[:, i], sub[:, i], sum_x2)
    av_x = np.sqrt(sum_x2 / F32(32))
    weights = av_x[:, None] + np.abs(sub)
    scales, mins, levels = make_qkx2_quants(sub, weights, nmax, rmin, 0.1, nstep)
    scales, mins, levels = scales.reshape(nb, 8), mins.reshape(nb, 8), levels.reshape(nb, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)
    lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
    packed = np.zeros((nb, 12), np.int64)
    packed[:, 0:4] = ls[:, :4] | (ls[:, 4:] >> 4) << 6
    packed[:, 4:8] = lm[:, :4] | (lm[:, 4:] >> 4) << 6
    packed[:, 8:12] = (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4
    d_bits, dmin_bits = _f16_bits(max_scale / F32(63)), _f16_bits(max_min / F32(63))
    d = _f16_value(d_bits)[:, None] * ls.astype(F32)
    dm = _f16_value(dmin_bits)[:, None] * lm.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(nearest_int((x.reshape(nb, 8, 32) + dm[:, :, None]) / d[:, :, None]), 0, nmax)
    levels = np.where((d != 0)[:, :, None], requant, levels)
    head = np.concatenate([d_bits[:, None].view(np.uint8).reshape(nb, 2),
                           dmin_bits[:, None].view(np.uint8).reshape(nb, 2), packed.astype(np.uint8)], axis=1)
    return head, levels.reshape(nb, 4, 2, 32)


def _q4_k(x: np.ndarray) -> np.ndarray:
    head, levels = _k_scales(x, 15, -1.0, 20)
    qs = (levels[:, :, 0] | levels[:, :, 1] << 4).astype(np.uint8)  # [nb, 4, 32]
    return np.concatenate([head, qs.reshape(len(x), 128)], axis=1)


def _q5_k(x: np.ndarray) -> np.ndarray:
    head, levels = _k_scales(x, 31, -0.5, 15)
    low, top = levels & 0xF, levels >> 4
    qs = (low[:, :, 0] | low[:, :, 1] << 4).astype(np.uint8)  # [nb, 4, 32]
    qh = np.zeros((len(x), 32), np.int64)
    for pair in range(4):
        qh |= top[:, pair, 0] << (2 * pair) | top[:, pair, 1] << (2 * pair + 1)
    return np.concatenate([head, qh.astype(np.uint8), qs.reshape(len(x), 128)], axis=1)


# ---- what a GGUF sink needs ------------------------------------------------------------------


def ggml_name(type_name: str) -> str:
    """"q6_k" -> "Q6_K" (the GGUF tensor type)."""
    return EMBEDDING_TYPES[type_name][0].name


def check_shape(type_name: str, shape: tuple[int, ...], tensor: str) -> None:
    block = EMBEDDING_TYPES[type_name][1]
    if len(shape) != 2 or shape[1] % block:
        raise ShapeError(f"{ggml_name(type_name)} stores rows of a multiple of {block} values; shape {list(shape)} "
                         "has not (llama-quantize falls back to another type there: pick f16, bf16 or q8_0)",
                         tensor=tensor)


def quantized_chunks(tensor, type_name: str):
    """A float `Tensor` (checkpoints.Tensor) quantized row chunk by row chunk: uint8 blocks. A
    source tensor already stored in that type (a GGUF's Q6_K token_embd) keeps its blocks:
    quantizing its dequantized values again is not the identity for Q6_K and Q5_K."""
    if keeps_blocks(tensor, type_name):
        yield np.ascontiguousarray(tensor.rows)
        return
    for part in tensor.row_chunks():
        values = part.f32()
        yield quantize(values.reshape(values.shape[0], -1), type_name)


def keeps_blocks(tensor, type_name: str) -> bool:
    """Whether `tensor` is stored in `type_name` already (checkpoints.gguf.DequantizedTensor)."""
    qtype = getattr(tensor, "qtype", None)
    return qtype is not None and qtype.name == ggml_name(type_name) and isinstance(getattr(tensor, "rows", None),
                                                                                     np.ndarray)


def rounding_note(name: str, type_name: str, tensor=None) -> str:
    if tensor is not None and keeps_blocks(tensor, type_name):
        return f"{name}: kept as the source's {ggml_name(type_name)} blocks, byte for byte"
    return (f"{name}: quantized to {ggml_name(type_name)} with ggml's reference quantizer (as llama-quantize "
            "without an importance matrix; nearest_int rounds half to even, fused multiply-adds as the x86-64 "
            "build contracts them): its values are rounded, so verify against the source differs by that "
            "rounding")


def _kernel():
    """engine.kernel (a layer up) binds the compiled path: looked up on use, never at import."""
    from ..engine import kernel

    return kernel
