"""The roundings a storage declares, and two models made equal by them before a bit-for-bit comparison.

When B's layout must round what A holds (TQ's fp16 block scale, a bf16 weight_scale, an F16 or
BF16 embedding), `verify A B` and `roundtrip` check, tensor by tensor, that A's value after
exactly B's declared rounding is B's (or B's after A's: B may be the source), give the other
side that value, and compare bit for bit; what was rounded is counted by its description
("β to fp16 (TQ2_0)"), so the report can say "identical after rounding β to fp16 (TQ2_0)".
Anything a declared rounding does not explain stays a difference. `--strict` rounds nothing.

    beta    the layout's `round_beta` (layouts/__init__.py: one declaration per layout, from its
            table entry), with the container's choices: hf's weight_scale dtype and 1/beta
    floats  rounded to the stored float type (F16, BF16; F32 keeps every value)

Block-quantized float tensors (Q8_0, Q6_K ...) declare no rounding here: their values are
compared as dequantized.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .dtypes import round_to_bf16

__all__ = ["Plan", "Rounding", "plan_of", "reconcile", "round_scalar", "round_values", "rounds_to"]

FLOAT_ROUNDING = {"F16": "fp16", "BF16": "bf16"}


def round_scalar(value: float, kind: str) -> np.float32:
    """One float32 rounded to "fp16" / "bf16" ("" keeps it)."""
    return np.float32(round_values(np.array([value], np.float32), kind)[0])


def round_values(values: np.ndarray, kind: str) -> np.ndarray:
    """float32 values rounded to "fp16" / "bf16" and widened back ("" keeps them)."""
    values = np.asarray(values, np.float32)
    if kind == "fp16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).astype(np.float32)
    if kind == "bf16":
        return np.asarray(round_to_bf16(values), np.float32)
    return values


@dataclass(frozen=True)
class Rounding:
    """One tensor's declared rounding: `kind` "fp16"/"bf16", of its beta or of its values."""

    kind: str
    of_beta: bool
    where: str  # the layout or stored type that declares it ("tq2_0", "F16")
    inverse: bool = False  # beta stored as 1/beta (BitLinear's weight_scale)
    layout: str | None = None  # the layout whose `round_beta` rounds (None: a float type's rounding)

    @property
    def text(self) -> str:
        what = "β" if self.of_beta else "floats"
        return f"{what} to {self.kind} ({self.where}{', as 1/β' if self.inverse else ''})"

    def beta(self, beta: float) -> np.float32:
        if self.layout is None:
            return round_scalar(beta, self.kind)
        from .layouts import get_layout

        return get_layout(self.layout).round_beta(beta, scale_dtype=self.kind, inverse=self.inverse)


@dataclass
class Plan:
    """Every tensor's declared rounding on one side (by transformers name), and a count of
    the tensors whose values it changed when applied to the other side."""

    roundings: dict[str, Rounding] = field(default_factory=dict)
    applied: Counter = field(default_factory=Counter)

    def beta(self, name: str, beta: float, *, count: bool = True) -> np.float32:
        """beta with the side's rounding of tensor `name` applied (counted when it changes)."""
        rounding = self.roundings.get(name)
        if rounding is None or not rounding.of_beta:
            return np.float32(beta)
        rounded = rounding.beta(beta)
        if count and rounded.tobytes() != np.float32(beta).tobytes():
            self.applied[rounding.text] += 1
        return rounded

    def float_kind(self, name: str) -> str:
        rounding = self.roundings.get(name)
        return rounding.kind if rounding is not None and not rounding.of_beta else ""

    def count(self, name: str) -> None:
        self.applied[self.roundings[name].text] += 1

    def description(self) -> str:
        """'β to fp16 (tq2_0) in 210 tensors, floats to fp16 (F16) in 1 tensor', or ''."""
        return ", ".join(f"{text} in {n} tensor{'s' if n != 1 else ''}" for text, n in self.applied.items())


def plan_of(source: object) -> Plan:
    """What the checkpoint's storage rounds, per tensor: projections by their layout (the
    layout's `round_beta` declaration), float tensors by their stored type."""
    from .layouts import get_layout

    plan = Plan()
    for entry in source.entries():
        rounding = None
        if entry.kind == "linear":
            rounding = _projection_rounding(source, entry, get_layout)
        elif entry.dtype in FLOAT_ROUNDING:
            rounding = Rounding(FLOAT_ROUNDING[entry.dtype], False, entry.dtype)
        if rounding is not None:
            plan.roundings[entry.name] = rounding
    return plan


def _projection_rounding(source: object, entry: object, get_layout) -> Rounding | None:
    if getattr(source, "kind", "") == "hf-packed":
        scale = source.files.info(entry.name + "_scale").dtype
        kind = FLOAT_ROUNDING.get(scale, "")
        inverse = getattr(source, "linear_class", "") == "bitlinear"
        return Rounding(kind, True, "hf weight_scale " + scale, inverse, "hf") if kind else None
    if getattr(source, "kind", "") != "gguf":
        return None  # a master's beta is computed on load, nothing stored rounds it
    if entry.dtype in FLOAT_ROUNDING:  # a float GGUF projection holds codes x beta in that type
        return Rounding(FLOAT_ROUNDING[entry.dtype], True, entry.dtype)
    layout = _gguf_layout(entry.dtype)
    kind = get_layout(layout).beta_rounding if layout is not None else ""
    return Rounding(kind, True, layout.upper(), layout=layout) if kind else None


def _gguf_layout(type_name: str) -> str | None:
    """The layout a GGUF tensor type holds: the layout registry's lookup where it has one,
    else the GGUF reader's table."""
    try:
        from .layouts import layout_of_type
    except ImportError:
        from .checkpoints.gguf import LAYOUT_OF_TYPE

        return LAYOUT_OF_TYPE.get(type_name)
    found = layout_of_type(type_name)
    return None if found is None else found.name


def reconcile(model_a: object, model_b: object, plan_a: Plan, plan_b: Plan) -> str:
    """Where one side holds exactly the other's value after its storage's declared rounding
    (B's rounding of A's value, else A's of B's), give the unrounded side the rounded value, in
    place: a projection's beta (the kernel multiplies by `PackedMatrix.beta`), a float tensor
    (the rounded side's own tensor is shared, so nothing is copied). Checked a block of rows at
    a time. Returns what was rounded ("β to fp16 (TQ2_0) in 14 tensors on A"), or ""."""
    for name, a in list(model_a.tensors.items()):
        b = model_b.tensors.get(name)
        if b is None:
            continue
        if hasattr(a, "codes_bytes") and hasattr(b, "codes_bytes"):
            _reconcile_beta(name, a, b, plan_a, plan_b)
        elif not hasattr(a, "codes_bytes") and not hasattr(b, "codes_bytes"):
            _reconcile_floats(name, model_a, model_b, plan_a, plan_b)
    for model in (model_a, model_b):
        model.embedding = model.tensors["model.embed_tokens.weight"]
        model.lm_head = model.tensors.get("lm_head.weight", model.embedding)
    return "; ".join(f"{plan.description()} on {side}" for side, plan in (("A", plan_b), ("B", plan_a))
                     if plan.applied)


def _reconcile_beta(name: str, a: object, b: object, plan_a: Plan, plan_b: Plan) -> None:
    if a.beta.tobytes() == b.beta.tobytes():
        return
    for plan, rounded, other in ((plan_b, a, b), (plan_a, b, a)):
        if plan.beta(name, rounded.beta, count=False).tobytes() == other.beta.tobytes():
            object.__setattr__(rounded, "beta", other.beta)  # the bytes' own beta was checked on load
            plan.count(name)
            return


def _reconcile_floats(name: str, model_a: object, model_b: object, plan_a: Plan, plan_b: Plan) -> None:
    a, b = model_a.tensors[name], model_b.tensors[name]
    for plan, value, other, model in ((plan_b, a, b, model_a), (plan_a, b, a, model_b)):
        kind = plan.float_kind(name)
        if kind and rounds_to(value, other, kind):
            model.tensors[name] = other
            plan.count(name)
            return


def rounds_to(value: object, other: object, kind: str) -> bool:
    """Whether `value` (float32 array or model.HalfTensor) rounded to `kind` is `other`, bit for
    bit and not already equal, read a block of rows at a time."""
    from . import fastpath
    from .blocks import equal_blocks

    rows, others = _rows(value), _rows(other)
    if rows.shape != others.shape:
        return False
    changed = False
    step = max(1, fastpath.CHUNK_BYTES // max(1, 4 * rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        block, wanted = rows[start:start + step], others[start:start + step]
        if not equal_blocks(block, value, wanted, other):
            values, wanted = _values(block, value), _values(wanted, other)
            if not np.array_equal(round_values(values, kind).view(np.uint32), wanted.view(np.uint32)):
                return False
            changed = True
        fastpath.drop_mapped_pages(rows[start:start + step])
        fastpath.drop_mapped_pages(others[start:start + step])
    return changed


def _rows(value: object) -> np.ndarray:
    data = value.bits if hasattr(value, "bits") else np.asarray(value)
    return data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)


def _values(block: np.ndarray, value: object) -> np.ndarray:
    from .kernel import half_to_float32

    return half_to_float32(block, value.kind) if hasattr(value, "bits") else np.asarray(block, np.float32)
