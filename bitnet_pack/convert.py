"""The pipeline: source -> ternary tensors -> layout -> sink, one tensor at a time."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import Checkpoint
from .sinks import PlannedTensor, Sink


@dataclass
class ConvertResult:
    output: Path
    source_kind: str
    tensors: int
    bytes_read: int
    bytes_written: int
    notes: list[str] = field(default_factory=list)


def plan(source: Checkpoint, sink: Sink) -> list[PlannedTensor]:
    """What `convert` would write, without reading tensor data (for --dry-run)."""
    return sink.plan(source, source.entries())


def convert(source: Checkpoint, sink: Sink, *, progress: Callable[[int], None] | None = None) -> ConvertResult:
    """Stream every entry of `source` into `sink`; on any error the sink leaves nothing behind."""
    entries = source.entries()
    planned = sink.plan(source, entries)
    sink.begin(source, entries)
    try:
        for entry in entries:
            sink.put(entry, entry.load())
            if progress is not None:
                progress(entry.nbytes)
        output = sink.finish()
    except BaseException:
        sink.abort()
        raise
    return ConvertResult(output, source.kind, len(entries), sum(e.nbytes for e in entries),
                         sum(p.nbytes for p in planned), list(source.notes))
