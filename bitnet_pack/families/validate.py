"""The one validation layer between sources and sinks: before a byte is written (and in
--dry-run, which plans the same way), a source must be complete and consistent with its
family's architecture description (`arch.Family`) and its hyper-parameters must be usable.

    hyper-parameters   sizes positive integers; heads divisible by kv heads; an even head_dim;
                       hidden_act the family's; rope_theta and rms_norm_eps finite and > 0 in
                       float32 (what GGUF stores); rope_scaling none (or linear, factor 1)
    tensors            at least one; every expected tensor present, none unknown, every shape
                       the one config.json / the GGUF metadata implies, projections ternary

The first problem is raised as a typed error with one line naming it (exit 1).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from ..errors import (
    FormatError,
    HeaderInvalid,
    MissingTensor,
    ShapeError,
    UnexpectedTensor,
    UnknownArchitecture,
)
from .arch import Family, is_projection

SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def check_hyperparameters(config: Mapping, family: Family, *, where: object = None, origin: str = "config.json",
                          activations: tuple[str, ...] | None = None) -> None:
    """Raise the first hyper-parameter of `config` that no runtime could use. hidden_act must
    be the family's, or with `activations` (the model's own switch) one of those."""
    check_sizes(config, where=where, origin=origin)
    act = config.get("hidden_act", family.hidden_act)
    if activations is not None and act not in activations:
        raise UnknownArchitecture(f"{origin} hidden_act {act!r}: the model runs {' or '.join(activations)}",
                                  path=where)
    if activations is None and act != family.hidden_act:
        raise UnknownArchitecture(f"{origin} hidden_act {act!r}: the {family.title} graph uses "
                                  f"{family.hidden_act!r}", path=where)
    theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    _positive_float32(theta, "rope_theta", origin, where)
    _positive_float32(config.get("rms_norm_eps", 1e-5), "rms_norm_eps", origin, where)
    check_rope(config, where=where, origin=origin)


def check_rope(config: Mapping, *, where: object = None, origin: str = "config.json") -> None:
    """Unscaled RoPE only (no runtime path here applies scaling; dropping it would change the model)."""
    _check_rope_scaling(config.get("rope_scaling"), origin, where)
    _check_rope_scaling(config.get("rope_parameters"), origin, where)  # transformers 5 keeps scaling here


def check_layer_count(config: Mapping, tensors: int, *, where: object = None, origin: str = "config.json") -> None:
    """num_hidden_layers bounded by the tensors the file holds, before any per-layer table is built."""
    layers = config["num_hidden_layers"]
    if layers > tensors:
        key = "block_count" if origin == "GGUF metadata" else "num_hidden_layers"
        raise MissingTensor(f"{origin} {key} {layers}, but the file holds only {tensors} "
                            "tensors (each layer needs several)", path=where)


def check_sizes(config: Mapping, *, where: object = None, origin: str = "config.json") -> None:
    """The sizes every layout and the model need: positive integers, heads dividing hidden and
    divisible by kv heads, an even head_dim (checked when a source opens: shapes follow)."""
    for key in SIZES + OPTIONAL_SIZES:
        value = config.get(key)
        if value is None and key in OPTIONAL_SIZES:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeaderInvalid(f"{origin} {key} must be a positive integer, got {value!r}", path=where)
    for key in ("rms_norm_eps", "rope_theta"):  # the values are checked by check_hyperparameters
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise HeaderInvalid(f"{origin} {key} must be a number, got {value!r}", path=where)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if heads % kv_heads:
        raise HeaderInvalid(f"{origin} num_attention_heads {heads} is not a multiple of num_key_value_heads "
                            f"{kv_heads}", path=where)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    if not config.get("head_dim") and config["hidden_size"] % heads:
        raise HeaderInvalid(f"{origin} hidden_size {config['hidden_size']} is not a multiple of "
                            f"num_attention_heads {heads}", path=where)
    if head_dim % 2:
        raise HeaderInvalid(f"{origin} head_dim {head_dim} is odd: RoPE rotates pairs", path=where)


def _positive_float32(value: object, key: str, origin: str, where: object) -> None:
    """A finite number > 0 that stays finite and > 0 as the float32 GGUF stores."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HeaderInvalid(f"{origin} {key} must be a number, got {value!r}", path=where)
    if not math.isfinite(value) or value <= 0:
        raise HeaderInvalid(f"{origin} {key} must be finite and > 0, got {value!r}", path=where)
    with np.errstate(over="ignore", under="ignore"):
        narrow = np.float32(value)
    if not np.isfinite(narrow) or narrow <= 0:
        raise HeaderInvalid(f"{origin} {key} {value!r} is not a positive float32 (GGUF stores float32)",
                            path=where)


def _check_rope_scaling(scaling: object, origin: str, where: object) -> None:
    if scaling is None:
        return
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else None
    if kind in ("linear", "default") and scaling.get("factor", 1.0) == 1.0:
        return
    raise HeaderInvalid(f"{origin} rope scaling {scaling!r} is not supported (only unscaled RoPE)", path=where)


def check_tensors(family: Family, config: Mapping, entries: list, *, where: object = None,
                  origin: str = "config.json") -> None:
    """Every entry (name, shape, kind) against the family's tensors for `config`. Errors name
    tensors as the file does (GGUF names when `origin` is the GGUF metadata)."""
    def stored(name: str) -> str:
        return family.to_gguf(name) if origin == "GGUF metadata" else name

    if not entries:
        raise MissingTensor("holds no tensors", path=where)
    check_layer_count(config, len(entries), where=where, origin=origin)
    expected = family.tensor_shapes(dict(config))
    for entry in entries:
        shape = expected.get(entry.name)
        if shape is None:
            raise UnexpectedTensor(_unexpected(entry.name, family, config, origin), path=where, tensor=entry.name)
        if tuple(entry.shape) != shape:
            raise ShapeError(f"shape {list(entry.shape)} where {origin} implies {list(shape)}", path=where,
                             tensor=stored(entry.name))
        if (entry.kind == "linear") != is_projection(entry.name):
            wanted = "ternary" if is_projection(entry.name) else "float"
            raise FormatError(f"stored as {entry.dtype}, which is not a {wanted} tensor", path=where,
                              tensor=stored(entry.name))
    present = {entry.name for entry in entries}
    for name, shape in expected.items():
        if name not in present:
            raise MissingTensor(f"the {family.title} architecture needs this tensor {list(shape)}, "
                                f"absent{_layers_hint(name, config, origin)}", path=where, tensor=stored(name))


def _unexpected(name: str, family: Family, config: Mapping, origin: str) -> str:
    layer = _LAYER.match(name)
    if layer and int(layer.group(1)) >= config["num_hidden_layers"]:
        return f"layer {layer.group(1)} is beyond {origin} num_hidden_layers {config['num_hidden_layers']}"
    if name == "lm_head.weight":
        return f"an untied output, but {origin} says tie_word_embeddings true"
    return f"not part of the {family.title} architecture"


def _layers_hint(name: str, config: Mapping, origin: str) -> str:
    layer = _LAYER.match(name)
    return f" ({origin} says num_hidden_layers {config['num_hidden_layers']})" if layer else ""


def validate(source, entries: list) -> None:
    """The source (a `checkpoints.Checkpoint`) and its planned entries, before anything is written."""
    origin = "GGUF metadata" if source.kind == "gguf" else "config.json"
    check_hyperparameters(source.config, source.family, where=source.path, origin=origin)
    check_tensors(source.family, source.config, entries, where=source.path, origin=origin)
