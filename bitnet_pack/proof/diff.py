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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine.blocks import HALF_DTYPES, float_differences, same_bytes
from ..errors import BitnetPackError
from ..formats import fastpath
from ..formats.dtypes import round_to_bf16
from ..formats.ternary import TernaryWeight
from ..pipeline.convert import load_entry
from ..pipeline.sources import Entry, Tensor, open_checkpoint

if TYPE_CHECKING:  # the kernel is not loaded for a diff (the CLI imports this module at start)
    from ..engine.kernel import PackedMatrix

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
    complete: bool = True  # False: compare_weights(stop_early=True) stopped at the first difference
    rounded: str = ""  # the declared roundings applied before comparing (rounding.py)

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
        """One sentence per kind of difference: its count and the first three tensors (the
        full list is in `to_dict`, which `--json` prints)."""
        if self.identical:
            after = f" after rounding {self.rounded}" if self.rounded else ""
            return (f"weights identical{after}: {len(self.tensors)} tensors equal bit for bit "
                    "(codes, betas, floats)")
        parts = []
        if self.config:
            parts.append("model config differs: " + ", ".join(map(str, self.config)))
        if self.only_in_a or self.only_in_b:
            parts.append(f"tensor names differ: {len(self.only_in_a)} only in A {first_three(self.only_in_a)}, "
                         f"{len(self.only_in_b)} only in B {first_three(self.only_in_b)}")
        if self.mismatched:
            parts.append(f"shape or kind differs in {len(self.mismatched)}: "
                         + first_three([t.name for t in self.mismatched]))
        if self.code_diffs:
            parts.append(f"ternary codes differ in {len(self.code_diffs)} tensor(s): " + first_three(
                [f"{t.name} ({t.differing} of {t.size} codes)" for t in self.code_diffs]))
        if self.float_diffs:
            parts.append(f"float tensors differ in {len(self.float_diffs)}: " + first_three(
                [f"{t.name} ({t.differing} of {t.size}, max |diff| {t.max_abs_diff:.3g})" for t in self.float_diffs]))
        if self.beta_diffs:
            parts.append(self._beta_sentence())
        if not self.complete:
            parts.append("stopped at the first difference")
        return "; ".join(parts)

    def _beta_sentence(self) -> str:
        diffs = self.beta_diffs
        worst = max(t.beta_rel_diff for t in diffs)
        n_ternary = sum(t.kind == "ternary" for t in self.tensors)
        head = (f"scale rounding only: ternary codes identical in all {n_ternary} projections, beta differs in "
                if self.betas_only else "beta differs in ")
        why = (" (each the bf16 rounding of the other: an fp32 beta vs a bf16 weight_scale)"
               if all(t.beta_is_bf16_rounding for t in diffs) else "")
        names = first_three([f"{t.name} ({t.beta_rel_diff:.2e})" for t in diffs])
        return f"{head}{len(diffs)} tensor(s), max relative difference {worst:.2e}{why}: {names}"

    def to_dict(self) -> dict:
        return {
            "identical": self.identical, "betas_only": self.betas_only, "cause": self.cause(),
            "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b),
            "config": [{"key": c.key, "a": c.a, "b": c.b} for c in self.config],
            "differing": [t.to_dict() for t in self.tensors if not t.identical],
            "compared": len(self.tensors), "complete": self.complete, "rounded": self.rounded,
        }


def first_three(items: object) -> str:
    """'a, b, c' or 'a, b, c and 7 more (--json lists all)'."""
    items = list(items)
    more = f" and {len(items) - 3} more (--json lists all)" if len(items) > 3 else ""
    return ", ".join(map(str, items[:3])) + more


Weight = "TernaryWeight | PackedMatrix | np.ndarray"


def compare_weights(weights_a: Mapping[str, Weight], weights_b: Mapping[str, Weight], *,
                    config: tuple[ConfigDiff, ...] = (), stop_early: bool = False) -> WeightDiff:
    """Compare two {name: TernaryWeight | PackedMatrix | float array | HalfTensor} maps tensor
    by tensor, a block of rows at a time (stored bytes first where both sides hold one layout).
    `stop_early`: stop after the first tensor that differs (`WeightDiff.complete` is then False)."""
    common = [name for name in weights_a if name in weights_b]
    tensors = []
    for name in common:
        tensors.append(_compare_tensor(name, weights_a[name], weights_b[name]))
        if stop_early and not tensors[-1].identical:
            break
    return WeightDiff(
        tensors=tuple(tensors),
        only_in_a=tuple(name for name in weights_a if name not in weights_b),
        only_in_b=tuple(name for name in weights_b if name not in weights_a),
        config=config, complete=len(tensors) == len(common),
    )


def _shape(value: object) -> tuple[int, ...]:
    return tuple((value.data if isinstance(value, Tensor) else value).shape)


def _is_packed(value: object) -> bool:
    """A kernel.PackedMatrix (recognised by its bytes, so that the kernel need not load)."""
    return hasattr(value, "codes_bytes") and callable(getattr(value, "codes", None))


def _is_ternary(value: Weight) -> bool:
    return isinstance(value, TernaryWeight) or _is_packed(value)


def _compare_tensor(name: str, a: Weight, b: Weight) -> TensorDiff:
    shape_a, shape_b = _shape(a), _shape(b)
    if _is_ternary(a) != _is_ternary(b) or shape_a != shape_b:
        return TensorDiff(name, "mismatch", shape_a)
    size = int(np.prod(shape_a))
    if _is_ternary(a):
        differing, beta_a, beta_b = _differing_codes(a, b), _beta(a), _beta(b)
        if not differing and beta_a != beta_b and not np.any(a.codes if isinstance(a, TernaryWeight) else a.codes()):
            beta_b = beta_a  # an all-zero projection: its beta means nothing (ternary.ZERO_BETA)
        return TensorDiff(name, "ternary", shape_a, differing, size, beta_a, beta_b)
    differing, worst = float_differences(a, b)
    return TensorDiff(name, "float", shape_a, differing, size, max_abs_diff=worst)


def _beta(weight: TernaryWeight | PackedMatrix) -> float:
    return float(np.asarray(weight.beta, dtype=np.float32).reshape(-1)[0])  # [1]-shaped too


def _differing_codes(a: TernaryWeight | PackedMatrix, b: TernaryWeight | PackedMatrix) -> int:
    """How many codes differ; packed bytes of one layout are compared before decoding."""
    if _is_packed(a) and _is_packed(b) and a.layout == b.layout and a.tiling == b.tiling:
        if same_bytes(a.codes_bytes, b.codes_bytes):
            return 0
    codes_a = a.codes if isinstance(a, TernaryWeight) else a.codes()
    codes_b = b.codes if isinstance(b, TernaryWeight) else b.codes()
    for packed in (a, b):  # decoded: the mapped bytes under it leave this process
        if _is_packed(packed):
            fastpath.drop_mapped_pages(packed.data)
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
                     options_b: dict | None = None, progress: Callable[[int], None] | None = None,
                     strict: bool = False, stop_early: bool = False) -> WeightDiff:
    """Compare every tensor of A with the tensor of the same name in B, and the two configs.
    A difference that one side's declared rounding of the other's value explains (rounding.py:
    TQ's fp16 beta, a bf16 weight_scale, an F16 embedding) counts as equal and is named in
    `WeightDiff.rounded`; `strict`: nothing is rounded. `stop_early`: stop at the first tensor
    that differs (`WeightDiff.complete` is then False)."""
    from ..engine.rounding import Plan, plan_of
    from ..pipeline.sources.embedding import is_embedding_model

    if is_embedding_model(Path(path_a)) and is_embedding_model(Path(path_b)):  # BitNet embedding models: embedding_*
        from .embedding_diff import diff_embeddings

        return diff_embeddings(Path(path_a), Path(path_b), progress, strict=strict)
    with open_checkpoint(path_a, **(options_a or {})) as a, open_checkpoint(path_b, **(options_b or {})) as b:
        plans = (Plan(), Plan()) if strict else (plan_of(a), plan_of(b))
        tensors = diff_entries(a.entries(), b.entries(), progress=progress, paths=(a.path, b.path),
                               releases=(a.release, b.release), plans=plans, stop_early=stop_early)
        config = compare_configs(model_config(a.config), model_config(b.config))
    return replace(tensors, config=config)


def diff_entries(entries_a: list[Entry], entries_b: list[Entry], *,
                 progress: Callable[[int], None] | None = None,
                 paths: tuple[Path | None, Path | None] = (None, None),
                 releases: tuple[Callable[[Entry], None], Callable[[Entry], None]] | None = None,
                 plans: tuple | None = None, stop_early: bool = False) -> WeightDiff:
    """The comparison of two entry lists (names matched, each pair loaded, compared, dropped);
    `plans`: each side's declared roundings (rounding.Plan), or None to round nothing."""
    by_name = {entry.name: entry for entry in entries_b}
    names_a = {entry.name for entry in entries_a}
    tensors = []
    for entry in entries_a:
        other = by_name.get(entry.name)
        if other is None:
            continue
        value_a, value_b = _load(entry, paths[0]), _load(other, paths[1])
        tensors.append(compare_pair(entry.name, value_a, value_b))
        if plans is not None and not tensors[-1].identical:
            tensors[-1] = _after_rounding(tensors[-1], value_a, value_b, plans)
        if releases is not None:  # memory holds one pair, not the models
            releases[0](entry)
            releases[1](other)
        if progress is not None:
            progress(entry.nbytes + other.nbytes)
        if stop_early and not tensors[-1].identical:
            break
    complete = len(tensors) == sum(entry.name in by_name for entry in entries_a)
    rounded = "" if plans is None else "; ".join(
        [f"{plan.description()} on {side}" for side, plan in (("A", plans[1]), ("B", plans[0])) if plan.applied]
        + [note for note in (plans[1].codes_note("B"), plans[0].codes_note("A")) if note])
    return WeightDiff(tensors=tuple(tensors),
                      only_in_a=tuple(e.name for e in entries_a if e.name not in by_name),
                      only_in_b=tuple(e.name for e in entries_b if e.name not in names_a), rounded=rounded,
                      complete=complete)


def _after_rounding(diff: TensorDiff, a: object, b: object, plans: tuple) -> TensorDiff:
    """`diff` made equal when one side's declared rounding of the other's value is that value
    (B's plan rounds A's, else A's rounds B's); counted in that plan."""
    from ..engine.rounding import count_own_beta, master_quantized, own_codes, rounds_to

    for plan, master, mine, theirs in ((plans[1], plans[0], a, b), (plans[0], plans[1], b, a)):
        again = master_quantized(diff.name, plan, master) if diff.kind == "ternary" else None
        if again is not None and again.beta.tobytes() == np.float32(theirs.beta).tobytes() \
                and np.array_equal(again.codes, theirs.codes):  # exactly what the runtime's converter makes
            rounding = plan.roundings[diff.name]
            plan.applied[f"codes and β by {rounding.layout}'s own converter ({rounding.where})"] += 1
            if diff.differing:
                plan.own_codes[diff.name] = diff.differing
            return replace(diff, differing=0, beta_b=diff.beta_a)
        if again is not None:  # held to the layout's own master quantizer: its beta, its codes counted
            own_codes(diff.name, plan, again, mine.codes)
            if diff.betas_equal or again.beta.tobytes() != np.float32(theirs.beta).tobytes():
                return diff
            count_own_beta(diff.name, plan)
            return replace(diff, beta_b=diff.beta_a)
    if diff.kind == "ternary" and not diff.differing:
        for plan, mine, theirs in ((plans[1], diff.beta_a, diff.beta_b), (plans[0], diff.beta_b, diff.beta_a)):
            if plan.beta(diff.name, mine, count=False).tobytes() == np.float32(theirs).tobytes():
                plan.count(diff.name)
                return replace(diff, beta_b=diff.beta_a)
    if diff.kind == "float" and isinstance(a, Tensor) and isinstance(b, Tensor):
        for plan, mine, theirs in ((plans[1], a, b), (plans[0], b, a)):
            kind = plan.float_kind(diff.name)
            if kind and rounds_to(_rows_of(mine), _rows_of(theirs), kind):
                plan.count(diff.name)
                return replace(diff, differing=0, max_abs_diff=0.0)
    return diff


class _HalfRows:
    """A stored 16-bit Tensor as `rounding.rounds_to` reads one: `bits` and `kind`."""

    def __init__(self, tensor: Tensor):
        self.bits, self.kind = tensor.data.view(np.uint16), HALF_DTYPES[tensor.dtype]


def _rows_of(tensor: Tensor) -> object:
    """A stored tensor as `rounding.rounds_to` reads one: 16-bit rows, ggml blocks (a quantized
    embedding: quant_dot.QuantTensor), else float32 values."""
    from ..engine.quant_dot import quant_tensor

    quantized = quant_tensor(tensor)
    if quantized is not None:
        return quantized
    return _HalfRows(tensor) if tensor.dtype in HALF_DTYPES else np.asarray(tensor.data, np.float32)


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


def _comparable(value: TernaryWeight | Tensor | np.ndarray) -> TernaryWeight | Tensor | np.ndarray:
    """A `Tensor` is compared as stored, a block of rows at a time; a dequantized one as F32."""
    return value.f32() if type(value) is not Tensor and isinstance(value, Tensor) else value
