"""A model on disk as (config, auxiliary files, a stream of named entries).

Every source, whatever its container and layout, yields the same things under transformers'
tensor names: projection weights as `TernaryWeight`, everything else as `Tensor` in its stored
dtype. Entries are planned (name, shape, kind) before any data is read, and each one is
loaded only when the pipeline asks for it, so memory holds one tensor at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BitnetPackError, MissingFile, NonFiniteWeight, UsageError
from ...families.arch import Family, family_of_config, is_projection
from ...families.validate import check_sizes
from ...formats import fastpath
from ...formats.dtypes import bf16_to_f32, f32_to_stored
from ...formats.kernel_config import Tiling
from ...formats.ternary import TernaryWeight

# Files carried over unchanged next to the weights (tokenizer, generation, chat template).
AUX_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "generation_config.json",
                "chat_template.json", "chat_template.jinja", "vocab.json", "merges.txt")


__all__ = ["Checkpoint", "Entry", "Tensor", "is_projection", "check_architecture", "open_checkpoint",
           "load_weights", "read_weights", "read_aux_files"]


_EXPONENT_BITS = {"BF16": np.uint16(0x7F80), "F16": np.uint16(0x7C00)}  # all ones: Inf or NaN


@dataclass(frozen=True, eq=False)
class Tensor:
    """A non-ternary tensor in its stored form: dtype "BF16" | "F16" | "F32" and raw data
    (bf16 as uint16 bit patterns)."""

    dtype: str
    data: np.ndarray

    def f32(self) -> np.ndarray:
        if self.dtype == "BF16":
            return bf16_to_f32(self.data)
        return np.asarray(self.data, dtype=np.float32)

    def check_finite(self, *, tensor: str | None = None, path: object = None) -> Tensor:
        """Self, or NonFiniteWeight naming how many NaN/Inf values it holds (an embedding or a
        norm weight with them computes NaN logits in every runtime). Read in row slices."""
        bad = size = 0
        for chunk in self.row_chunks():
            part, size = chunk.data.reshape(-1), size + chunk.data.size
            if chunk.dtype in _EXPONENT_BITS:
                mask = _EXPONENT_BITS[chunk.dtype]
                bad += int(np.count_nonzero((part.view(mask.dtype) & mask) == mask))
            else:
                bad += int(part.size - np.count_nonzero(np.isfinite(part)))
        if bad:
            raise NonFiniteWeight(f"{bad} NaN/Inf values of {size} in a {self.dtype} tensor", path=path,
                                  tensor=tensor)
        return self

    def converted(self, type_name: str) -> tuple[np.ndarray, int]:
        """The data as `type_name` storage ("BF16", "F16", "F32"), and how many values did not
        survive exactly (only narrowing to F16 can lose any: below its normal range, above 65504)."""
        if self.dtype == type_name:
            return self.data, 0
        fast = fastpath.convert_float(self.data, self.dtype, type_name)
        if fast is not None:
            data, inexact = fast
            return data, inexact if type_name == "F16" else 0
        values = self.f32()
        data = f32_to_stored(values, type_name)
        inexact = int(np.count_nonzero(data.astype(np.float32) != values)) if type_name == "F16" else 0
        return data, inexact

    def row_chunks(self, max_bytes: int | None = None) -> Iterator[Tensor]:
        """The tensor as consecutive row slices of about `max_bytes` (default
        `fastpath.CHUNK_BYTES`; whole inside `fastpath.reference()`). Once the consumer asks
        for the next slice, the file pages under the previous one leave this process."""
        data = self.data
        rows = data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)
        limit = max_bytes or fastpath.CHUNK_BYTES
        step = max(1, limit // max(1, rows[:1].nbytes)) if fastpath.streaming() else max(1, rows.shape[0])
        for start in range(0, rows.shape[0], step):
            part = rows[start:start + step]
            yield Tensor(self.dtype, part)
            fastpath.drop_mapped_pages(part)


@dataclass(frozen=True)
class Entry:
    """One tensor of a model, planned before it is read."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "linear" (a TernaryWeight) or "tensor" (a Tensor)
    dtype: str  # as stored in the source: "BF16", "U8", or a GGML type name
    nbytes: int  # bytes read from the source
    load: Callable[[], TernaryWeight | Tensor] = field(repr=False, compare=False)


@dataclass(frozen=True, eq=False)
class StoredProjection:
    """A projection's bytes exactly as the source stores them (a view of the mapped file, no
    decode), for the kernel to multiply from: `layout` names the bytes' layout (a registered
    layout's name, `bitnet_pack.formats.layouts.layout_names()`); `beta` is given when the bytes do not
    carry it (hf: from weight_scale), `tiling` for TL bytes."""

    layout: str
    data: np.ndarray
    shape: tuple[int, int]
    beta: np.float32 | None = None
    tiling: Tiling | None = None


class Checkpoint:
    """Base class of sources. Subclasses fill the attributes and implement `entries`."""

    path: Path
    config: dict
    family: Family  # the architecture description the tensors follow (see `arch`)
    kind: str  # "bf16-master", "hf-packed", "gguf"
    layout: str  # "bf16", or a registered layout's name
    notes: list[str]  # what the reader decided (scale convention, flavour), shown to users
    aux_files: dict[str, bytes]

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    # A directory layout's reader (named by its entry, `LayoutSpec.reader`) answers these two:
    @staticmethod
    def claims(path: Path) -> bool:
        """Whether `path` is this reader's checkpoint (open_checkpoint asks before anything else)."""
        return False

    @staticmethod
    def raw_files(path: Path) -> list:
        """The safetensors files `inspect --raw` shows for a checkpoint this reader claims."""
        raise UsageError("--raw shows GGUF and safetensors containers; this checkpoint has none", path=path)

    def stored(self, entry: Entry) -> StoredProjection | None:
        """A "linear" entry's stored bytes, when they are a packed layout; None when the
        projection has to be computed (a bf16 master, a float GGUF tensor)."""
        return None

    def release(self, entry: Entry) -> None:
        """Called once `entry` is written: forget its memory-mapped pages (they stay in the
        page cache), so memory tracks the tensor in flight, not the model."""

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def close(self) -> None:
        pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_architecture(config: dict, where: Path) -> Family:
    """The config's family (UnknownArchitecture for anything else), its sizes checked."""
    try:
        family = family_of_config(config)
    except BitnetPackError as exc:
        raise type(exc)(str(exc), path=where) from None
    check_sizes(config, where=where)
    return family


def read_aux_files(directory: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for pattern in AUX_PATTERNS:
        for path in sorted(directory.glob(pattern)):
            if path.is_file():
                found[path.name] = path.read_bytes()
    return found


def layout_reader(path: Path) -> type[Checkpoint] | None:
    """The reader a directory layout's entry names (`LayoutSpec.reader`) that claims `path`."""
    from ...formats.layouts import readers

    return next((reader for reader in readers() if reader.claims(path)), None)


def open_checkpoint(path: str | Path, **options: object) -> Checkpoint:
    """A directory a layout's own reader claims is read by it (bitnet.cpp's GPU checkpoint);
    another directory is a transformers checkpoint; a `.gguf` file is a GGUF; else an error."""
    path = Path(path)
    reader = layout_reader(path)
    if reader is not None:
        return reader(path)
    if path.is_dir():
        from .hf import HFCheckpoint

        return HFCheckpoint(path)
    if path.is_file() and path.suffix == ".gguf":
        from .gguf import GGUFCheckpoint

        return GGUFCheckpoint(path, **options)
    if path.is_file() and path.suffix == ".safetensors":
        from .hf import HFCheckpoint

        return HFCheckpoint(path.parent)
    raise MissingFile("not a checkpoint directory, .safetensors or .gguf file", path=path)


Weights = dict[str, TernaryWeight | StoredProjection | Tensor | np.ndarray]


def load_weights(path: str | Path, *, stored: bool = False, **options: object) -> tuple[dict, Weights]:
    """(config, {HF name: TernaryWeight or float32 array}) for the model/verify code; with
    `stored`, as `read_weights(stored=True)` (views that outlive the checkpoint)."""
    with open_checkpoint(path, **options) as checkpoint:
        return checkpoint.config, read_weights(checkpoint, stored=stored)


def read_weights(checkpoint: Checkpoint, *, stored: bool = False) -> Weights:
    """Every entry of an open checkpoint: projections ternary, other tensors as float32. With
    `stored`, nothing is converted: projections are their stored bytes when the source keeps
    them packed (`StoredProjection`), other tensors their stored `Tensor`."""
    weights: Weights = {}
    for entry in checkpoint.entries():
        packed = checkpoint.stored(entry) if stored and entry.kind == "linear" else None
        value = packed if packed is not None else entry.load()
        if isinstance(value, Tensor):
            value.check_finite(tensor=entry.name, path=checkpoint.path)
        weights[entry.name] = value.f32() if isinstance(value, Tensor) and not stored else value
    return weights
