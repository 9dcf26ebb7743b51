"""Sinks: where converted tensors go. Each takes the source's planned entries, announces
its own plan (names, dtypes or layouts, shapes, bytes) before writing, then receives the
entries one at a time and writes them through; `finish()` makes the output appear."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...formats.ternary import TernaryWeight
from ..sources import Checkpoint, Entry


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # as written in the output
    kind: str  # a dtype ("BF16", "F16") or a layout name ("hf", "i2_s", ...)
    shape: tuple[int, ...]
    nbytes: int


class Sink:
    path: Path

    def plan(self, source: Checkpoint, entries: list[Entry]) -> list[PlannedTensor]:
        raise NotImplementedError

    def begin(self, source: Checkpoint, entries: list[Entry]) -> None:
        raise NotImplementedError

    def put(self, entry: Entry, value: TernaryWeight | object) -> None:
        raise NotImplementedError

    def finish(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError
