"""What a checkpoint holds, as data: per tensor its name, dtype, shape, layout, beta and the
share of -1/0/+1 (`describe`); or the container as stored, like gguf-dump (`describe_raw`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..formats.layouts import find_layout, layout_notes
from ..formats.ternary import TernaryWeight
from ..pipeline.sources import open_checkpoint

ARRAY_SHOWN = 8  # elements of a KV array kept in the raw view (the 2B4T vocabulary is 128k strings)


@dataclass
class TensorRow:
    """One tensor as `inspect` shows it; `beta` and `share` only for ternary projections."""

    name: str
    dtype: str
    shape: list[int]
    layout: str | None = None
    beta: float | None = None
    share: dict[str, float] | None = None
    nbytes: int | None = None  # bytes stored in the file


@dataclass
class Inspection:
    """A checkpoint's kind ("bf16-master", "hf-packed", "gguf"), projection layout, the reader's
    notes, and every tensor."""

    path: str
    kind: str
    layout: str
    notes: list[str] = field(default_factory=list)
    tensors: list[TensorRow] = field(default_factory=list)
    source: str | None = None  # "org/name@<commit>" for hub sources
    family: str = ""  # the architecture family (arch.py): 2b4t, 1bitllm, llama, emb-qwen3, emb-gemma3
    model: dict = field(default_factory=dict)  # layers, vocab, context, hidden, parameters, tensor/file bytes
    pooling: str | None = None  # embedding models: "last", "mean", "cls"
    embedding_size: int | None = None  # embedding models: the pooled vector's length

    def to_dict(self) -> dict:
        return asdict(self)


def describe(path: Path, progress: Callable[[int], None] | None = None, *, hf_names: bool = False,
             **read_options: object) -> Inspection:
    """Read every tensor of the checkpoint at `path` (one at a time) into an `Inspection`;
    a GGUF's tensors under the file's own names unless `hf_names`."""
    from ..pipeline.sources.embedding import is_embedding_model

    if is_embedding_model(path):
        from .embedding_inspect import describe_embedding

        return describe_embedding(path, progress, hf_names=hf_names)
    with open_checkpoint(path, **read_options) as source:
        report = Inspection(str(path), source.kind, source.layout, family=source.family.name)
        stored = source.kind == "gguf" and not hf_names
        for entry in source.entries():
            name = source.family.to_gguf(entry.name) if stored else entry.name
            row = TensorRow(name, entry.dtype, list(entry.shape),
                             source.layout if entry.kind == "linear" else None, nbytes=entry.nbytes)
            value = entry.load()
            if isinstance(value, TernaryWeight):
                minus, zero, plus = value.counts()
                size = max(1, minus + zero + plus)
                row.beta = float(value.beta)
                row.share = {"-1": minus / size, "0": zero / size, "+1": plus / size}
            report.tensors.append(row)
            source.release(entry)
            if progress is not None:
                progress(entry.nbytes)
        if not report.tensors:
            raise FormatError("holds no tensors: not a model checkpoint", path=path)
        report.notes = list(source.notes) + _layout_notes(source.layout)
        report.model = summary(source.config, report.tensors, path)
        return report


def summary(config: dict, rows: list[TensorRow], path: Path) -> dict:
    """The model at a glance: sizes from its config, parameters and bytes from its tensors."""
    parameters = sum(int(np.prod(row.shape, dtype=np.int64)) for row in rows)
    return {"layers": config.get("num_hidden_layers"), "vocab": config.get("vocab_size"),
            "context": config.get("max_position_embeddings"), "hidden": config.get("hidden_size"),
            "parameters": parameters, "tensor_bytes": sum(row.nbytes or 0 for row in rows),
            "file_bytes": source_bytes(path)}


def source_bytes(path: Path) -> int:
    """Bytes of a checkpoint's tensor files (a .gguf, or a directory's *.safetensors)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.safetensors"))


def _layout_notes(names: str) -> list[str]:
    """What the projections' layouts ("i2_s", or several joined by "+") and the runtimes say about them."""
    found = [find_layout(name) for name in names.split("+")]
    return list(dict.fromkeys(n for layout in found if layout is not None for n in layout_notes(layout)))


def describe_raw(path: Path) -> dict:
    """The container as stored: GGUF header, key-values and tensor table, or safetensors
    headers (every shard), with absolute byte offsets."""
    if path.is_file() and path.suffix == ".gguf":
        return _raw_gguf(path)
    from ..containers.safetensors import SafetensorsFile
    from ..containers.shards import SafetensorsDir
    from ..pipeline.sources import layout_reader

    reader = layout_reader(path)
    if reader is not None:  # a directory layout's own files (its reader says which it shows)
        files = reader.raw_files(path)
        try:
            return {"path": str(path), "container": "safetensors", "files": [_raw_safetensors(f) for f in files]}
        finally:
            for file in files:
                file.close()

    if path.is_file():
        with SafetensorsFile(path) as file:
            return {"path": str(path), "container": "safetensors", "files": [_raw_safetensors(file)]}
    directory = SafetensorsDir(path)
    try:
        return {"path": str(path), "container": "safetensors", "files": [_raw_safetensors(f) for f in directory.files]}
    finally:
        directory.close()


def _raw_gguf(path: Path) -> dict:
    from ..containers.gguf import GGUFFile, json_type_name

    with GGUFFile(path) as file:
        kv = {key: _kv_json(field, json_type_name) for key, field in file.kv.items()}
        tensors = [{"name": t.name, "type": t.type_name, "type_id": t.type_id, "shape": list(t.shape),
                    "ne": list(t.ne), "offset": t.abs_offset, "nbytes": t.nbytes} for t in file.tensors.values()]
        return {"path": str(path), "container": "gguf", "version": file.version, "alignment": file.alignment,
                "type_ids": file.types.flavour and f"bitnet.cpp {file.types.flavour}" or "mainline",
                "data_start": file.data_start, "kv": kv, "tensors": tensors}


def _kv_json(field, type_name) -> dict:
    from gguf import GGUFValueType

    if field.vtype != GGUFValueType.ARRAY:
        return {"type": type_name(field.vtype), "value": field.value}
    values = field.value
    shown = values[:ARRAY_SHOWN]
    shown = shown.tolist() if isinstance(shown, np.ndarray) else ["[...]" if hasattr(v, "vtype") else v for v in shown]
    return {"type": f"array[{type_name(field.subtype)}]", "count": len(values), "value": shown}


def _raw_safetensors(file) -> dict:
    tensors = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "offset": t.begin, "nbytes": t.nbytes}
               for t in sorted(file.tensors.values(), key=lambda t: t.begin)]
    return {"file": file.path.name, "size": file.size, "metadata": file.metadata, "tensors": tensors}
