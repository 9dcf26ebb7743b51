"""GGUF value encoding for the writer: type inference and the bytes of each value type.

Inferred value types (pass vtype=/subtype= for exact control): bool -> BOOL; int -> UINT32 if
0 <= v < 2^32, else INT32 if it fits, else INT64, else UINT64; float -> FLOAT32; str -> STRING;
numpy scalar -> its dtype; list/tuple -> ARRAY of the common element type (ints: the first of
UINT32/INT32/INT64/UINT64 that holds all; any float -> FLOAT32); 1-D ndarray -> ARRAY of its
dtype; list of lists -> ARRAY of ARRAY; a `KVField` -> its own types.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np
from gguf import GGUFValueType

from ..errors import UsageError
from .gguf_read import ARRAY_DTYPES, MAX_ARRAY_DEPTH, SCALAR_FORMATS, KVField

__all__ = ["encode_string", "encode_value", "infer_vtype"]

_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_VT = GGUFValueType
_INT_RANGES = ((_VT.UINT32, 0, (1 << 32) - 1), (_VT.INT32, -(1 << 31), (1 << 31) - 1),
               (_VT.INT64, -(1 << 63), (1 << 63) - 1), (_VT.UINT64, 0, (1 << 64) - 1))
_DTYPE_VTYPES = {dt: vt for vt, dt in ARRAY_DTYPES.items() if vt != _VT.BOOL} | {np.dtype(bool): _VT.BOOL}


def infer_vtype(value: Any) -> tuple[GGUFValueType, GGUFValueType | None]:
    """(vtype, subtype) for a Python/numpy value, by the rules in the module docstring."""
    if isinstance(value, KVField):
        return value.vtype, value.subtype
    if isinstance(value, (bool, np.bool_)):
        return _VT.BOOL, None
    if isinstance(value, np.generic):
        return _dtype_vtype(value.dtype), None
    if isinstance(value, int):
        return _int_vtype(value, value), None
    if isinstance(value, float):
        return _VT.FLOAT32, None
    if isinstance(value, str):
        return _VT.STRING, None
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise UsageError(f"metadata arrays must be 1-D, got shape {list(value.shape)}")
        return _VT.ARRAY, _dtype_vtype(value.dtype)
    if isinstance(value, (list, tuple)):
        return _VT.ARRAY, _infer_elements(value)
    raise UsageError(f"cannot store a {type(value).__name__} as a GGUF value")


def _dtype_vtype(dtype: np.dtype) -> GGUFValueType:
    vtype = _DTYPE_VTYPES.get(np.dtype(dtype).newbyteorder("<"))
    if vtype is None:
        raise UsageError(f"no GGUF value type for numpy {dtype}")
    return vtype


def _int_vtype(lo: int, hi: int) -> GGUFValueType:
    for vtype, low, high in _INT_RANGES:
        if low <= lo and hi <= high:
            return vtype
    raise UsageError(f"integers {lo}..{hi} do not fit any GGUF integer type")


def _infer_elements(values: list | tuple) -> GGUFValueType:
    if not values:
        raise UsageError("an empty array needs an explicit subtype=")
    if all(isinstance(v, str) for v in values):
        return _VT.STRING
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return _VT.BOOL
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return _int_vtype(min(values), max(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return _VT.FLOAT32
    if all(isinstance(v, (list, tuple, np.ndarray, KVField)) for v in values):
        return _VT.ARRAY
    kinds = [type(v).__name__ for v in values[:4]]
    raise UsageError(f"cannot infer one element type for {kinds}...; pass subtype=")


def encode_string(text: str) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"a GGUF string must be str, got {type(text).__name__}")
    raw = text.encode("utf-8")
    return _U64.pack(len(raw)) + raw


def encode_value(vtype: GGUFValueType, value: Any, subtype: GGUFValueType | None, where: str,
                 depth: int = 0) -> bytes:
    """The value's bytes (without its own u32 type tag)."""
    if vtype == _VT.STRING:
        return encode_string(value)
    if vtype == _VT.ARRAY:
        return _encode_array(value, subtype, where, depth)
    if vtype == _VT.BOOL and not (isinstance(value, (bool, np.bool_)) or value in (0, 1)):
        raise UsageError(f"{where}: a bool must be True/False or 0/1, got {value!r}")
    try:
        return SCALAR_FORMATS[vtype].pack(value)
    except (struct.error, OverflowError, TypeError) as err:
        raise UsageError(f"{where}: {value!r} does not fit {vtype.name.lower()} ({err})") from None


def _encode_array(values: Any, subtype: GGUFValueType | None, where: str, depth: int) -> bytes:
    if isinstance(values, KVField):
        values, subtype = values.value, values.subtype if subtype is None else subtype
    if subtype is None:
        subtype = infer_vtype(values)[1]
    subtype = _VT(subtype)
    head = _U32.pack(subtype) + _U64.pack(len(values))
    if subtype == _VT.STRING:
        return head + b"".join(encode_string(v) for v in values)
    if subtype == _VT.ARRAY:
        if depth + 1 >= MAX_ARRAY_DEPTH:
            raise UsageError(f"{where}: arrays nest deeper than {MAX_ARRAY_DEPTH}")
        inner = (_encode_array(v, None, f"{where}[{i}]", depth + 1) for i, v in enumerate(values))
        return head + b"".join(inner)
    return head + _numeric_array(values, subtype, where).tobytes()


def _numeric_array(values: Any, subtype: GGUFValueType, where: str) -> np.ndarray:
    dtype = ARRAY_DTYPES[subtype]
    src = np.asarray(values)
    if src.ndim != 1 or src.dtype.kind not in "biuf" and src.size:
        raise UsageError(f"{where}: a {subtype.name.lower()} array needs a flat list of numbers, "
                         f"got {src.dtype} shape {list(src.shape)}")
    if src.size == 0:
        return np.zeros(0, dtype)
    if subtype == _VT.BOOL or dtype.kind in "iu":
        if src.dtype.kind == "f":
            raise UsageError(f"{where}: floats cannot be stored in a {subtype.name.lower()} array")
        lo, hi = int(src.min()), int(src.max())
        low, high = (0, 1) if subtype == _VT.BOOL else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        if lo < low or hi > high:
            raise UsageError(f"{where}: values {lo}..{hi} do not fit a {subtype.name.lower()} array")
        return src.astype(dtype)
    with np.errstate(over="ignore"):
        out = src.astype(dtype)
    if np.any(np.isinf(out) & np.isfinite(src)):
        raise UsageError(f"{where}: values overflow {subtype.name.lower()}")
    return out
