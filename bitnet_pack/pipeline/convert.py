"""The pipeline: source -> ternary tensors -> layout -> sink, one tensor at a time."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BitnetPackError, UsageError
from ..families.validate import validate
from ..formats import fastpath
from .sinks import PlannedTensor, Sink
from .sources import Checkpoint, Entry, Tensor


@dataclass
class ConvertResult:
    output: Path
    source_kind: str
    tensors: int
    bytes_read: int
    bytes_written: int
    notes: list[str] = field(default_factory=list)
    planned: list[PlannedTensor] = field(default_factory=list)


def plan(source: Checkpoint, sink: Sink) -> list[PlannedTensor]:
    """What `convert` would write, without reading tensor data (for --dry-run): the same
    validation verdict as a real run."""
    entries = source.entries()
    validate(source, entries)
    return sink.plan(source, entries)


def convert(source: Checkpoint, sink: Sink, *, progress: Callable[[int], None] | None = None) -> ConvertResult:
    """Stream every entry of `source` into `sink`; on any error the sink leaves nothing behind.
    The source is validated against its architecture before the sink creates anything."""
    entries = source.entries()
    validate(source, entries)
    planned = sink.plan(source, entries)
    try:
        sink.begin(source, entries)  # inside: an interrupt while it creates the output is cleaned up too
        for entry, value in _loaded(entries):
            sink.put(entry, value)
            source.release(entry)
            if progress is not None:
                progress(entry.nbytes)
        output = sink.finish()
    except BaseException:
        sink.abort()
        raise
    return ConvertResult(output, source.kind, len(entries), sum(e.nbytes for e in entries),
                         sum(p.nbytes for p in planned), list(source.notes), planned)


def _loaded(entries: list[Entry]) -> Iterator[tuple[Entry, object]]:
    """Each entry with its loaded value. While the caller writes one, the next one loads on a
    second thread (the hot loops release the GIL), so at most two tensors are in memory."""
    if not fastpath.streaming() or len(entries) < 2:
        for entry in entries:
            yield entry, load_entry(entry)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="bitnet-pack-load") as loader:
        ahead = loader.submit(load_entry, entries[0])
        for index, entry in enumerate(entries):
            value = ahead.result()
            if index + 1 < len(entries):
                ahead = loader.submit(load_entry, entries[index + 1])
            yield entry, value


def load_entry(entry: Entry) -> object:
    """`entry.load()`; an error raised without a tensor name (a layout's decode) gets this one."""
    try:
        value = entry.load()
        return value.check_finite(tensor=entry.name) if isinstance(value, Tensor) else value
    except BitnetPackError as exc:
        if exc.tensor is not None or isinstance(exc, UsageError):
            raise
        text, where = str(exc), f"{exc.path}: " if exc.path else ""
        raise type(exc)(text.removeprefix(where), path=exc.path, tensor=entry.name) from exc
