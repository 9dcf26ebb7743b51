"""GGUF header parser: every count, length and offset is checked (as Python ints) before use.

    offset 0   "GGUF" | u32 version (2, 3) | u64 n_tensors | u64 n_kv
               n_kv      x  string key | u32 vtype | value
               n_tensors x  string name | u32 n_dims | n_dims x i64 ne | u32 type | u64 offset
               zeros up to `alignment`                         <- data_start
               tensor i at data_start + offset_i (a multiple of alignment), zero padded

    string = u64 length | UTF-8 bytes (no NUL)     array = u32 elem vtype | u64 count | elems

A read that runs off the end is TruncatedFile, unless one header item (a string, an array,
the KV or tensor table) declares more than HEADER_ITEM_LIMIT bytes: that is a corrupt length
(HeaderTooLarge), not a short download. Loops need no other bound: each step consumes at
least 8 bytes, so they stop at the end of the file.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gguf import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from ..errors import (
    BadMagic,
    DuplicateTensor,
    HeaderInvalid,
    HeaderTooLarge,
    OffsetOutOfRange,
    TruncatedFile,
    UnknownTensorType,
)
from ..formats.ggml_types import MAINLINE, TypeTable, pad, table_ids, table_label, type_tables
from .sniff import reject_lfs_pointer

MAGIC_BYTES = struct.pack("<I", GGUF_MAGIC)  # b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 8  # arrays of arrays; llama.cpp itself accepts none, gguf-py writes them
INT64_MAX = (1 << 63) - 1
HEADER_ITEM_LIMIT = 1 << 30  # bytes; the largest real tokenizer arrays are ~10 MB

SCALAR_FORMATS: dict[GGUFValueType, struct.Struct] = {
    vt: struct.Struct("<" + code) for vt, code in (
        (GGUFValueType.UINT8, "B"), (GGUFValueType.INT8, "b"), (GGUFValueType.UINT16, "H"),
        (GGUFValueType.INT16, "h"), (GGUFValueType.UINT32, "I"), (GGUFValueType.INT32, "i"),
        (GGUFValueType.FLOAT32, "f"), (GGUFValueType.BOOL, "?"), (GGUFValueType.UINT64, "Q"),
        (GGUFValueType.INT64, "q"), (GGUFValueType.FLOAT64, "d"))
}
ARRAY_DTYPES: dict[GGUFValueType, np.dtype] = {
    vt: np.dtype(code) for vt, code in (
        (GGUFValueType.UINT8, "u1"), (GGUFValueType.INT8, "i1"), (GGUFValueType.UINT16, "<u2"),
        (GGUFValueType.INT16, "<i2"), (GGUFValueType.UINT32, "<u4"), (GGUFValueType.INT32, "<i4"),
        (GGUFValueType.FLOAT32, "<f4"), (GGUFValueType.BOOL, "u1"), (GGUFValueType.UINT64, "<u8"),
        (GGUFValueType.INT64, "<i8"), (GGUFValueType.FLOAT64, "<f8"))
}
_U32, _U64, _I64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<q")
_MIN_KV, _MIN_TENSOR_INFO = 8 + 4 + 1, 8 + 4 + 4 + 8
_MIN_ELEMENT = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}


class KVField(NamedTuple):
    """One metadata value. `subtype` is the element type of an ARRAY, else None."""

    value: Any
    vtype: GGUFValueType
    subtype: GGUFValueType | None = None


class TensorInfo(NamedTuple):
    """`shape` is torch order (rows first), `ne` ggml order; `offset` is relative to data_start."""

    name: str
    shape: tuple[int, ...]
    ne: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int
    nbytes: int
    abs_offset: int


class Header(NamedTuple):
    version: int
    kv: OrderedDict[str, KVField]
    types: TypeTable
    alignment: int
    data_start: int
    tensors: OrderedDict[str, TensorInfo]


class _Cursor:
    """Bounded little-endian reads from a byte buffer; errors name the file and the item."""

    def __init__(self, buf: np.ndarray, path: Path):
        self.view, self.size, self.pos, self.path = memoryview(buf), len(buf), 0, path

    def need(self, n: int, what: str, *, declared: bool = False, tensor: str | None = None) -> None:
        if n <= self.size - self.pos:
            return
        if declared and n > HEADER_ITEM_LIMIT:
            raise HeaderTooLarge(f"{what} declares {n} bytes, over the {HEADER_ITEM_LIMIT} bytes a header item "
                                 f"may take (file: {self.size} bytes): corrupt header", path=self.path, tensor=tensor)
        raise TruncatedFile(f"{what} needs bytes {self.pos}..{self.pos + n} but the file ends at "
                            f"{self.size}: truncated download?", path=self.path, tensor=tensor)

    def unpack(self, fmt: struct.Struct, what: str, tensor: str | None = None) -> Any:
        self.need(fmt.size, what, tensor=tensor)
        (value,) = fmt.unpack_from(self.view, self.pos)
        self.pos += fmt.size
        return value

    def string(self, what: str, tensor: str | None = None) -> str:
        n = self.unpack(_U64, f"{what} length", tensor)
        self.need(n, f"{what} ({n} bytes)", declared=True, tensor=tensor)
        raw = self.view[self.pos: self.pos + n]
        self.pos += n
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as err:
            raise HeaderInvalid(f"{what} is not UTF-8 ({err.reason} at byte {self.pos - n + err.start})",
                                path=self.path, tensor=tensor) from None

    def strings(self, count: int, where: str) -> list[str]:
        """`count` strings in a row (the tokenizer's 280k merges: kept to a tight loop)."""
        out, view, size = [], self.view, self.size
        for i in range(count):
            if size - self.pos < 8:
                self.need(8, f"{where}[{i}] length")
            (n,) = _U64.unpack_from(view, self.pos)
            self.pos += 8
            if n > size - self.pos:
                self.need(n, f"{where}[{i}] ({n} bytes)", declared=True)
            try:
                out.append(str(view[self.pos: self.pos + n], "utf-8"))
            except UnicodeDecodeError:
                raise HeaderInvalid(f"{where}[{i}] is not UTF-8", path=self.path) from None
            self.pos += n
        return out

    def vtype(self, what: str) -> GGUFValueType:
        raw = self.unpack(_U32, f"{what} type")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise HeaderInvalid(f"{what} has value type {raw}; GGUF defines 0..{max(GGUFValueType)}",
                                path=self.path) from None

    def count(self, count: int, each: int, what: str) -> None:
        """Refuse counts no real header has; anything smaller fails at the read that runs off the end."""
        if count * each > HEADER_ITEM_LIMIT:
            raise HeaderTooLarge(f"{what}: {count} entries of >= {each} bytes exceed the {HEADER_ITEM_LIMIT} "
                                 f"bytes a header item may take (file: {self.size} bytes): corrupt header",
                                 path=self.path)


def parse_header(buf: np.ndarray, path: Path, pick_types: Callable[[OrderedDict], TypeTable]) -> Header:
    """Parse and validate everything before the tensor data. `pick_types(kv)` chooses the table."""
    _check_magic(buf, path)
    cur = _Cursor(buf, path)
    cur.pos = len(MAGIC_BYTES)
    version = _check_version(cur.unpack(_U32, "version"), path)
    n_tensors = cur.unpack(_U64, "tensor count")
    n_kv = cur.unpack(_U64, "key-value count")
    cur.count(n_kv, _MIN_KV, "key-value table")
    kv = _read_kv_table(cur, n_kv)
    alignment = _alignment(kv, path)
    types = pick_types(kv)
    cur.count(n_tensors, _MIN_TENSOR_INFO, "tensor table")
    raw = _read_tensor_table(cur, n_tensors)
    data_start = pad(cur.pos, alignment)
    tensors = OrderedDict((r[0], _tensor_info(r, types, data_start, path)) for r in raw)
    _check_placement(list(tensors.values()), alignment, len(buf), path)
    return Header(version, kv, types, alignment, data_start, tensors)


def _check_magic(buf: np.ndarray, path: Path) -> None:
    if len(buf) == 0:
        raise TruncatedFile("the file is empty (0 bytes), not GGUF", path=path)
    head = bytes(buf[:64])
    reject_lfs_pointer(path, head)
    if head.startswith(MAGIC_BYTES):
        return
    if MAGIC_BYTES.startswith(head):
        raise TruncatedFile(f"the file is {len(buf)} bytes, shorter than the GGUF magic", path=path)
    guess = ""
    if head.lstrip()[:1] == b"<":
        guess = " (looks like HTML or XML: a failed download?)"
    elif len(head) > 8 and head[8:9] == b"{":
        guess = " (looks like safetensors)"
    raise BadMagic(f"first bytes are {head[:4]!r}, not the GGUF magic {MAGIC_BYTES!r}{guess}", path=path)


def _check_version(version: int, path: Path) -> int:
    if version in SUPPORTED_VERSIONS:
        return version
    if version in (2 << 24, 3 << 24):
        raise HeaderInvalid(f"version field {version:#x} means a big-endian GGUF; only little-endian is read",
                            path=path)
    raise HeaderInvalid(f"GGUF version {version}; this reader handles versions 2 and 3", path=path)


def _read_kv_table(cur: _Cursor, n_kv: int) -> OrderedDict[str, KVField]:
    kv: OrderedDict[str, KVField] = OrderedDict()
    for i in range(n_kv):
        key = cur.string(f"key #{i}")
        if key in kv:
            raise HeaderInvalid(f"key {key!r} appears twice (again as entry #{i})", path=cur.path)
        kv[key] = _read_value(cur, cur.vtype(f"key {key!r}"), f"key {key!r}", 0)
    return kv


def _read_value(cur: _Cursor, vtype: GGUFValueType, where: str, depth: int) -> KVField:
    if vtype == GGUFValueType.STRING:
        return KVField(cur.string(where), vtype)
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, where, depth)
    value = cur.unpack(SCALAR_FORMATS[vtype], where)
    if vtype == GGUFValueType.FLOAT32 or vtype == GGUFValueType.FLOAT64:
        value = float(value)
    return KVField(value, vtype)


def _read_array(cur: _Cursor, where: str, depth: int) -> KVField:
    sub = cur.vtype(f"{where} array element")
    count = cur.unpack(_U64, f"{where} array count")
    if sub == GGUFValueType.ARRAY and depth + 1 >= MAX_ARRAY_DEPTH:
        raise HeaderInvalid(f"{where} nests arrays deeper than {MAX_ARRAY_DEPTH}", path=cur.path)
    if sub in _MIN_ELEMENT:
        cur.count(count, _MIN_ELEMENT[sub], f"{where} array of {sub.name.lower()}")
        if sub == GGUFValueType.STRING:
            return KVField(cur.strings(count, where), GGUFValueType.ARRAY, sub)
        items = [_read_array(cur, f"{where}[{i}]", depth + 1) for i in range(count)]
        return KVField(items, GGUFValueType.ARRAY, sub)
    dtype = ARRAY_DTYPES[sub]
    cur.need(count * dtype.itemsize, f"{where} array of {count} {sub.name.lower()}", declared=True)
    values = np.frombuffer(cur.view, dtype=dtype, count=count, offset=cur.pos).copy()
    cur.pos += count * dtype.itemsize
    return KVField(values != 0 if sub == GGUFValueType.BOOL else values, GGUFValueType.ARRAY, sub)


def _alignment(kv: OrderedDict[str, KVField], path: Path) -> int:
    field = kv.get(Keys.General.ALIGNMENT)
    if field is None:
        return GGUF_DEFAULT_ALIGNMENT
    if field.vtype != GGUFValueType.UINT32:
        raise HeaderInvalid(f"key {Keys.General.ALIGNMENT!r} must be uint32, got {field.vtype.name.lower()}",
                            path=path)
    value = field.value
    if value == 0 or value & (value - 1):
        raise HeaderInvalid(f"key {Keys.General.ALIGNMENT!r} is {value}; it must be a power of two",
                            path=path)
    return value


def _read_tensor_table(cur: _Cursor, n_tensors: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    rows: list[tuple[str, tuple[int, ...], int, int]] = []
    index: dict[str, int] = {}
    for i in range(n_tensors):
        name = cur.string(f"tensor #{i} name")
        if name in index:
            raise DuplicateTensor(f"the name appears twice in the tensor table (entries #{index[name]} and "
                                  f"#{i})", path=cur.path, tensor=name)
        index[name] = i
        n_dims = cur.unpack(_U32, "n_dims", name)
        if n_dims > MAX_DIMS:
            raise HeaderInvalid(f"n_dims is {n_dims}; GGUF allows at most {MAX_DIMS}", path=cur.path,
                                tensor=name)
        ne = tuple(cur.unpack(_I64, f"ne[{d}]", name) for d in range(n_dims))
        _check_dims(ne, cur.path, name)
        type_id = cur.unpack(_U32, "type id", name)
        rows.append((name, ne, type_id, cur.unpack(_U64, "offset", name)))
    return rows


def _check_dims(ne: tuple[int, ...], path: Path, name: str) -> None:
    count = 1
    for d, n in enumerate(ne):
        if n <= 0:
            raise HeaderInvalid(f"ne[{d}] is {n}; every dimension must be > 0 (ne={list(ne)})", path=path,
                                tensor=name)
        count *= n
    if count > INT64_MAX:
        raise HeaderInvalid(f"ne={list(ne)} holds {count} elements, more than 2^63-1", path=path, tensor=name)


def _tensor_info(raw: tuple[str, tuple[int, ...], int, int], types: TypeTable, data_start: int,
                 path: Path) -> TensorInfo:
    name, ne, type_id, offset = raw
    shape = tuple(reversed(ne))
    type_name = types.name(type_id)
    if type_name is None:
        raise UnknownTensorType(f"type id {type_id} is unknown to the {_table_label(types)} type table"
                                f"{_flavour_hint(type_id, types)}", path=path, tensor=name)
    nbytes = types.nbytes(type_id, shape or (1,))
    if nbytes is None or nbytes <= 0:
        raise HeaderInvalid(f"{type_name} cannot hold ne={list(ne)}: {_size_rule(type_id, types)}",
                            path=path, tensor=name)
    return TensorInfo(name, shape, ne, type_id, type_name, offset, nbytes, data_start + offset)


def _table_label(types: TypeTable) -> str:
    return table_label(types.flavour)


def _flavour_hint(type_id: int, types: TypeTable) -> str:
    homes = [f for f in type_tables() if f != MAINLINE and f != types.flavour and type_id in table_ids(f).values()]
    return f" (flavour {' / '.join(homes)} knows it: pass flavour=)" if homes else ""


def _size_rule(type_id: int, types: TypeTable) -> str:
    if type_id in types.bitnet:
        return "registered layout types (bitnet.cpp's) need a 2-D [rows, cols] tensor with a positive byte size"
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    return f"ne[0] must be a multiple of the block size {block}"


def _check_placement(tensors: list[TensorInfo], alignment: int, file_size: int, path: Path) -> None:
    for t in tensors:
        if t.offset % alignment:
            raise OffsetOutOfRange(f"offset {t.offset} is not a multiple of the alignment {alignment}",
                                   path=path, tensor=t.name)
    by_offset = sorted(tensors, key=lambda t: t.offset)
    for prev, t in pairwise(by_offset):
        if t.offset < prev.offset + prev.nbytes:
            raise HeaderInvalid(f"tensors {prev.name!r} (data bytes {prev.offset}..{prev.offset + prev.nbytes}) "
                                f"and {t.name!r} (from {t.offset}) overlap", path=path)
    table_total = sum(pad(t.nbytes, alignment) for t in tensors)
    for t in by_offset:
        end = t.abs_offset + t.nbytes
        if end <= file_size:
            continue
        if t.offset + t.nbytes > table_total:
            raise OffsetOutOfRange(f"offset {t.offset} + {t.nbytes} bytes ends at file byte {end}, past the "
                                   f"file ({file_size} bytes) and past the {table_total} data bytes the tensor "
                                   "table accounts for", path=path, tensor=t.name)
        raise TruncatedFile(f"needs bytes {t.abs_offset}..{end} but the file ends at {file_size}: "
                            "truncated download?", path=path, tensor=t.name)
