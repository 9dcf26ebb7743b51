"""Greedy decode of two models side by side, comparing the full logits vector everywhere.

    position   0 .. T-2        T-1      T        ...  T+n-2
    row        prompt rows     step 0   step 1   ...  step n-1
    source     one all-logits  prefill  one token per step, model A's argmax fed to both
               pass

Step k's logits choose generated token k. The prompt rows come from a separate pass that
asks for every position's logits; the steps run exactly as `BitNetModel.generate_ids`.
A runs to the end first, then B replays A's tokens (so A and B may be the same object).

When the logits differ, `compare_weights` says why: the ternary codes of some tensors
differ (named, with counts), or only the betas do (a bf16 master ternarised on load keeps
beta in fp32, its packed form stores weight_scale in bf16: same codes, beta off by < 2^-8
relative, which the int8 re-quantisation of activations amplifies), or a float tensor
(embedding, norm) differs, or the weights agree and the numerics differ.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .dtypes import round_to_bf16
from .errors import UsageError
from .kernel import PackedMatrix
from .model import BitNetModel
from .ternary import TernaryWeight

__all__ = ["StepDiff", "TensorDiff", "VerifyReport", "WeightDiff", "compare_weights", "verify"]


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
class WeightDiff:
    """Per-tensor comparison of two weight sets (codes, beta bits, float bits)."""

    tensors: tuple[TensorDiff, ...]
    only_in_a: tuple[str, ...] = ()
    only_in_b: tuple[str, ...] = ()

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
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b) and all(t.identical for t in self.tensors)

    @property
    def betas_only(self) -> bool:
        """Same names, codes and float tensors; only some betas differ."""
        structural = self.only_in_a or self.only_in_b or self.mismatched or self.code_diffs or self.float_diffs
        return not structural and bool(self.beta_diffs)

    def cause(self) -> str:
        if self.identical:
            return f"weights identical: {len(self.tensors)} tensors equal bit for bit (codes, betas, floats)"
        parts = []
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
            "differing": [t.to_dict() for t in self.tensors if not t.identical],
            "compared": len(self.tensors),
        }


Weight = TernaryWeight | PackedMatrix | np.ndarray


def compare_weights(weights_a: Mapping[str, Weight], weights_b: Mapping[str, Weight]) -> WeightDiff:
    """Compare two {name: TernaryWeight | PackedMatrix | float array} maps tensor by tensor."""
    common = [name for name in weights_a if name in weights_b]
    return WeightDiff(
        tensors=tuple(_compare_tensor(name, weights_a[name], weights_b[name]) for name in common),
        only_in_a=tuple(name for name in weights_a if name not in weights_b),
        only_in_b=tuple(name for name in weights_b if name not in weights_a),
    )


def _is_ternary(value: Weight) -> bool:
    return isinstance(value, (TernaryWeight, PackedMatrix))


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
    if isinstance(a, PackedMatrix) and isinstance(b, PackedMatrix) and a.layout == b.layout:
        if np.array_equal(a.codes_bytes, b.codes_bytes):
            return 0
    codes_a = a.codes if isinstance(a, TernaryWeight) else a.codes()
    codes_b = b.codes if isinstance(b, TernaryWeight) else b.codes()
    return int(np.count_nonzero(codes_a != codes_b))


@dataclass(frozen=True)
class StepDiff:
    """One compared logits row. `step` is None for prompt rows before the last."""

    step: int | None
    position: int
    max_abs_diff: float
    bitwise_equal: bool
    token_a: int
    token_b: int


@dataclass(frozen=True)
class VerifyReport:
    prompt_ids: tuple[int, ...]
    ids: tuple[int, ...]  # model A's greedy ids (fed to both)
    rows: tuple[StepDiff, ...]
    atol: float
    numerics: tuple[str, str]
    weights: WeightDiff | None

    @property
    def identical(self) -> bool:
        return all(r.bitwise_equal for r in self.rows)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.rows), default=0.0)

    @property
    def step_max_abs_diff(self) -> list[float]:
        return [r.max_abs_diff for r in self.rows if r.step is not None]

    @property
    def first_divergence(self) -> StepDiff | None:
        """The first row not bit-identical (atol 0) or off by more than atol."""
        return next((r for r in self.rows
                     if not r.bitwise_equal and (self.atol == 0 or r.max_abs_diff > self.atol)), None)

    @property
    def first_token_mismatch(self) -> StepDiff | None:
        """The first step where the two argmaxes differ."""
        return next((r for r in self.rows if r.step is not None and r.token_a != r.token_b), None)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and self.first_token_mismatch is None

    @property
    def cause(self) -> str:
        if self.identical:
            return "logits bit-identical at every compared position"
        weights = "the weights were not compared" if self.weights is None else self.weights.cause()
        if self.numerics[0] != self.numerics[1]:
            return f"{weights}; the numerics differ ({self.numerics[0]} vs {self.numerics[1]})"
        if self.weights is not None and self.weights.identical:
            return f"{weights}; the difference comes from the kernels, not the weights"
        return weights

    def summary(self) -> str:
        lines = [f"{len(self.rows)} logits rows compared ({len(self.step_max_abs_diff)} steps): "
                 f"{'identical' if self.identical else f'max |diff| {self.max_abs_diff:.4g}'}"]
        first = self.first_divergence
        if first is not None:
            lines.append(f"first divergence: {_where(first)}, max |diff| {first.max_abs_diff:.4g}, "
                         f"argmax A {first.token_a} / B {first.token_b}")
        mismatch = self.first_token_mismatch
        if mismatch is not None:
            lines.append(f"first token mismatch: {_where(mismatch)}, A {mismatch.token_a} / B {mismatch.token_b}")
        lines.append(f"cause: {self.cause}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        first, mismatch = self.first_divergence, self.first_token_mismatch
        return {
            "ok": self.ok, "identical": self.identical, "max_abs_diff": self.max_abs_diff, "atol": self.atol,
            "numerics": list(self.numerics), "prompt_ids": list(self.prompt_ids), "ids": list(self.ids),
            "first_divergence": None if first is None else asdict(first),
            "first_token_mismatch": None if mismatch is None else asdict(mismatch),
            "step_max_abs_diff": self.step_max_abs_diff,
            "prompt_max_abs_diff": [r.max_abs_diff for r in self.rows if r.step is None],
            "cause": self.cause, "weights": None if self.weights is None else self.weights.to_dict(),
        }


def _where(row: StepDiff) -> str:
    label = "prompt" if row.step is None else f"step {row.step}"
    return f"{label} (position {row.position})"


def _row(step: int | None, position: int, a: np.ndarray, b: np.ndarray) -> StepDiff:
    bitwise = a.shape == b.shape and a.astype(np.float32).tobytes() == b.astype(np.float32).tobytes()
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    worst = 0.0 if bitwise else float(np.where(np.isnan(diff), np.inf, diff).max())
    return StepDiff(step, position, worst, bitwise, int(np.argmax(a)), int(np.argmax(b)))


def verify(model_a: BitNetModel, model_b: BitNetModel, prompt_ids: list[int], n_tokens: int, *,
           atol: float = 0.0) -> VerifyReport:
    """Greedy-decode `n_tokens` on both models, feeding A's argmax, and compare every row."""
    if n_tokens < 1:
        raise UsageError(f"n_tokens must be >= 1, got {n_tokens}")
    if model_a.config.vocab_size != model_b.config.vocab_size:
        raise UsageError(f"vocab sizes differ: {model_a.config.vocab_size} vs {model_b.config.vocab_size}")
    prompt = [int(t) for t in prompt_ids]
    rows = _prompt_rows(model_a, model_b, prompt)
    ids, logits_a = model_a.generate_ids(prompt, n_tokens)
    for step, row_a in enumerate(logits_a):
        row_b = model_b.prefill(prompt) if step == 0 else model_b.step(ids[step - 1])
        rows.append(_row(step, len(prompt) - 1 + step, row_a, row_b))
    return VerifyReport(
        prompt_ids=tuple(prompt), ids=tuple(ids), rows=tuple(rows), atol=float(atol),
        numerics=(model_a.numerics.name, model_b.numerics.name),
        weights=compare_weights(model_a.tensors, model_b.tensors),
    )


def _prompt_rows(model_a: BitNetModel, model_b: BitNetModel, prompt: list[int]) -> list[StepDiff]:
    if len(prompt) < 2:
        return []
    all_a = model_a.prompt_logits(prompt)
    all_b = model_b.prompt_logits(prompt)
    return [_row(None, p, all_a[p], all_b[p]) for p in range(len(prompt) - 1)]
