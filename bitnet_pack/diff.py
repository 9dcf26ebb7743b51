"""Two checkpoints compared in ternary space, one tensor pair at a time, and by their config.

Whatever the containers and layouts (a bf16 master, a packed directory, any GGUF), both sides
are read as the pipeline reads them: projections as ternary codes + beta, everything else as
float32 values. Tensors are matched by their transformers name and compared exactly: how many
codes differ, whether beta's float32 bits differ (and by how much), how many float elements
differ. Memory holds one pair at a time, so 2B4T-sized models diff in a few hundred MB.

The config both sources expose (config.json, or the one rebuilt from GGUF metadata) is part
of the model: rope theta, eps, head counts, vocab and the other keys in `model_config` change
what it computes, so a difference there is a difference of the models (`WeightDiff.config`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .checkpoints import Entry, Tensor, open_checkpoint
from .convert import load_entry
from .dtypes import round_to_bf16
from .errors import BitnetPackError
from .ternary import TernaryWeight

if TYPE_CHECKING:  # the kernel is not loaded for a diff (the CLI imports this module at start)
    from .kernel import PackedMatrix

__all__ = ["ConfigDiff", "TensorDiff", "WeightDiff", "compare_configs", "compare_weights", "diff_checkpoints",
           "diff_entries", "model_config"]


@dataclass(frozen=True)
class TensorDiff:
    """One tensor present on both sides. `differing` counts codes (ternary) or elements."""

    name: str
    kind: str  # "ternary", "float", or "mismatch" (kinds or shapes differ)
    shape: tuple[int, ...]
    differing: int = 0
    size: int = 0
    beta_a: float | None = None
    beta_b: float | None = None
    max_abs_diff: float = 0.0

    @property
    def betas_equal(self) -> bool:
        return self.beta_a is None or np.float32(self.beta_a).tobytes() == np.float32(self.beta_b).tobytes()

    @property
    def beta_rel_diff(self) -> float:
        if self.betas_equal:
            return 0.0
        return abs(float(self.beta_a) - float(self.beta_b)) / max(abs(float(self.beta_a)), 1e-30)

    @property
    def beta_is_bf16_rounding(self) -> bool:
        """One side's beta is the other's rounded to bf16."""
        a, b = np.float32(self.beta_a), np.float32(self.beta_b)
        return bool(round_to_bf16(a) == b or round_to_bf16(b) == a)

    @property
    def identical(self) -> bool:
        return self.kind != "mismatch" and self.differing == 0 and self.betas_equal

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(shape=list(self.shape), betas_equal=self.betas_equal, beta_rel_diff=self.beta_rel_diff)
        return out


@dataclass(frozen=True)
class ConfigDiff:
    """One model hyper-parameter with different values (None: the side does not set it)."""

    key: str
    a: object
    b: object

    def __str__(self) -> str:
        return f"{self.key} {self.a!r} vs {self.b!r}"


@dataclass(frozen=True)
class WeightDiff:
    """Per-tensor comparison of two weight sets (codes, beta bits, float bits) and their config."""

    tensors: tuple[TensorDiff, ...]
    only_in_a: tuple[str, ...] = ()
    only_in_b: tuple[str, ...] = ()
    config: tuple[ConfigDiff, ...] = ()

    @property
    def code_diffs(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.kind == "ternary" and t.differing]

    @property
    def beta_diffs(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.kind == "ternary" and not t.betas_equal]

    @property
    def float_diffs(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.kind == "float" and t.differing]

    @property
    def mismatched(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.kind == "mismatch"]

    @property
    def weights_identical(self) -> bool:
        """Every tensor equal bit for bit (the config aside)."""
        return not (self.only_in_a or self.only_in_b) and all(t.identical for t in self.tensors)

    @property
    def identical(self) -> bool:
        return self.weights_identical and not self.config

    @property
    def betas_only(self) -> bool:
        """Same names, codes, float tensors and config; only some betas differ."""
        structural = (self.only_in_a or self.only_in_b or self.mismatched or self.code_diffs or self.float_diffs
                      or self.config)
        return not structural and bool(self.beta_diffs)

    def cause(self) -> str:
        if self.identical:
            return f"weights identical: {len(self.tensors)} tensors equal bit for bit (codes, betas, floats)"
        parts = []
        if self.config:
            parts.append("model config differs: " + ", ".join(map(str, self.config)))
        if self.only_in_a or self.only_in_b:
            parts.append(f"tensor names differ: only in A {list(self.only_in_a)}, only in B {list(self.only_in_b)}")
        if self.mismatched:
            parts.append("shape or kind differs: " + ", ".join(f"{t.name}" for t in self.mismatched))
        if self.code_diffs:
            parts.append(f"ternary codes differ in {len(self.code_diffs)} tensor(s): " + ", ".join(
                f"{t.name} ({t.differing} of {t.size} codes)" for t in self.code_diffs))
        if self.float_diffs:
            parts.append(f"float tensors differ in {len(self.float_diffs)}: " + ", ".join(
                f"{t.name} ({t.differing} of {t.size}, max |diff| {t.max_abs_diff:.3g})" for t in self.float_diffs))
        if self.beta_diffs:
            parts.append(self._beta_sentence())
        return "; ".join(parts)

    def _beta_sentence(self) -> str:
        diffs = self.beta_diffs
        worst = max(t.beta_rel_diff for t in diffs)
        n_ternary = sum(t.kind == "ternary" for t in self.tensors)
        head = (f"scale rounding only: ternary codes identical in all {n_ternary} projections, beta differs in "
                if self.betas_only else "beta differs in ")
        why = (" (each the bf16 rounding of the other: an fp32 beta vs a bf16 weight_scale)"
               if all(t.beta_is_bf16_rounding for t in diffs) else "")
        names = ", ".join(f"{t.name} ({t.beta_rel_diff:.2e})" for t in diffs)
        return f"{head}{len(diffs)} tensor(s), max relative difference {worst:.2e}{why}: {names}"

    def to_dict(self) -> dict:
        return {
            "identical": self.identical, "betas_only": self.betas_only, "cause": self.cause(),
            "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b),
            "config": [{"key": c.key, "a": c.a, "b": c.b} for c in self.config],
            "differing": [t.to_dict() for t in self.tensors if not t.identical],
            "compared": len(self.tensors),
        }


Weight = "TernaryWeight | PackedMatrix | np.ndarray"


def compare_weights(weights_a: Mapping[str, Weight], weights_b: Mapping[str, Weight], *,
                    config: tuple[ConfigDiff, ...] = ()) -> WeightDiff:
    """Compare two {name: TernaryWeight | PackedMatrix | float array} maps tensor by tensor."""
    common = [name for name in weights_a if name in weights_b]
    return WeightDiff(
        tensors=tuple(_compare_tensor(name, weights_a[name], weights_b[name]) for name in common),
        only_in_a=tuple(name for name in weights_a if name not in weights_b),
        only_in_b=tuple(name for name in weights_b if name not in weights_a),
        config=config,
    )


def _is_packed(value: object) -> bool:
    """A kernel.PackedMatrix (recognised by its bytes, so that the kernel need not load)."""
    return hasattr(value, "codes_bytes") and callable(getattr(value, "codes", None))


def _is_ternary(value: Weight) -> bool:
    return isinstance(value, TernaryWeight) or _is_packed(value)


def _compare_tensor(name: str, a: Weight, b: Weight) -> TensorDiff:
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if _is_ternary(a) != _is_ternary(b) or shape_a != shape_b:
        return TensorDiff(name, "mismatch", shape_a)
    size = int(np.prod(shape_a))
    if _is_ternary(a):
        differing, beta_a, beta_b = _differing_codes(a, b), _beta(a), _beta(b)
        if not differing and beta_a != beta_b and not np.any(a.codes if isinstance(a, TernaryWeight) else a.codes()):
            beta_b = beta_a  # an all-zero projection: its beta means nothing (ternary.ZERO_BETA)
        return TensorDiff(name, "ternary", shape_a, differing, size, beta_a, beta_b)
    va, vb = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    unequal = va.view(np.uint32) != vb.view(np.uint32)
    diff = float(np.abs(va - vb).max()) if unequal.any() else 0.0
    return TensorDiff(name, "float", shape_a, int(np.count_nonzero(unequal)), size, max_abs_diff=diff)


def _beta(weight: TernaryWeight | PackedMatrix) -> float:
    return float(np.asarray(weight.beta, dtype=np.float32).reshape(-1)[0])  # [1]-shaped too


def _differing_codes(a: TernaryWeight | PackedMatrix, b: TernaryWeight | PackedMatrix) -> int:
    """How many codes differ; packed bytes of one layout are compared before decoding."""
    if _is_packed(a) and _is_packed(b) and a.layout == b.layout:
        if np.array_equal(a.codes_bytes, b.codes_bytes):
            return 0
    codes_a = a.codes if isinstance(a, TernaryWeight) else a.codes()
    codes_b = b.codes if isinstance(b, TernaryWeight) else b.codes()
    return int(np.count_nonzero(codes_a != codes_b))


# -- the config ------------------------------------------------------------------------------
def model_config(config: Mapping) -> dict[str, object]:
    """The keys of a transformers config.json that change what the model computes, with the
    defaults this project (and the GGUF writer) fill in, so a GGUF's rebuilt config and the
    config.json it came from compare equal. Values are kept as given where they are not numbers."""
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    derived_head_dim = hidden // heads if _is_int(hidden) and _is_int(heads) and heads > 0 else None
    theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta"))
    return {
        "model_type": config.get("model_type"),
        "hidden_act": config.get("hidden_act", "relu2"),
        "hidden_size": hidden,
        "intermediate_size": config.get("intermediate_size"),
        "num_hidden_layers": config.get("num_hidden_layers"),
        "num_attention_heads": heads,
        "num_key_value_heads": config.get("num_key_value_heads") or heads,
        "head_dim": config.get("head_dim") or derived_head_dim,
        "rms_norm_eps": config.get("rms_norm_eps", 1e-5),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(config.get("rope_scaling")),
        "vocab_size": config.get("vocab_size"),
        "tie_word_embeddings": config.get("tie_word_embeddings", True),
        "max_position_embeddings": config.get("max_position_embeddings"),
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rope_scaling(value: object) -> object:
    """None for no scaling, and for the no-op linear x1 both GGUF converters write."""
    if not value or (isinstance(value, Mapping) and value.get("type", value.get("rope_type")) == "linear"
                     and value.get("factor") == 1.0):
        return None
    return value


def compare_configs(a: Mapping[str, object], b: Mapping[str, object]) -> tuple[ConfigDiff, ...]:
    """The keys whose values differ (a key one side lacks counts as None there). Numbers are
    compared as float32, the precision GGUF stores and the kernels compute with."""
    keys = list(a) + [k for k in b if k not in a]
    return tuple(ConfigDiff(k, a.get(k), b.get(k)) for k in keys if not _same_value(a.get(k), b.get(k)))


def _same_value(a: object, b: object) -> bool:
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, numbers) and isinstance(b, numbers)):
        return a == b
    if _is_int(a) and _is_int(b):
        return a == b
    return np.float32(a).tobytes() == np.float32(b).tobytes()


# -- two checkpoints, streamed ------------------------------------------------------------------
def diff_checkpoints(path_a: str | Path, path_b: str | Path, *, options_a: dict | None = None,
                     options_b: dict | None = None,
                     progress: Callable[[int], None] | None = None) -> WeightDiff:
    """Compare every tensor of A with the tensor of the same name in B, and the two configs."""
    from .emb.source import is_embedding_model

    if is_embedding_model(Path(path_a)) and is_embedding_model(Path(path_b)):  # BitNet embedding models: emb/
        from .emb.diff import diff_embeddings

        return diff_embeddings(Path(path_a), Path(path_b), progress)
    with open_checkpoint(path_a, **(options_a or {})) as a, open_checkpoint(path_b, **(options_b or {})) as b:
        tensors = diff_entries(a.entries(), b.entries(), progress=progress, paths=(a.path, b.path),
                               releases=(a.release, b.release))
        config = compare_configs(model_config(a.config), model_config(b.config))
    return WeightDiff(tensors.tensors, tensors.only_in_a, tensors.only_in_b, config)


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
