"""`diff` of two BitNet embedding models, tensor by tensor under their GGUF names: projections
as codes and beta (latent weights ternarized the converter's way, I2_S decoded), everything
else as the float32 values the runtime uses (Gemma3's norms as 1 + w on both sides), and the
hyperparameters the encoder reads, pooling included."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..formats.absmean import ternarize
from ..formats.ternary import TernaryWeight
from ..pipeline.sources.embedding import EmbSource, EmbTensor, open_embedding
from .diff import TensorDiff, WeightDiff, compare_configs, compare_pair

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


def diff_embeddings(path_a: Path, path_b: Path, progress: Callable[[int], None] | None = None, *,
                    strict: bool = False) -> WeightDiff:
    """Tensor by tensor; a float difference one side's declared rounding explains (an F16 norm)
    counts as equal and is named in `.rounded` (`strict`: none)."""
    from ..engine.encoder import float_plan
    from ..engine.rounding import Plan

    with open_embedding(path_a) as a, open_embedding(path_b) as b:
        plans = (Plan(), Plan()) if strict else (float_plan(a), float_plan(b))
        by_name = {t.gguf: t for t in b.tensors}
        tensors = [_pair(t.gguf, _value(t), _value(by_name[t.gguf]), plans) for t in a.tensors if t.gguf in by_name]
        names_a = {t.gguf for t in a.tensors}
        rounded = "; ".join(f"{plan.description()} on {side}" for side, plan in (("A", plans[1]), ("B", plans[0]))
                            if plan.applied)
        return WeightDiff(tuple(tensors), tuple(t.gguf for t in a.tensors if t.gguf not in by_name),
                          tuple(t.gguf for t in b.tensors if t.gguf not in names_a),
                          compare_configs(_config(a), _config(b)), rounded=rounded)


def _pair(name: str, a: object, b: object, plans: tuple) -> TensorDiff:
    from ..engine.rounding import round_values

    diff = compare_pair(name, a, b)
    if diff.identical or diff.kind != "float":
        return diff
    for plan, mine, theirs in ((plans[1], a, b), (plans[0], b, a)):
        kind = plan.float_kind(name)
        if kind and np.array_equal(round_values(mine, kind).view(np.uint32), np.asarray(theirs).view(np.uint32)):
            plan.count(name)
            return replace(diff, differing=0, max_abs_diff=0.0)
    return diff
