"""`inspect` of a BitNet embedding model: family, pooling, embedding size, and per tensor its
stored type and shape; projections with beta and the -1/0/+1 shares (the file's codes for
I2_S, the converter's ternarization of the latent weights otherwise)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..inspection import Inspection, TensorInfo
from ..ternary import TernaryWeight
from .absmean import ternarize
from .source import POOLING, open_embedding


def describe_embedding(path: Path, progress: Callable[[int], None] | None = None) -> Inspection:
    with open_embedding(path) as source:
        report = Inspection(str(path), source.kind, source.layout, family=source.family.name,
                            pooling=POOLING.get(source.pooling, str(source.pooling)),
                            embedding_size=source.embedding_size)
        for tensor in source.tensors:
            row = TensorInfo(tensor.gguf if source.kind == "gguf" else tensor.hf, tensor.stored, list(tensor.shape))
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
        return report
