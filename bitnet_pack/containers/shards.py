"""A checkpoint's safetensors: one `model.safetensors`, or shards listed by an index.

    model.safetensors.index.json = {"metadata": {"total_size": N},
                                    "weight_map": {tensor: "model-0000k-of-0000n.safetensors"}}

The index is checked against the shards actually present (llama.cpp's `index_tensors` does
the same): a missing shard, a tensor the index promises but no shard holds, or a tensor in
two places is an error that names it.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import DuplicateTensor, HeaderInvalid, MissingFile
from .safetensors import SafetensorsEntry, SafetensorsFile, SafetensorsWriter, TensorPlan

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"


class SafetensorsDir:
    """All tensors of a checkpoint directory, each read lazily from its shard."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.files: list[SafetensorsFile] = []
        self.where: dict[str, tuple[SafetensorsFile, SafetensorsEntry]] = {}
        index = self.directory / INDEX
        if index.is_file():
            self._open_index(index)
        elif (self.directory / SINGLE).is_file():
            self._add(SafetensorsFile(self.directory / SINGLE))
        else:
            shards = sorted(self.directory.glob("*.safetensors"))
            if not shards:
                raise MissingFile(f"no {SINGLE}, {INDEX} or *.safetensors here", path=self.directory)
            for shard in shards:
                self._add(SafetensorsFile(shard))

    def _open_index(self, index: Path) -> None:
        try:
            weight_map = json.loads(index.read_text(), object_pairs_hook=_no_duplicate_keys)["weight_map"]
        except DuplicateTensor as exc:
            raise HeaderInvalid(f"not a safetensors index ({exc})", path=index) from None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise HeaderInvalid(f"not a safetensors index ({type(exc).__name__}: {exc})", path=index) from None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise HeaderInvalid("not a safetensors index (weight_map must map tensor names to file names)",
                                path=index)
        names = sorted(set(weight_map.values()))
        escaping = [n for n in names if not _plain_file_name(n)]
        if escaping:  # refused before any open: a shard is a file of this folder, nothing else
            raise HeaderInvalid(f"weight_map names {escaping[0]!r}: shard names must be plain file names "
                                "inside the checkpoint folder", path=index)
        missing = [n for n in names if not (self.directory / n).is_file()]
        if missing:
            raise MissingFile(f"{len(missing)} of {len(names)} shards named by the index are missing: "
                              f"{', '.join(missing[:3])}", path=index)
        for name in names:
            self._add(SafetensorsFile(self.directory / name))
        promised = {t for t, f in weight_map.items() if self.where.get(t, (None,))[0] is None
                    or self.where[t][0].path.name != f}
        if promised:
            example = sorted(promised)[0]
            raise HeaderInvalid(f"{len(promised)} tensors are not where the index says, e.g. {example!r} "
                                f"(index: {weight_map[example]})", path=index)
        extra = set(self.where) - set(weight_map)
        if extra:
            raise HeaderInvalid(f"{len(extra)} tensors in the shards are missing from the index, "
                                f"e.g. {sorted(extra)[0]!r}", path=index)

    def _add(self, file: SafetensorsFile) -> None:
        self.files.append(file)
        for name, info in file.tensors.items():
            if name in self.where:
                raise DuplicateTensor(f"in both {self.where[name][0].path.name} and {file.path.name}",
                                      path=self.directory, tensor=name)
            self.where[name] = (file, info)

    @property
    def metadata(self) -> dict[str, str]:
        return self.files[0].metadata if self.files else {}

    def info(self, name: str) -> SafetensorsEntry:
        return self.where[name][1]

    def raw(self, name: str) -> np.ndarray:
        return self.where[name][0].raw(name)

    def close(self) -> None:
        for file in self.files:
            file.close()


def _plain_file_name(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and ":" not in name)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateTensor(f"key {key!r} appears twice")
        result[key] = value
    return result


class ShardedWriter:
    """Writes planned tensors into one file, or into shards of at most `max_shard_size` bytes
    plus an index. Tensors are assigned to shards in name order; data streams in any order."""

    def __init__(self, directory: Path, plans: list[TensorPlan], metadata: dict[str, str],
                 max_shard_size: int | None = None, direct: Callable[[Path], object | None] | None = None):
        self.directory = directory
        groups = _split(sorted(plans, key=lambda p: p.name), max_shard_size)
        names = [SINGLE] if len(groups) == 1 else [SHARD_NAME.format(i + 1, len(groups)) for i in range(len(groups))]
        self.writers = [SafetensorsWriter(directory / n, g, metadata, direct)
                        for n, g in zip(names, groups, strict=True)]
        self.route = {p.name: w for w, g in zip(self.writers, groups, strict=True) for p in g}
        self.total = sum(p.nbytes for p in plans)
        self.sharded = len(groups) > 1

    def write(self, name: str, array: np.ndarray) -> None:
        self.route[name].write(name, array)

    def write_chunks(self, name: str, chunks: Iterable[np.ndarray]) -> None:
        self.route[name].write_chunks(name, chunks)

    def finish(self, metadata: dict[str, str] | None = None) -> list[Path]:
        paths = [w.finish(metadata) for w in self.writers]
        if self.sharded:
            index = {"metadata": {"total_size": self.total},
                     "weight_map": {n: w.path.name for n, w in sorted(self.route.items())}}
            (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return paths

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()


def _split(plans: list[TensorPlan], limit: int | None) -> list[list[TensorPlan]]:
    if not limit:
        return [plans]
    groups: list[list[TensorPlan]] = [[]]
    size = 0
    for plan in plans:
        if groups[-1] and size + plan.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(plan)
        size += plan.nbytes
    return groups
