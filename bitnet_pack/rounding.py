"""The roundings a storage declares, applied to the other side before a bit-for-bit comparison.

When B's layout must round what A holds (TQ's fp16 block scale, a bf16 weight_scale, an F16 or
BF16 embedding), `verify A B` and `diff A B` apply exactly B's rounding to A's values (and A's
to B's; a rounding applied to a value already rounded changes nothing) and then compare bit for
bit. What changed is counted by its description ("β to fp16 (tq2_0)"), so the report can say
"identical after rounding β to fp16 (tq2_0)". `--strict` applies nothing.

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

__all__ = ["Plan", "Rounding", "plan_of", "round_scalar", "round_values"]

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

    def beta(self, name: str, beta: float) -> np.float32:
        """beta with the side's rounding of tensor `name` applied (counted when it changes)."""
        rounding = self.roundings.get(name)
        if rounding is None or not rounding.of_beta:
            return np.float32(beta)
        rounded = rounding.beta(beta)
        if rounded.tobytes() != np.float32(beta).tobytes():
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
    from .checkpoints.gguf import LAYOUT_OF_TYPE

    layout = LAYOUT_OF_TYPE.get(entry.dtype)
    kind = get_layout(layout).beta_rounding if layout is not None else ""
    return Rounding(kind, True, layout.upper(), layout=layout) if kind else None


def apply_plan(model: object, plan: Plan) -> None:
    """Round a BitNetModel's tensors as `plan` (the other side's storage) declares, in place:
    projection betas (the kernel multiplies by `PackedMatrix.beta`), float tensors a block of
    rows at a time (a new 16-bit copy only if some value changes)."""
    for name, value in list(model.tensors.items()):
        if hasattr(value, "codes_bytes"):
            rounded = plan.beta(name, value.beta)
            object.__setattr__(value, "beta", rounded)  # the bytes' own beta was checked on load
        elif plan.float_kind(name):
            changed = rounded_floats(value, plan.float_kind(name))
            if changed is not None:
                model.tensors[name] = changed
                plan.count(name)
    model.embedding = model.tensors["model.embed_tokens.weight"]
    model.lm_head = model.tensors.get("lm_head.weight", model.embedding)


def rounded_floats(value: object, kind: str) -> object | None:
    """A float tensor (float32 array or model.HalfTensor) rounded to `kind` ("fp16"/"bf16"), or
    None when rounding changes no value. Read a block of rows at a time."""
    from . import fastpath
    from .kernel import half_to_float32
    from .model import HalfTensor

    half = isinstance(value, HalfTensor)
    target = {"fp16": "f16", "bf16": "bf16"}[kind]
    if half and value.kind == target:
        return None
    rows = value.bits if half else np.asarray(value)
    rows2d = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(1, -1)
    out = None
    step = max(1, fastpath.CHUNK_BYTES // max(1, rows2d[:1].nbytes))
    for start in range(0, rows2d.shape[0], step):
        block = rows2d[start:start + step]
        values = half_to_float32(block, value.kind) if half else np.asarray(block, np.float32)
        rounded = round_values(values, kind)
        if out is None and not np.array_equal(rounded.view(np.uint32), values.view(np.uint32)):
            out = np.empty(rows2d.shape, np.uint16 if half else np.float32)
            if start:  # the rows before were unchanged: round them (again) into the copy
                out[:start] = _bits(round_values(_values(rows2d[:start], value, half), kind), target, half)
        if out is not None:
            out[start:start + step] = _bits(rounded, target, half)
        fastpath.drop_mapped_pages(block)
    if out is None:
        return None
    return HalfTensor(target, out.reshape(rows.shape)) if half else out.reshape(rows.shape)


def _values(block: np.ndarray, value: object, half: bool) -> np.ndarray:
    from .kernel import half_to_float32

    return half_to_float32(block, value.kind) if half else np.asarray(block, np.float32)


def _bits(rounded: np.ndarray, target: str, half: bool) -> np.ndarray:
    """Rounded float32 values as the 16-bit bits of `target`, or as they are for a float32 array."""
    if not half:
        return rounded
    if target == "f16":
        return rounded.astype(np.float16).view(np.uint16)
    return (rounded.view(np.uint32) >> 16).astype(np.uint16)
