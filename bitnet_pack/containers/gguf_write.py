"""Streaming GGUF writer: declare every KV and tensor, write the header, then stream tensors.

    GGUFWriter(path)          DECLARING  add_kv(), add_tensor()
      .write_header()         HEADER     header written to .<name>.incomplete-<pid> beside path
      .write_tensor() x n     HEADER     one tensor at a time, in declaration order
      .finish()               FINISHED   flush, fsync, rename onto path
      .abort() / exception    ABORTED    temporary file removed (a failed write: FAILED)

    data: [tensor 0][zeros to alignment][tensor 1][zeros]...    offset_i+1 = offset_i + pad(nbytes_i)

Bytes are deterministic (keys and tensors in the order added, no timestamps). Memory: the
header plus one chunk of the tensor being written; ndarrays and buffers are written from
views, never copied whole.

Value types are inferred as `gguf_values.infer_vtype` documents.
"""
from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_VERSION, GGUFValueType, Keys

from .. import interrupts
from ..errors import DuplicateTensor, UnknownTensorType, UsageError
from ..formats.ggml_types import TypeTable, pad
from .gguf_read import MAGIC_BYTES, MAX_DIMS, KVField
from .gguf_values import encode_string, encode_value, infer_vtype
from .outputs import publish, temp_name

__all__ = ["GGUFWriter", "infer_vtype", "iter_chunks"]

CHUNK_BYTES = 16 << 20
MAX_NAME_BYTES = 63  # ggml's GGML_MAX_NAME is 64 including the NUL
_U32, _U64, _I64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<q")
_VT = GGUFValueType


class _State(enum.Enum):
    DECLARING = "declaring"
    HEADER = "header written"
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed (call abort())"


class _Tensor(NamedTuple):
    name: str
    ne: tuple[int, ...]
    type_id: int
    nbytes: int
    offset: int


class GGUFWriter:
    """Write one GGUF file (see the module docstring). `types`, when given, checks type ids
    and fills in / checks each tensor's nbytes."""

    def __init__(self, path: str | Path, *, alignment: int = GGUF_DEFAULT_ALIGNMENT,
                 types: TypeTable | None = None, chunk_bytes: int = CHUNK_BYTES,
                 data_stream: Callable[[Path, int], Any] | None = None, overwrite: bool = True):
        if not 0 < alignment < 1 << 32 or alignment & (alignment - 1):
            raise UsageError(f"alignment must be a power of two below 2^32, got {alignment}")
        self.path = Path(path)
        self.alignment, self.types, self.chunk_bytes = alignment, types, chunk_bytes
        self.data_start: int | None = None
        self._kv: dict[str, bytes] = {}
        self._tensors: list[_Tensor] = []
        self._names: set[str] = set()
        self._data_size = 0
        self._next = 0
        self._file = None
        # `data_stream(temp_path, data_start)` may return another writable file for the tensor
        # data (e.g. direct I/O); None keeps the ordinary file.
        self._data_stream = data_stream
        self._tmp = temp_name(self.path)
        self.overwrite = overwrite  # False: finish() refuses a `path` that appeared meanwhile
        self._state = _State.DECLARING

    # -- declarations ----------------------------------------------------------------------
    def add_kv(self, key: str, value: Any, vtype: GGUFValueType | None = None,
               subtype: GGUFValueType | None = None) -> None:
        self._require(_State.DECLARING, "add_kv")
        encode_string(key)  # a str, or UsageError now rather than at write_header()
        if key in self._kv:
            raise UsageError(f"key {key!r} was already added", path=self.path)
        if isinstance(value, KVField):
            value, vtype, subtype = value.value, value.vtype if vtype is None else vtype, value.subtype
        if vtype is None:
            vtype, subtype = infer_vtype(value)
        if key == Keys.General.ALIGNMENT and not (
                vtype == _VT.UINT32 and isinstance(value, (int, np.integer)) and value == self.alignment):
            raise UsageError(f"{key!r} must be uint32 {self.alignment} (the writer's alignment), "
                             f"got {_VT(vtype).name.lower()} {value!r}", path=self.path)
        self._kv[key] = _U32.pack(vtype) + encode_value(_VT(vtype), value, subtype, f"key {key!r}")

    def add_tensor(self, name: str, shape: tuple[int, ...], type_id: int, nbytes: int | None = None) -> int:
        """Declare a tensor of torch-order `shape`; returns its offset relative to data_start."""
        self._require(_State.DECLARING, "add_tensor")
        self._check_name(name)
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= MAX_DIMS or min(shape) < 1:
            raise UsageError(f"shape {list(shape)} must have 1..{MAX_DIMS} dimensions, all > 0",
                             path=self.path, tensor=name)
        nbytes = self._checked_nbytes(name, shape, type_id, nbytes)
        tensor = _Tensor(name, shape[::-1], type_id, nbytes, self._data_size)
        self._tensors.append(tensor)
        self._names.add(name)
        self._data_size += pad(nbytes, self.alignment)
        return tensor.offset

    def _check_name(self, name: str) -> None:
        size = len(encode_string(name)) - 8
        if not 0 < size <= MAX_NAME_BYTES:
            raise UsageError(f"tensor names must be 1..{MAX_NAME_BYTES} UTF-8 bytes (ggml's limit), "
                             f"got {size}", path=self.path, tensor=name)
        if name in self._names:
            raise DuplicateTensor("declared twice", path=self.path, tensor=name)

    def _checked_nbytes(self, name: str, shape: tuple[int, ...], type_id: int, nbytes: int | None) -> int:
        if not 0 <= type_id < 1 << 32:
            raise UnknownTensorType(f"type id {type_id} does not fit a u32", path=self.path, tensor=name)
        expected = None
        if self.types is not None:
            if self.types.name(type_id) is None:
                raise UnknownTensorType(f"type id {type_id} is unknown to the writer's type table "
                                        f"(flavour {self.types.flavour!r})", path=self.path, tensor=name)
            expected = self.types.nbytes(type_id, shape)
            if expected is None:
                raise UsageError(f"{self.types.name(type_id)} cannot hold shape {list(shape)}",
                                 path=self.path, tensor=name)
        nbytes = expected if nbytes is None else int(nbytes)
        if nbytes is None or nbytes <= 0 or (expected is not None and nbytes != expected):
            rule = "pass nbytes= or types=" if nbytes is None else f"the type table says {expected}"
            raise UsageError(f"nbytes {nbytes} for shape {list(shape)} type {type_id}: {rule}",
                             path=self.path, tensor=name)
        return nbytes

    # -- header ----------------------------------------------------------------------------
    def write_header(self) -> None:
        self._require(_State.DECLARING, "write_header")
        kv = dict(self._kv)
        if Keys.General.ALIGNMENT not in kv and self.alignment != GGUF_DEFAULT_ALIGNMENT:
            kv[Keys.General.ALIGNMENT] = _U32.pack(_VT.UINT32) + _U32.pack(self.alignment)
        parts = [MAGIC_BYTES, _U32.pack(GGUF_VERSION), _U64.pack(len(self._tensors)), _U64.pack(len(kv))]
        for key, encoded in kv.items():
            parts += [encode_string(key), encoded]
        for t in self._tensors:
            parts += [encode_string(t.name), _U32.pack(len(t.ne)), *(_I64.pack(n) for n in t.ne),
                      _U32.pack(t.type_id), _U64.pack(t.offset)]
        header = b"".join(parts)
        self.data_start = pad(len(header), self.alignment)
        with self._writing():
            interrupts.track(self._tmp)
            self._file = open(self._tmp, "wb")
            self._file.write(header + bytes(self.data_start - len(header)))
            if self._data_stream is not None:
                self._file.flush()
                stream = self._data_stream(self._tmp, self.data_start)
                if stream is not None:
                    self._file.close()
                    self._file = stream
        self._state = _State.HEADER

    # -- tensor data -----------------------------------------------------------------------
    def write_tensor(self, name: str, data: Any) -> None:
        """Write the next tensor's bytes (bytes-like or ndarray, any layout), then its padding."""
        tensor = self._expect_next(name)
        chunks, size = _chunks(data, self.chunk_bytes)
        if size != tensor.nbytes:
            raise UsageError(f"data is {size} bytes but the tensor was declared with {tensor.nbytes}",
                             path=self.path, tensor=name)
        with self._writing():
            for chunk in chunks:
                self._file.write(chunk)
            self._end_tensor(tensor)

    def write_tensor_chunks(self, name: str, chunks: Iterable[Any]) -> None:
        """Stream the next tensor from pieces (bytes-like or ndarrays) whose sizes add up to nbytes."""
        tensor = self._expect_next(name)
        written = 0
        with self._writing():
            for piece in chunks:
                for chunk in _chunks(piece, self.chunk_bytes)[0]:
                    written += memoryview(chunk).nbytes
                    if written > tensor.nbytes:
                        raise UsageError(f"chunks exceed the declared {tensor.nbytes} bytes", path=self.path,
                                         tensor=name)
                    self._file.write(chunk)
            if written != tensor.nbytes:
                raise UsageError(f"chunks add up to {written} bytes, declared {tensor.nbytes}", path=self.path,
                                 tensor=name)
            self._end_tensor(tensor)

    def _expect_next(self, name: str) -> _Tensor:
        self._require(_State.HEADER, "write_tensor")
        if self._next >= len(self._tensors):
            raise UsageError(f"all {len(self._tensors)} declared tensors are already written", path=self.path,
                             tensor=name)
        tensor = self._tensors[self._next]
        if tensor.name != name:
            raise UsageError(f"tensors are written in declaration order: {tensor.name!r} (#{self._next}) "
                             "comes next", path=self.path, tensor=name)
        return tensor

    def _end_tensor(self, tensor: _Tensor) -> None:
        self._file.write(bytes(pad(tensor.nbytes, self.alignment) - tensor.nbytes))
        self._next += 1

    # -- ending ----------------------------------------------------------------------------
    def finish(self) -> Path:
        """Flush, fsync and rename the temporary file onto `path`; returns `path`."""
        if self._state is _State.DECLARING:
            self.write_header()
        self._require(_State.HEADER, "finish")
        if self._next < len(self._tensors):
            missing = self._tensors[self._next].name
            raise UsageError(f"tensor {missing!r} (#{self._next} of {len(self._tensors)}) was declared but not "
                             "written", path=self.path)
        with self._writing():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            publish(self._tmp, self.path, force=self.overwrite)
            _fsync_dir(self.path.parent)
        self._state = _State.FINISHED
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; `path` is never touched. Safe to call twice."""
        if self._state is _State.FINISHED:
            return
        if self._file is not None:
            self._close_without_flush()
        self._tmp.unlink(missing_ok=True)
        interrupts.untrack(self._tmp)
        self._state = _State.ABORTED

    def _close_without_flush(self) -> None:
        """An aborted file is deleted: its pending bytes are not worth waiting for. (A direct
        I/O stream's flush waits for its writer thread, which an interrupt may have left
        unwoken: that wait was the hang a Ctrl-C during a write could cause.)"""
        try:
            try:
                self._file.close(flush=False)
            except TypeError:  # an ordinary file object
                self._file.close()
        except OSError:
            pass

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state not in (_State.FINISHED, _State.ABORTED):
            try:
                self.finish()
            except BaseException:
                self.abort()
                raise

    def _require(self, state: _State, call: str) -> None:
        if self._state is not state:
            raise UsageError(f"{call}() needs the writer to be {state.value}, it is {self._state.value}",
                             path=self.path)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Once bytes may be half-written, any failure leaves the writer FAILED (only abort())."""
        try:
            yield
        except BaseException:
            self._state = _State.FAILED
            raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- chunks ----------------------------------------------------------------------------------
def iter_chunks(data: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Any]:
    """Little-endian C-order byte pieces of an ndarray or buffer, views where possible."""
    return _chunks(data, chunk_bytes)[0]


def _chunks(data: Any, chunk_bytes: int) -> tuple[Iterator[Any], int]:
    if isinstance(data, np.ndarray):
        if data.dtype.hasobject:
            raise UsageError(f"cannot write an ndarray of {data.dtype}")
        return _array_chunks(data, chunk_bytes), data.nbytes
    try:
        view = memoryview(data)
    except TypeError:
        raise UsageError(f"tensor data must be bytes-like or an ndarray, got {type(data).__name__}") from None
    if not view.c_contiguous:
        return _array_chunks(np.asarray(view), chunk_bytes), view.nbytes
    flat = view.cast("B") if view.ndim != 1 or view.format != "B" else view
    return (flat[i: i + chunk_bytes] for i in range(0, flat.nbytes, chunk_bytes)), flat.nbytes


def _array_chunks(arr: np.ndarray, chunk_bytes: int) -> Iterator[np.ndarray]:
    little = arr.dtype.newbyteorder("<")
    if arr.flags.c_contiguous and little == arr.dtype:
        flat = arr.reshape(-1).view(np.uint8)
        for i in range(0, flat.size, chunk_bytes):
            yield flat[i: i + chunk_bytes]
        return
    rows = arr.reshape(1) if arr.ndim == 0 else arr
    step = max(1, chunk_bytes // max(1, rows[:1].nbytes))
    for i in range(0, rows.shape[0], step):
        yield np.ascontiguousarray(rows[i: i + step], dtype=little).reshape(-1).view(np.uint8)
