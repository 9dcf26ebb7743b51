"""Compiled layout encoders and decoders (I2_S, hf, TQ) behind `fastpath`: each returns
None when the compiled path does not apply, and the caller's numpy reference runs instead."""
from __future__ import annotations

import numpy as np

from . import fastpath as _fp
from .ggml_types import scale_slot
from .ternary import TernaryWeight


def _no_threes(data: np.ndarray) -> bool:
    """No 2-bit field of `data` holds 3 (hf and I2_S bytes are valid)."""
    return _fp._over(data.size, 4, lambda a, b: _fp._ext.count_threes(data[a:b])) == 0


def i2s_encode(weight: TernaryWeight, block: int, nbytes: int) -> np.ndarray | None:
    """The whole I2_S tensor (codes, f32 beta, zero tail), or None."""
    if not _fp.compiled():
        return None
    out_features, in_features = weight.shape
    blob = np.empty(nbytes, np.uint8)
    body = out_features * in_features // 4
    origin = getattr(weight, "origin", ())
    if origin and origin[0] == "bf16":
        flat, bits = origin[1], origin[2]
        _fp._over(out_features, in_features, lambda a, b: _fp._ext.bf16_to_i2s(
            flat[a * in_features:b * in_features], bits, block, blob[a * in_features // 4:b * in_features // 4]))
    elif origin and origin[0] == "hf":
        _fp._over(-(-out_features // 4), 4 * in_features, lambda a, b: _fp._ext.hf_to_i2s(
            origin[1], out_features, in_features, block, a, b, blob[:body]))
    elif _fp._by_rows(weight, lambda r0, r1, codes: _fp._ext.i2s_encode(
            codes, block, blob[r0 * in_features // 4:r1 * in_features // 4])):
        return None
    blob[body:] = scale_slot(weight.beta)
    return blob


def i2s_decode(body: np.ndarray, shape: tuple[int, int], block: int, beta: np.float32) -> TernaryWeight | None:
    """The weight in I2_S code bytes `body` (checked), or None."""
    if not _fp.compiled() or not _no_threes(body):
        return None
    in_features = shape[1]

    def rows(r0: int, r1: int, out: np.ndarray) -> np.ndarray:
        part = out[:(r1 - r0) * in_features]
        _fp._ext.i2s_decode(body[r0 * in_features // 4:r1 * in_features // 4], block, part)
        return part

    return _fp.StoredTernary(shape, beta, rows, ("i2s", body, block))


def hf_encode(weight: TernaryWeight) -> np.ndarray | None:
    """uint8 [R = ceil(out/4), in] in transformers' packing, or None. Packed rows are done in
    runs where each plane is wholly inside `out` or wholly padding."""
    if not _fp.compiled():
        return None
    out_features, in_features = weight.shape
    planes = -(-out_features // 4)
    packed = np.empty((planes, in_features), np.uint8)
    target = packed.reshape(-1)
    origin = getattr(weight, "origin", ())
    if origin and origin[0] == "bf16":
        _fp._over(planes, 4 * in_features, lambda a, b: _fp._ext.bf16_to_hf(
            origin[1], out_features, in_features, origin[2], a, b, target))
        return packed
    if origin and origin[0] == "i2s":
        _fp._over(planes, 4 * in_features, lambda a, b: _fp._ext.i2s_to_hf(
            origin[1], out_features, in_features, origin[2], a, b, target))
        return packed
    source, decodes = _fp._row_source(weight)
    step = max(1, _fp.CHUNK_CODES // (4 * in_features)) if decodes else planes
    valid = [min(max(out_features - p * planes, 0), planes) for p in range(4)]  # rows j < valid[p]

    def work(a: int, b: int) -> int:
        scratch = np.empty(4 * step * in_features, np.int8) if decodes else None
        cuts = sorted({a, b, *(v for v in valid if a < v < b), *range(a, b, step)})
        bad = 0
        for j0, j1 in zip(cuts, cuts[1:], strict=False):
            codes = [source(p * planes + j0, p * planes + j1,
                            None if scratch is None else scratch[p * step * in_features:]).reshape(-1)
                     if j1 <= valid[p] else None for p in range(4)]
            bad += _fp._ext.hf_encode(codes, target[j0 * in_features:j1 * in_features])
        return bad

    return None if _fp._over(planes, 4 * in_features, work) else packed


def hf_decode(packed: np.ndarray, shape: tuple[int, int], beta: np.float32) -> TernaryWeight | None:
    """The weight in transformers' packed bytes (checked), or None."""
    if not _fp.compiled():
        return None
    source = _fp._flat(packed, "uint8")
    if not _no_threes(source):
        return None
    out_features, in_features = shape
    planes = -(-out_features // 4)

    def rows(r0: int, r1: int, out: np.ndarray) -> np.ndarray:
        part = out[:(r1 - r0) * in_features]
        row = r0
        while row < r1:  # one plane at a time: row = p * R + j
            plane, j = divmod(row, planes)
            end = min(r1, (plane + 1) * planes)
            _fp._ext.hf_decode_plane(source[j * in_features:(j + end - row) * in_features], plane,
                                 part[(row - r0) * in_features:(end - r0) * in_features])
            row = end
        return part

    return _fp.StoredTernary(shape, beta, rows, ("hf", source))


def tq_encode(kind: str, size: int, weight: TernaryWeight, d: np.float16) -> np.ndarray | None:
    """The TQ tensor bytes (`kind` "tq1" / "tq2": the compiled block coder, `size` bytes a
    256-element block) with fp16 `d` in every non-zero block, or None."""
    if not _fp.compiled():
        return None
    blocks_per_row = weight.shape[1] // 256
    blob = np.empty(weight.shape[0] * blocks_per_row * size, np.uint8)
    encode = getattr(_fp._ext, f"{kind}_encode")
    d_bits = int(np.float16(d).view(np.uint16))
    origin = getattr(weight, "origin", ())
    if kind == "tq2" and origin and origin[0] == "i2s" and origin[2] == 128:
        body = origin[1]
        _fp._over(blob.size // size, 256, lambda a, b: _fp._ext.i2s_to_tq2(body[a * 64:b * 64], d_bits, blob[a * size:b * size]))
        return blob
    bad = _fp._by_rows(weight, lambda r0, r1, codes: encode(
        codes, d_bits, blob[r0 * blocks_per_row * size:r1 * blocks_per_row * size]))
    return None if bad else blob


def tq_decode(kind: str, size: int, blob: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int | None] | None:
    """(int8 codes, the fp16 bits of the non-zero blocks' common d or None if all are zero), or
    None (also when blocks disagree on d: the reference raises for that)."""
    if not _fp.compiled():
        return None
    codes = np.empty(shape, np.int8)
    flat = codes.reshape(-1)
    decode = getattr(_fp._ext, f"{kind}_decode")
    parts = _fp._parallel([lambda a=a, b=b: decode(blob[a * size:b * size], flat[a * 256:b * 256])
                       for a, b in _fp._ranges(flat.size // 256, 256)])
    firsts = {first for _, nonzero, first, _ in parts if nonzero}
    if sum(p[0] for p in parts) or sum(p[3] for p in parts) or len(firsts) > 1:
        return None
    return codes, (firsts.pop() if firsts else None)


