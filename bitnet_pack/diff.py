"""Two checkpoints compared in ternary space, one tensor pair at a time.

Whatever the containers and layouts (a bf16 master, a packed directory, any GGUF), both sides
are read as the pipeline reads them: projections as ternary codes + beta, everything else as
float32 values. Tensors are matched by their transformers name and compared exactly: how many
codes differ, whether beta's float32 bits differ (and by how much), how many float elements
differ. Memory holds one pair at a time, so 2B4T-sized models diff in a few hundred MB.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .checkpoints import Entry, Tensor, open_checkpoint
from .convert import load_entry
from .errors import BitnetPackError
from .ternary import TernaryWeight
from .verify import TensorDiff, WeightDiff, compare_weights

__all__ = ["diff_checkpoints", "diff_entries"]


def diff_checkpoints(path_a: str | Path, path_b: str | Path, *, options_a: dict | None = None,
                     options_b: dict | None = None,
                     progress: Callable[[int], None] | None = None) -> WeightDiff:
    """Compare every tensor of A with the tensor of the same name in B (see the module doc)."""
    with open_checkpoint(path_a, **(options_a or {})) as a, open_checkpoint(path_b, **(options_b or {})) as b:
        return diff_entries(a.entries(), b.entries(), progress=progress, paths=(a.path, b.path),
                            releases=(a.release, b.release))


def diff_entries(entries_a: list[Entry], entries_b: list[Entry], *,
                 progress: Callable[[int], None] | None = None,
                 paths: tuple[Path | None, Path | None] = (None, None),
                 releases: tuple[Callable[[Entry], None], Callable[[Entry], None]] | None = None) -> WeightDiff:
    """The comparison of two entry lists (names matched, each pair loaded, compared, dropped)."""
    by_name = {entry.name: entry for entry in entries_b}
    names_a = {entry.name for entry in entries_a}
    tensors = []
    for entry in entries_a:
        other = by_name.get(entry.name)
        if other is None:
            continue
        tensors.append(compare_pair(entry.name, _load(entry, paths[0]), _load(other, paths[1])))
        if releases is not None:  # memory holds one pair, not the models
            releases[0](entry)
            releases[1](other)
        if progress is not None:
            progress(entry.nbytes + other.nbytes)
    return WeightDiff(tensors=tuple(tensors),
                      only_in_a=tuple(e.name for e in entries_a if e.name not in by_name),
                      only_in_b=tuple(e.name for e in entries_b if e.name not in names_a))


def compare_pair(name: str, a: TernaryWeight | Tensor | np.ndarray, b: TernaryWeight | Tensor | np.ndarray) -> TensorDiff:
    """One pair: ternary against ternary (codes, beta bits), float against float (value bits)."""
    return compare_weights({name: _comparable(a)}, {name: _comparable(b)}).tensors[0]


def _load(entry: Entry, path: Path | None) -> TernaryWeight | Tensor:
    """The tensor; errors name the tensor (load_entry) and the checkpoint it came from."""
    try:
        return load_entry(entry)
    except BitnetPackError as exc:
        if exc.path is not None or path is None:
            raise
        raise type(exc)(str(exc), path=path) from exc


def _comparable(value: TernaryWeight | Tensor | np.ndarray) -> TernaryWeight | np.ndarray:
    return value.f32() if isinstance(value, Tensor) else value
