"""`diff` of two BitNet embedding models, tensor by tensor under their GGUF names: projections
as codes and beta (latent weights ternarized the converter's way, I2_S decoded), everything
else as the float32 values the runtime uses (Gemma3's norms as 1 + w on both sides), and the
hyperparameters the encoder reads, pooling included."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..diff import WeightDiff, compare_configs, compare_pair
from ..ternary import TernaryWeight
from .absmean import ternarize
from .source import EmbSource, EmbTensor, open_embedding

CONFIG_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "vocab_size", "rope_theta", "rms_norm_eps")


def _value(tensor: EmbTensor) -> TernaryWeight | np.ndarray:
    value = tensor.load()
    if tensor.kind == "linear" and not isinstance(value, TernaryWeight):
        return ternarize(value, tensor=tensor.gguf)
    return value


def _config(source: EmbSource) -> dict[str, object]:
    c = source.config
    heads = c.get("num_attention_heads")
    values = {key: c.get(key) for key in CONFIG_KEYS}
    values["num_key_value_heads"] = values["num_key_value_heads"] or heads
    values["head_dim"] = values["head_dim"] or c["hidden_size"] // heads
    return values | {"pooling_type": source.pooling}


def diff_embeddings(path_a: Path, path_b: Path, progress: Callable[[int], None] | None = None) -> WeightDiff:
    with open_embedding(path_a) as a, open_embedding(path_b) as b:
        by_name = {t.gguf: t for t in b.tensors}
        tensors = [compare_pair(t.gguf, _value(t), _value(by_name[t.gguf])) for t in a.tensors if t.gguf in by_name]
        names_a = {t.gguf for t in a.tensors}
        return WeightDiff(tuple(tensors), tuple(t.gguf for t in a.tensors if t.gguf not in by_name),
                          tuple(t.gguf for t in b.tensors if t.gguf not in names_a),
                          compare_configs(_config(a), _config(b)))
