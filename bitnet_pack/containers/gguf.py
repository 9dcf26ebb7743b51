"""GGUF files: `GGUFFile` (validated, memory-mapped reader) and `GGUFWriter` (streaming).

Why not gguf-py's own reader/writer: its `GGUFReader` does not bound its reads (a truncated
file fails far from the cause, or quietly yields short arrays) and rejects bitnet.cpp's type
ids; its `GGUFWriter` keeps whole tensors in RAM. So we keep a thin reader/writer of our own
and take only the constants (value types, key names, magic, version) from gguf-py.

    "GGUF" | version | n_tensors | n_kv | KV table | tensor table | pad | tensor data
                                                                       ^ data_start
    (byte layout: gguf_read.py; writer: gguf_write.py)

Values read back: scalars as Python int/float/bool/str; numeric and bool arrays always as
1-D numpy arrays (little-endian, copied out of the map); string arrays as lists of str;
arrays of arrays as lists of `KVField`. Tensor nbytes come from `ggml_types.TypeTable`, so
bitnet.cpp's own types include their 32-byte scale slot (the layout entries' sizes).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, Keys

from ..errors import HeaderInvalid, UsageError
from ..formats.dtypes import bf16_to_f32
from ..formats.ggml_types import (
    MAINLINE,
    TypeTable,
    bitnet_cpp_file_types,
    own_table_of_file_type,
    type_tables,
)
from .gguf_read import KVField, TensorInfo, parse_header
from .gguf_write import GGUFWriter, iter_chunks
from .sniff import require_regular

__all__ = ["GGUFFile", "GGUFWriter", "KVField", "TensorInfo", "FLAVOUR_KEY", "BITNET_CPP_ARCHS",
           "iter_chunks", "json_type_name"]

# Written by bitnet-pack to say which type table a file's ids 36-42 follow; wins over the arch.
FLAVOUR_KEY = "bitnet_pack.type_flavour"
MAINLINE_FLAVOUR_VALUE = "mainline"
BITNET_CPP_ARCHS = ("bitnet-25", "bitnet-b1.58")

_PLAIN_DTYPES = {int(GGMLQuantizationType[name]): dtype for name, dtype in (
    ("F32", "<f4"), ("F64", "<f8"), ("F16", "<f2"), ("BF16", "<u2"),
    ("I8", "i1"), ("I16", "<i2"), ("I32", "<i4"), ("I64", "<i8"))}


def _tables() -> list[str]:
    return [t for t in type_tables() if t != MAINLINE]


def json_type_name(vtype: GGUFValueType) -> str:
    """'uint32', 'float32', 'string', 'array', ... as in the *.gguf-kv.json vectors."""
    return GGUFValueType(vtype).name.lower()


class GGUFFile:
    """A read-only, validated view of one GGUF file (see the module docstring).

    flavour: which `TypeTable` reads type ids 36-42. "auto" uses the `bitnet_pack.type_flavour`
    key if present, else "2025" for arch bitnet-25 / bitnet-b1.58, else mainline (None).
    """

    def __init__(self, path: str | Path, flavour: str | None = "auto"):
        self.path = Path(path)
        if flavour != "auto" and flavour is not None and (flavour == MAINLINE or flavour not in type_tables()):
            raise UsageError(f"flavour must be 'auto', None or one of {_tables()}, got {flavour!r}")
        self._map = _map_file(self.path)
        try:
            header = parse_header(self._map, self.path, lambda kv: self._pick_types(kv, flavour))
        except BaseException:
            self._map = None  # do not keep a failed file mapped while the traceback lives
            raise
        self.version: int = header.version
        self.kv: OrderedDict[str, KVField] = header.kv
        self.types: TypeTable = header.types
        self.alignment: int = header.alignment
        self.data_start: int = header.data_start
        self.tensors: OrderedDict[str, TensorInfo] = header.tensors

    # -- flavour ---------------------------------------------------------------------------
    def _pick_types(self, kv: OrderedDict[str, KVField], flavour: str | None) -> TypeTable:
        if flavour != "auto":
            return TypeTable.for_target(flavour)
        hint = kv.get(FLAVOUR_KEY)
        if hint is not None:
            if hint.vtype != GGUFValueType.STRING or not (
                    hint.value == MAINLINE_FLAVOUR_VALUE or hint.value in type_tables()):
                raise HeaderInvalid(f"key {FLAVOUR_KEY!r} must be the string {MAINLINE_FLAVOUR_VALUE!r} or "
                                    f"one of {_tables()}, got {_plain(hint)!r}", path=self.path)
            return TypeTable.for_target(None if hint.value == MAINLINE_FLAVOUR_VALUE else hint.value)
        # a runtime with ids of its own (ik_llama.cpp) writes its own file types: they name its table
        file_type = kv.get(Keys.General.FILE_TYPE)
        own = own_table_of_file_type(file_type.value) if file_type is not None else None
        if own is not None:
            return TypeTable.for_target(own)
        arch = kv.get(Keys.General.ARCHITECTURE)
        named = arch is not None and arch.vtype == GGUFValueType.STRING
        if named and arch.value in BITNET_CPP_ARCHS:
            return TypeTable.for_target("2025")
        # bitnet.cpp writes 1bitLLM as `bitnet` and Llama-style BitNet as `llama`: its own
        # file types say which table (mainline's 38 is MXFP4_MOE, never a BitNet family)
        # (and its embedding models as qwen3 / gemma3, embedding_*)
        bitnet_cpp = (named and arch.value in ("bitnet", "llama", "qwen3", "gemma3") and file_type is not None
                      and file_type.value in bitnet_cpp_file_types())
        return TypeTable.for_target("2025" if bitnet_cpp else None)

    @property
    def closed(self) -> bool:
        return self._map is None

    # -- metadata --------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The plain value of `key` (arrays of arrays unwrapped to nested lists), or `default`."""
        field = self.kv.get(key)
        return default if field is None else _plain(field)

    @property
    def architecture(self) -> str | None:
        return self.get(Keys.General.ARCHITECTURE)

    @property
    def data_end(self) -> int:
        """Absolute end of the last tensor's bytes (data_start when there are no tensors)."""
        return max((t.abs_offset + t.nbytes for t in self.tensors.values()), default=self.data_start)

    def to_json(self) -> dict:
        """{"gguf_version": v, "kv": {key: {"type": T, "value": V}}}, keys in file order."""
        return {"gguf_version": self.version, "kv": {k: _field_json(f) for k, f in self.kv.items()}}

    # -- tensor data -----------------------------------------------------------------------
    def tensor_info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise UsageError(f"no tensor {name!r} among the {len(self.tensors)} tensors of this file",
                             path=self.path)
        return info

    def tensor_bytes(self, name: str) -> np.ndarray:
        """A read-only uint8 view of exactly the tensor's nbytes (no copy)."""
        info = self.tensor_info(name)
        if self._map is None:
            raise UsageError("the file is closed", path=self.path, tensor=name)
        return self._map[info.abs_offset: info.abs_offset + info.nbytes].view(np.ndarray)

    def tensor_array(self, name: str) -> np.ndarray:
        """F32/F64/I8..I64 as read-only views in torch order; F16 and BF16 as float32 copies."""
        info = self.tensor_info(name)
        dtype = None if info.type_id in self.types.bitnet else _PLAIN_DTYPES.get(info.type_id)
        if dtype is None:
            raise UsageError(f"{info.type_name} is not a plain element type; use tensor_bytes()",
                             path=self.path, tensor=name)
        values = self.tensor_bytes(name).view(dtype).reshape(info.shape)
        if info.type_id == GGMLQuantizationType.BF16:
            return bf16_to_f32(values)
        if info.type_id == GGMLQuantizationType.F16:
            return values.astype(np.float32)
        return values

    def close(self) -> None:
        """Drop our map; views handed out stay valid until they are released."""
        self._map = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, v{self.version}, arch={self.architecture!r}, "
                f"{len(self.kv)} kv, {len(self.tensors)} tensors, flavour={self.types.flavour!r})")


def _map_file(path: Path) -> np.ndarray:
    size = require_regular(path)
    if size == 0:
        return np.zeros(0, dtype=np.uint8)  # mmap refuses empty files; the parser reports it
    return np.memmap(path, dtype=np.uint8, mode="r")


def _plain(field: KVField) -> Any:
    if field.subtype == GGUFValueType.ARRAY:
        return [_plain(inner) for inner in field.value]
    return field.value


def _array_json(field: KVField) -> dict:
    if field.subtype == GGUFValueType.ARRAY:
        values: list = [_array_json(inner) for inner in field.value]
    elif isinstance(field.value, np.ndarray):
        values = field.value.tolist()
    else:
        values = list(field.value)
    return {"array_of": json_type_name(field.subtype), "value": values}


def _field_json(field: KVField) -> dict:
    if field.vtype == GGUFValueType.ARRAY:
        return {"type": "array", "value": _array_json(field)}
    return {"type": json_type_name(field.vtype), "value": field.value}

