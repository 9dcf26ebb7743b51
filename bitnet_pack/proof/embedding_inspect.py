"""`inspect` of a BitNet embedding model: family, pooling, embedding size, and per tensor its
stored type and shape; projections with beta and the -1/0/+1 shares (the file's codes for
I2_S, the converter's ternarization of the latent weights otherwise)."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ..formats.absmean import ternarize
from ..formats.layouts import layout_of_type
from ..formats.ternary import TernaryWeight
from ..pipeline.sources.embedding import POOLING, open_embedding
from .inspection import Inspection, TensorRow, summary

FLOAT_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def describe_embedding(path: Path, progress: Callable[[int], None] | None = None, *,
                       hf_names: bool = False) -> Inspection:
    """A GGUF's tensors under the file's own names unless `hf_names` (as `inspection.describe`)."""
    with open_embedding(path) as source:
        report = Inspection(str(path), source.kind, source.layout, family=source.family.name,
                            pooling=POOLING.get(source.pooling, str(source.pooling)),
                            embedding_size=source.embedding_size)
        for tensor in source.tensors:
            name = tensor.gguf if source.kind == "gguf" and not hf_names else tensor.hf
            row = TensorRow(name, tensor.stored, list(tensor.shape), nbytes=_nbytes(tensor.stored, tensor.shape))
            if tensor.kind == "linear":
                value = tensor.load()
                weight = value if isinstance(value, TernaryWeight) else ternarize(value, tensor=tensor.gguf)
                minus, zero, plus = weight.counts()
                size = max(1, minus + zero + plus)
                row.layout, row.beta = tensor.stored.lower(), float(weight.beta)
                row.share = {"-1": minus / size, "0": zero / size, "+1": plus / size}
            report.tensors.append(row)
            if progress is not None:
                progress(0)
        report.notes = list(source.notes) + [f"pooling {report.pooling.upper()}, embedding size "
                                             f"{report.embedding_size} (L2-normalized by the caller)"]
        if source.kind == "hf" or any(t.stored != "I2_S" for t in source.tensors if t.kind == "linear"):
            report.notes.append("latent projections: beta and shares are the converter's ternarization")
        report.model = summary(source.config, report.tensors, source.path)
        return report


def _nbytes(stored: str, shape: tuple[int, ...]) -> int | None:
    """Bytes a tensor takes in the file: a float type's elements, or its layout's blocks."""
    if stored in FLOAT_BYTES:
        return FLOAT_BYTES[stored] * math.prod(shape)
    layout = layout_of_type(stored)
    return None if layout is None else layout.nbytes(tuple(shape))
