"""Greedy decode of two models side by side, comparing the full logits vector everywhere.

    position   0 .. T-2        T-1      T        ...  T+n-2
    row        prompt rows     step 0   step 1   ...  step n-1
    source     one all-logits  prefill  one token per step, model A's argmax fed to both
               pass

Step k's logits choose generated token k. The prompt rows come from a separate pass that
asks for every position's logits; the steps run as `BitNetModel.generate_ids` does (prefill,
then one token at a time). A runs to the end first, then B replays A's tokens (so A and B may
be the same object). A golden trace (`trace.py`) is side A recorded to a file.

When the logits differ, the report says why, and only what it has shown: the ternary codes of
some tensors differ (named, with counts), or only the betas do (a bf16 master ternarised on
load keeps beta in fp32, its packed form stores weight_scale in bf16: same codes, beta off by
< 2^-8 relative, which the int8 re-quantisation of activations amplifies), or a float tensor
(embedding, norm) differs, or the model config differs (rope theta, eps, head counts...), or
the numerics modes differ. When none of these differ, it says the difference is not explained
by them, and which kernels each side's projections ran on.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError, VerificationMismatch
from .diff import WeightDiff, compare_configs, compare_weights

if TYPE_CHECKING:  # annotations only: loading the model module loads the kernel
    from ..engine.model import BitNetModel

__all__ = ["StepDiff", "VerifyReport", "check_atol", "compare_rows", "decode_rows", "verify"]

Progress = Callable[[int], None]


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
    weights: WeightDiff | None  # None: side A is a trace, which holds no weights
    kernels: tuple[str, str] = ("", "")  # the kernel layouts each side's projections ran on
    versions: tuple[str, str] | None = None  # (recorded by, running) when A is a trace
    rounded: str = ""  # the declared roundings applied before comparing (rounding.py); "" for none
    strict: bool = False  # nothing rounded, and the weights too must be identical

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
        weights = not self.strict or self.weights is None or self.weights.identical
        return self.first_divergence is None and self.first_token_mismatch is None and weights

    @property
    def cause(self) -> str:
        if self.identical and (self.weights is None or self.weights.identical or not self.strict):
            after = f" after rounding {self.rounded}" if self.rounded else ""
            return f"logits bit-identical at every compared position{after}"
        parts = [] if self.weights is None else [self.weights.cause()]
        explained = self.weights is not None and not self.weights.identical
        if self.numerics[0] != self.numerics[1]:
            parts.append(f"the numerics differ ({self.numerics[0]} vs {self.numerics[1]})")
            explained = True
        if not explained:
            parts.append(self._unexplained())
        if self.rounded:  # what was applied before comparing (and what its converter changed)
            parts.append(f"declared roundings applied: {self.rounded}")
        return "; ".join(parts)

    def _unexplained(self) -> str:
        """No difference found in what was compared: say what was and was not compared."""
        if self.weights is None:
            recorded, running = self.versions or ("unknown", "unknown")
            versions = ("the same bitnet-pack version" if recorded == running
                        else f"recorded by bitnet-pack {recorded}, run by {running}")
            return (f"the trace holds logits, not weights, so the cause is not known here (same numerics "
                    f"{self.numerics[0]}, {versions}): verify the model against the one the trace was "
                    f"recorded from to find it")
        kernels = ("" if self.kernels[0] == self.kernels[1]
                   else f"; the projections ran on different kernels (A: {self.kernels[0]}, B: {self.kernels[1]})")
        return "not explained by the weights, the model config or the numerics, which all agree" + kernels

    def summary(self) -> str:
        after = f" after rounding {self.rounded}" if self.rounded else ""
        lines = [f"{len(self.rows)} logits rows compared ({len(self.step_max_abs_diff)} steps): "
                 f"{'identical' + after if self.identical else f'max |diff| {self.max_abs_diff:.4g}'}"]
        first = self.first_divergence
        if first is not None:
            lines.append(f"first divergence: {where(first)}, max |diff| {first.max_abs_diff:.4g}, "
                         f"argmax A {first.token_a} / B {first.token_b}")
        mismatch = self.first_token_mismatch
        if mismatch is not None:
            lines.append(f"first token mismatch: {where(mismatch)}, A {mismatch.token_a} / B {mismatch.token_b}")
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
            "kernels": list(self.kernels), "versions": None if self.versions is None else list(self.versions),
            "rounded": self.rounded, "strict": self.strict,
        }


def where(row: StepDiff) -> str:
    """'step 3 (position 7)' or 'prompt (position 2)'."""
    label = "prompt" if row.step is None else f"step {row.step}"
    return f"{label} (position {row.position})"


def check_atol(atol: float) -> float:
    """A finite tolerance >= 0 (NaN would make every comparison pass)."""
    if not math.isfinite(atol) or atol < 0:
        raise UsageError(f"atol must be a finite number >= 0, got {atol!r}")
    return float(atol)


def decode_rows(model: BitNetModel, prompt: Sequence[int], n_tokens: int, *, feed: Sequence[int] | None = None,
                progress: Progress | None = None) -> tuple[list[int], np.ndarray]:
    """The rows `verify` compares, in position order: the prompt's rows before its last (one
    all-logits pass), then one row per step (prefill, then a token at a time). The tokens fed
    are `feed` when given (side A's ids), else the model's own greedy argmax (ties to the lower
    id, as `generate_ids`). Returns (those ids, rows [T - 1 + n_tokens, vocab] float32);
    `progress(1)` is called once per pass."""
    if n_tokens < 1:
        raise UsageError(f"n_tokens must be >= 1, got {n_tokens}")
    tick = progress or (lambda _n: None)
    prompt = [int(t) for t in prompt]
    all_rows, prefilled = model.prompt_and_prefill(prompt)  # one pass over the layers for both
    rows = list(all_rows[:-1])
    tick(1)
    ids: list[int] = []
    for step in range(n_tokens):
        row = prefilled if step == 0 else model.step(ids[-1])
        rows.append(np.asarray(row, np.float32))
        ids.append(int(feed[step]) if feed is not None else int(np.argmax(row)))
        tick(1)
    return ids, np.stack(rows)


def compare_rows(prompt_length: int, rows_a: np.ndarray, rows_b: np.ndarray) -> list[StepDiff]:
    """One StepDiff per row pair; row r is position r (`decode_rows`' order)."""
    first_step = prompt_length - 1
    return [_row(None if r < first_step else r - first_step, r, rows_a[r], rows_b[r]) for r in range(len(rows_a))]


def _row(step: int | None, position: int, a: np.ndarray, b: np.ndarray) -> StepDiff:
    bitwise = a.astype(np.float32).tobytes() == b.astype(np.float32).tobytes()
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    worst = 0.0 if bitwise else float(np.where(np.isnan(diff), np.inf, diff).max())
    return StepDiff(step, position, worst, bitwise, int(np.argmax(a)), int(np.argmax(b)))


def check_vocab(vocab_a: int, vocab_b: int, what: str = "A and B") -> None:
    """Different vocabularies cannot give one identical logits row: a mismatch (exit 3)."""
    if vocab_a != vocab_b:
        raise VerificationMismatch(f"{what} have different vocabularies ({vocab_a} vs {vocab_b} tokens): "
                                   f"no logits row can be identical")


def verify(model_a: BitNetModel, model_b: BitNetModel, prompt_ids: list[int], n_tokens: int, *,
           atol: float = 0.0, progress: Progress | None = None, rounded: str = "",
           strict: bool = False) -> VerifyReport:
    """Greedy-decode `n_tokens` on both models, feeding A's argmax, and compare every row.
    `progress(1)` is called once per decode pass of either model (2 * (n_tokens + 1) in all).
    `rounded`: what the declared roundings changed when the models were loaded (for the
    report); `strict`: the weights must be identical too (nothing was rounded)."""
    atol = check_atol(atol)
    if n_tokens < 1:
        raise UsageError(f"n_tokens must be >= 1, got {n_tokens}")
    check_vocab(model_a.config.vocab_size, model_b.config.vocab_size)
    prompt = [int(t) for t in prompt_ids]
    ids, rows_a = decode_rows(model_a, prompt, n_tokens, progress=progress)
    _, rows_b = decode_rows(model_b, prompt, n_tokens, feed=ids, progress=progress)
    config = compare_configs(asdict(model_a.config), asdict(model_b.config))
    return VerifyReport(
        prompt_ids=tuple(prompt), ids=tuple(ids), rows=tuple(compare_rows(len(prompt), rows_a, rows_b)),
        atol=atol, numerics=(model_a.numerics.name, model_b.numerics.name),
        weights=replace(compare_weights(model_a.tensors, model_b.tensors, config=config), rounded=rounded),
        kernels=(kernels_of(model_a), kernels_of(model_b)), rounded=rounded, strict=strict,
    )


def kernels_of(model: BitNetModel) -> str:
    """The kernel layouts the model's projections are held in, e.g. 'i2_s' or 'hf, i2_s'."""
    return ", ".join(sorted({str(v.layout) for v in model.tensors.values() if hasattr(v, "layout")}))
