"""safetensors: a bounded, memory-mapped reader and a streaming writer.

    [u64 LE header length N][N bytes of JSON header, space-padded][tensor bytes]

The `safetensors` package reads and writes whole state dicts; it cannot stream a model one
tensor at a time into a file, and its numpy binding has no bf16. So the container is ours,
and the tests prove it byte-identical to `safetensors.torch.save` and readable by `safe_open`.
bf16 tensors travel as uint16 bit patterns (see `dtypes`).
"""
from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import (
    DuplicateTensor,
    FormatError,
    HeaderInvalid,
    HeaderTooLarge,
    OffsetOutOfRange,
    TruncatedFile,
    UnknownTensorType,
)
from .sniff import reject_lfs_pointer, require_regular

MAX_HEADER = 100_000_000  # the format's own limit

# dtype -> (numpy storage dtype, rank). The rank is the order of safetensors' Rust `Dtype`
# enum: its writer sorts tensors by rank (descending), then by name.
DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 0), "U8": ("u1", 1), "I8": ("i1", 2), "F8_E5M2": ("u1", 3),
    "F8_E4M3": ("u1", 4), "I16": ("<i2", 5), "U16": ("<u2", 6), "F16": ("<f2", 7),
    "BF16": ("<u2", 8), "I32": ("<i4", 9), "U32": ("<u4", 10), "F32": ("<f4", 11),
    "F64": ("<f8", 12), "I64": ("<i8", 13), "U64": ("<u8", 14),
}


def itemsize(dtype: str) -> int:
    return np.dtype(DTYPES[dtype][0]).itemsize


@dataclass(frozen=True)
class SafetensorsEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """One .safetensors file, validated on open; tensors are read-only memory-map views."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        require_regular(self.path)
        with open(self.path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(min(size, 8))
            reject_lfs_pointer(self.path, head + handle.read(56))
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.size = size
        self.metadata, self.tensors = self._parse_header()

    def _parse_header(self) -> tuple[dict[str, str], dict[str, SafetensorsEntry]]:
        if self.size < 8:
            raise TruncatedFile(f"{self.size} bytes is too short for a safetensors header", path=self.path)
        length = int.from_bytes(self._map[:8], "little")
        if length > MAX_HEADER or 8 + length > self.size:
            limit = min(MAX_HEADER, self.size - 8)
            raise HeaderTooLarge(
                f"header claims {length} bytes but at most {limit} are possible "
                "(truncated download, or not a safetensors file?)", path=self.path)
        try:
            header = json.loads(bytes(self._map[8 : 8 + length]), object_pairs_hook=_no_duplicates)
        except DuplicateTensor as exc:
            raise DuplicateTensor(str(exc), path=self.path) from None
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise HeaderInvalid(f"header is not valid JSON ({exc})", path=self.path) from None
        except RecursionError:
            raise HeaderInvalid("header nests JSON deeper than Python's parser goes (a crafted header: "
                                "a safetensors header is one flat object)", path=self.path) from None
        if not isinstance(header, dict):
            raise HeaderInvalid("header is not a JSON object", path=self.path)
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise HeaderInvalid("__metadata__ must map strings to strings", path=self.path)
        base = 8 + length
        tensors = {name: self._tensor_info(name, entry, base) for name, entry in header.items()}
        self._check_coverage(tensors, base)
        return metadata, tensors

    def _tensor_info(self, name: str, entry: object, base: int) -> SafetensorsEntry:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise HeaderInvalid("entry needs dtype, shape and data_offsets", path=self.path, tensor=name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise UnknownTensorType(f"unknown dtype {dtype!r}", path=self.path, tensor=name)
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise HeaderInvalid(f"shape {shape!r} is not a list of sizes", path=self.path, tensor=name)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise HeaderInvalid(f"data_offsets {offsets!r} is not [begin, end]", path=self.path, tensor=name)
        begin, end = offsets
        want = itemsize(dtype) * int(np.prod(shape, dtype=object))
        if not 0 <= begin <= end or end - begin != want:
            raise OffsetOutOfRange(
                f"data_offsets [{begin}, {end}] hold {end - begin} bytes but {dtype}{shape} needs {want}",
                path=self.path, tensor=name)
        if base + end > self.size:
            raise TruncatedFile(
                f"needs bytes {base + begin}..{base + end} but the file ends at {self.size}: "
                "truncated download?", path=self.path, tensor=name)
        return SafetensorsEntry(name, dtype, tuple(shape), base + begin, base + end)

    def _check_coverage(self, tensors: dict[str, SafetensorsEntry], base: int) -> None:
        cursor = base
        for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
            if info.begin != cursor:
                what = "overlaps the previous tensor" if info.begin < cursor else "leaves a hole before it"
                raise HeaderInvalid(f"data at {info.begin} {what} (expected {cursor})",
                                    path=self.path, tensor=info.name)
            cursor = info.end
        if cursor != self.size:
            raise HeaderInvalid(f"tensor data ends at {cursor} but the file has {self.size} bytes",
                                path=self.path)

    def raw(self, name: str) -> np.ndarray:
        """The tensor in its storage dtype (BF16 as uint16), a read-only view of the file."""
        info = self.tensors[name]
        array = np.frombuffer(self._map, dtype=DTYPES[info.dtype][0], count=info.nbytes // itemsize(info.dtype),
                              offset=info.begin) if info.nbytes else np.zeros(0, DTYPES[info.dtype][0])
        array.flags.writeable = False
        return array.reshape(info.shape)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still alive: the OS unmaps when they go
                pass

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateTensor(f"tensor {key!r} appears twice in the header")
        result[key] = value
    return result


@dataclass(frozen=True)
class TensorPlan:
    """What the writer needs before any data: name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return itemsize(self.dtype) * int(np.prod(self.shape, dtype=object))


def file_order(plans: list[TensorPlan]) -> list[TensorPlan]:
    """safetensors' own order: dtype rank descending, then name (Rust `prepare`)."""
    return sorted(plans, key=lambda p: (-DTYPES[p.dtype][1], p.name))


def header_bytes(plans: list[TensorPlan], metadata: dict[str, str] | None) -> bytes:
    """The 8-byte length and the JSON header, space-padded to a multiple of 8."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for plan in file_order(plans):
        header[plan.name] = {"dtype": plan.dtype, "shape": list(plan.shape),
                             "data_offsets": [offset, offset + plan.nbytes]}
        offset += plan.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class SafetensorsWriter:
    """Streams tensors into one file whose header is fixed up front by `plans`.

    Tensors may arrive in any order: each is written at its planned offset. The file is
    built under a temporary name in the same directory and renamed by `finish()`.
    `direct(path)`, if given, may return a writer with write(data, offset), size, flush(),
    fileno() and close(flush=) that takes the data instead of pwrite (the sinks' O_DIRECT
    writer); the header then goes last, once its final metadata is known.
    """

    def __init__(self, path: str | os.PathLike, plans: list[TensorPlan], metadata: dict[str, str] | None,
                 direct: Callable[[Path], object | None] | None = None):
        self.path = Path(path)
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise DuplicateTensor("the same tensor name is planned twice", path=self.path)
        self._plans = plans
        head = header_bytes(plans, metadata)
        self._header_size = len(head)
        self._offsets: dict[str, tuple[int, TensorPlan]] = {}
        cursor = len(head)
        for plan in file_order(plans):
            self._offsets[plan.name] = (cursor, plan)
            cursor += plan.nbytes
        self._temp = self.path.with_name(f".{self.path.name}.incomplete-{os.getpid()}")
        self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, cursor)
        self._size, self._head = cursor, head
        self._direct = direct(self._temp) if direct is not None else None
        if self._direct is None:
            os.pwrite(self._fd, head, 0)
        self._pending = set(self._offsets)

    def write(self, name: str, array: np.ndarray) -> None:
        """Write one tensor (storage dtype, planned shape) at its place in the file."""
        offset, plan = self._offsets[name]
        data = np.ascontiguousarray(array)
        if tuple(data.shape) != plan.shape or data.nbytes != plan.nbytes:
            raise FormatError(f"planned {plan.dtype}{list(plan.shape)} ({plan.nbytes} bytes), got "
                              f"{data.dtype}{list(data.shape)} ({data.nbytes} bytes)", path=self.path, tensor=name)
        self._pwrite(data, offset)
        self._pending.discard(name)

    def write_chunks(self, name: str, chunks: Iterable[np.ndarray]) -> None:
        """Write one tensor from consecutive pieces (storage dtype, row slices in order), so a
        large tensor never has to exist whole in its output dtype."""
        offset, plan = self._offsets[name]
        done = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk)
            if data.dtype.itemsize != itemsize(plan.dtype) or done + data.nbytes > plan.nbytes:
                raise FormatError(f"planned {plan.dtype}{list(plan.shape)} ({plan.nbytes} bytes), got a "
                                  f"{data.dtype} piece ending at byte {done + data.nbytes}", path=self.path,
                                  tensor=name)
            self._pwrite(data, offset + done)
            done += data.nbytes
        if done != plan.nbytes:
            raise FormatError(f"planned {plan.nbytes} bytes, the pieces hold {done}", path=self.path, tensor=name)
        self._pending.discard(name)

    def _pwrite(self, data: np.ndarray, offset: int) -> None:
        view = memoryview(data.reshape(-1).view(np.uint8))
        if self._direct is not None:
            self._direct.write(view, offset)
            return
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def finish(self, metadata: dict[str, str] | None = None) -> Path:
        """Close and rename into place. `metadata` may replace the planned metadata if its
        header has the same length (values known only at the end, written at fixed width)."""
        if metadata is not None:
            head = header_bytes(self._plans, metadata)
            if len(head) != self._header_size:
                self.abort()
                raise FormatError(f"final metadata changes the header size ({len(head)} != "
                                  f"{self._header_size} bytes)", path=self.path)
            self._head = head
            if self._direct is None:
                os.pwrite(self._fd, head, 0)
        if self._pending:
            self.abort()
            raise FormatError(f"{len(self._pending)} planned tensors were never written, e.g. "
                              f"{sorted(self._pending)[0]!r}", path=self.path)
        if self._direct is not None:
            self._direct.write(self._head, 0)
            self._direct.size = self._size
            self._direct.flush()
            os.fsync(self._direct.fileno())
            self._direct.close()
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self._temp, self.path)
        return self.path

    def abort(self) -> None:
        if self._direct is not None:
            try:
                self._direct.close(flush=False)
            except OSError:
                pass
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._temp.unlink(missing_ok=True)
