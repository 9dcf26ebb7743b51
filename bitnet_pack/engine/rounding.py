"""The roundings a storage declares, and two models made equal by them before a bit-for-bit comparison.

When B's layout must round what A holds (TQ's fp16 block scale, an fp16 row scale, a bf16
weight_scale or bf16 scale slots, an F16, BF16 or quantized embedding), `verify A B` and
`roundtrip` check, tensor by tensor, that A's value after exactly B's declared rounding is B's (or B's after A's: B may be the source), give the other
side that value, and compare bit for bit; what was rounded is counted by its description
("β to fp16 (TQ2_0)"), so the report can say "identical after rounding β to fp16 (TQ2_0)".
Anything a declared rounding does not explain stays a difference. `--strict` rounds nothing.

    beta    the layout's `round_beta` (layouts/__init__.py: one declaration per layout, its
            entry's `beta_rounding`), with the container's choices: hf's weight_scale dtype and
            1/beta. A layout with a scale per row (`row_bytes`) keeps one fp16 d per row: every
            row with a non-zero code holds beta, an all-zero row 0, so rounding beta is
            rounding each row's scale.
    floats  rounded to the stored float type (F16, BF16; F32 keeps every value); a block-
            quantized one (Q8_0, Q6_K, Q5_K, Q4_K) is A's values quantized with exactly B's
            quantizer (quant_floats.py, ggml's reference) and dequantized.

A layout whose runtime's converter ternarizes a master its own way (`Layout.quantize_master`,
e.g. bitnet.cpp's GPU converter, in bf16) is held to that converter when the other side is the
master: when it gives exactly the stored codes and betas, that is the master's declared
rounding (named, with the count of codes that differ from float32 absmean's); anything else
stays a difference.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..formats.dtypes import round_to_bf16

__all__ = ["Plan", "Rounding", "plan_of", "reconcile", "requantize", "round_scalar", "round_values", "rounds_to"]

FLOAT_ROUNDING = {"F16": "fp16", "BF16": "bf16"}
FLOAT_TYPE_NAMES = {"fp16": "F16", "bf16": "BF16"}
QUANT_ROUNDING = {"Q8_0": "q8_0", "Q6_K": "q6_k", "Q5_K": "q5_k", "Q4_K": "q4_k"}  # quant_floats.EMBEDDING_TYPES


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
    if kind in QUANT_ROUNDING.values():  # rows [R, cols]: B's quantizer, then ggml's dequantize
        from ..formats.quant_floats import quantize
        from .quant_dot import dequantize

        rows = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)
        return dequantize(quantize(rows, kind), kind).reshape(values.shape)
    return values


@dataclass(frozen=True)
class Rounding:
    """One tensor's declared rounding: `kind` "fp16"/"bf16", of its beta or of its values."""

    kind: str
    of_beta: bool
    where: str  # the layout or stored type that declares it ("TQ2_0", "F16")
    inverse: bool = False  # beta stored as 1/beta (BitLinear's weight_scale)
    layout: str | None = None  # the layout whose `round_beta` rounds (None: a float type's rounding)
    what: str = ""  # what is rounded, when not "β" / "floats" ("norms", "token_embd")

    @property
    def text(self) -> str:
        what = self.what or ("β" if self.of_beta else "floats")
        kind = self.kind if self.of_beta else FLOAT_TYPE_NAMES.get(self.kind, self.kind.upper())  # floats: the GGUF type
        return f"{what} to {kind} ({self.where}{', as 1/β' if self.inverse else ''})"

    def beta(self, beta: float) -> np.float32:
        if self.layout is None:
            return round_scalar(beta, self.kind)
        from ..formats.layouts import get_layout

        return get_layout(self.layout).round_beta(beta, scale_dtype=self.kind, inverse=self.inverse)


@dataclass
class Plan:
    """Every tensor's declared rounding on one side (by transformers name), and a count of
    the tensors whose values it changed when applied to the other side."""

    roundings: dict[str, Rounding] = field(default_factory=dict)
    applied: Counter = field(default_factory=Counter)
    master: object | None = None  # the open checkpoint, when it is a master (for `quantize_master`)
    codes_differ: dict[str, int] = field(default_factory=dict)  # the other side's codes its converter changed
    own_codes: dict[str, int] = field(default_factory=dict)  # ... where they are exactly the stored ones

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
        """'β to fp16 (TQ2_0) in 210 tensors, token_embd to fp16 (F16) in 1 tensor', or ''."""
        said = ", ".join(f"{text} in {n} tensor{'s' if n != 1 else ''}" for text, n in self.applied.items())
        if self.own_codes:
            said += (f" ({sum(self.own_codes.values())} codes in {len(self.own_codes)} tensors differ from "
                     "float32 absmean's)")
        return said

    def codes_note(self, side: str) -> str:
        """What this side's own master quantizer changed in the other side's codes, or ''."""
        if not self.codes_differ:
            return ""
        layout = next(r.layout for n, r in self.roundings.items() if n in self.codes_differ)
        return (f"{side}'s {layout} codes come from its runtime's own master quantizer (quantize_master), not a "
                f"rounding: {sum(self.codes_differ.values())} codes in {len(self.codes_differ)} tensor(s) differ "
                "from absmean's")


def plan_of(source: object) -> Plan:
    """What the checkpoint's storage rounds, per tensor: projections by their layout (the
    layout's `round_beta` declaration), float tensors by their stored type."""
    from ..formats.layouts import get_layout

    plan = Plan(master=source if getattr(source, "kind", "") == "bf16-master" else None)
    label = getattr(source, "layout", "") if getattr(source, "kind", "") == "gguf" else ""
    for entry in source.entries():
        rounding = None
        if entry.kind == "linear":
            rounding = _projection_rounding(source, entry, get_layout)
        elif entry.dtype in FLOAT_ROUNDING or entry.dtype in QUANT_ROUNDING:
            kind = FLOAT_ROUNDING.get(entry.dtype) or QUANT_ROUNDING[entry.dtype]
            where = ", ".join(part for part in ("ggml's quantizer" if entry.dtype in QUANT_ROUNDING else "",
                                                 f"{label.upper()} GGUF" if label and label != "none" else "")
                              if part) or "as stored"
            rounding = Rounding(kind, False, where, what=_float_what(entry.name))
        if rounding is not None:
            plan.roundings[entry.name] = rounding
    return plan


def _float_what(name: str) -> str:
    if name.endswith("embed_tokens.weight"):
        return "embedding"
    return "output" if name == "lm_head.weight" else "norms"


def _projection_rounding(source: object, entry: object, get_layout) -> Rounding | None:
    if getattr(source, "kind", "") == "hf-packed":
        scale = source.files.info(entry.name + "_scale").dtype
        kind = FLOAT_ROUNDING.get(scale, "")
        inverse = getattr(source, "linear_class", "") == "bitlinear"
        return Rounding(kind, True, "hf weight_scale " + scale, inverse, "hf") if kind else None
    if getattr(source, "kind", "") != "gguf":  # a directory layout declares its own
        from ..formats.layouts import find_layout

        layout = find_layout(getattr(source, "kind", "") or "-")
        if layout is None or not layout.beta_rounding:
            return None  # a master's beta is computed on load, nothing stored rounds it
        return Rounding(layout.beta_rounding, True, f"{layout.name} weight_scale", layout=layout.name)
    if entry.dtype in FLOAT_ROUNDING:  # a float GGUF projection holds codes x beta in that type
        return Rounding(FLOAT_ROUNDING[entry.dtype], True, entry.dtype)
    layout = source._layout_of(entry.dtype)
    if layout is None or not layout.beta_rounding:
        return None
    where = layout.spec.type_name or layout.name.upper()
    if layout.spec.row_bytes:  # the scale is each row's (an fp16 d per row)
        where += " row scales"
    return Rounding(layout.beta_rounding, True, where, layout=layout.name)


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
            if _ternarized_by_own_converter(name, model_a, model_b, plan_a, plan_b):
                continue
            _reconcile_beta(name, a, b, plan_a, plan_b)
        elif not hasattr(a, "codes_bytes") and not hasattr(b, "codes_bytes"):
            _reconcile_floats(name, model_a, model_b, plan_a, plan_b)
    for model in (model_a, model_b):
        model.embedding = model.tensors["model.embed_tokens.weight"]
        model.lm_head = model.tensors.get("lm_head.weight", model.embedding)
    said = [f"{plan.description()} on {side}" for side, plan in (("A", plan_b), ("B", plan_a)) if plan.applied]
    said += [note for note in (plan_b.codes_note("B"), plan_a.codes_note("A")) if note]
    return "; ".join(said)


def requantize(model: object, master: Plan, plan: Plan) -> str:
    """The master's projections (in `model`, from `master.master`) replaced, in place, by what
    `plan`'s layout's own converter makes of them (codes and beta: `Layout.quantize_master`),
    for `roundtrip`, which holds such a layout to its runtime's converter. Returns what that
    changed ("β and codes by LAYOUT's own converter ... : 1497 codes in 8 tensors differ
    from absmean's"), or "" when no projection has such a converter."""
    from .kernel import PackedMatrix
    from .model import kernel_layout

    changed, tensors, layout = 0, 0, ""
    for name, value in list(model.tensors.items()):
        again = master_quantized(name, plan, master) if hasattr(value, "codes_bytes") else None
        if again is None:
            continue
        changed += int(np.count_nonzero(again.codes != value.codes()))
        model.tensors[name] = PackedMatrix.from_ternary(again, kernel_layout(again.shape))
        tensors, layout = tensors + 1, plan.roundings[name].layout
    if not tensors:
        return ""
    return (f"β and codes by {layout}'s own converter (quantize_master) in {tensors} tensors: {changed} codes "
            "differ from absmean's")


def _reconcile_beta(name: str, a: object, b: object, plan_a: Plan, plan_b: Plan) -> None:
    for plan, master, rounded, other in ((plan_b, plan_a, a, b), (plan_a, plan_b, b, a)):
        if _by_own_quantizer(name, plan, master, rounded, other):
            return
    if a.beta.tobytes() == b.beta.tobytes():
        return
    for plan, rounded, other in ((plan_b, a, b), (plan_a, b, a)):
        if plan.beta(name, rounded.beta, count=False).tobytes() == other.beta.tobytes():
            object.__setattr__(rounded, "beta", other.beta)  # the bytes' own beta was checked on load
            plan.count(name)
            return


def _by_own_quantizer(name: str, plan: Plan, master: Plan, rounded: object, other: object,
                      again: object | None = None) -> bool:
    """`rounded` is the master's projection and `plan`'s layout has a master quantizer of its
    own: its beta is held to that quantizer's (given to the master's side when it is the stored
    one), and the codes it changes are counted in `plan.codes_differ` (they stay a difference)."""
    again = again if again is not None else master_quantized(name, plan, master)
    if again is None:
        return False
    own_codes(name, plan, again, rounded.codes())
    if again.beta.tobytes() == other.beta.tobytes() and rounded.beta.tobytes() != other.beta.tobytes():
        object.__setattr__(rounded, "beta", other.beta)
        count_own_beta(name, plan)
    return True


def master_quantized(name: str, plan: Plan, master: Plan) -> object | None:
    """What `plan`'s layout's own converter makes of the master projection `name` (a
    TernaryWeight; `Layout.quantize_master`), or None: no master, or no converter of its own."""
    rounding = plan.roundings.get(name)
    if master.master is None or rounding is None or rounding.layout is None:
        return None
    from ..formats.layouts import Layout, get_layout

    layout = get_layout(rounding.layout)
    if type(layout).quantize_master is Layout.quantize_master:  # no converter of its own: nothing to look up
        return None
    entry = next((e for e in master.master.entries() if e.name == name), None)
    again = None if entry is None else layout.quantize_master(master.master, entry)
    return None if again is None else again[0]


def own_codes(name: str, plan: Plan, again: object, codes: np.ndarray) -> int:
    """Counts the codes the layout's own converter changed from absmean's (`plan.codes_differ`)."""
    changed = int(np.count_nonzero(again.codes != codes))
    if changed:
        plan.codes_differ[name] = changed
    return changed


def _ternarized_by_own_converter(name: str, model_a: object, model_b: object, plan_a: Plan, plan_b: Plan) -> bool:
    """A master's projection against a layout whose runtime ternarizes masters its own way
    (`Layout.quantize_master`, e.g. bitnet.cpp's GPU converter in bf16): when that converter
    gives exactly the stored codes and beta, the master's side takes the stored projection
    (shared, not copied) and the step is counted as a declared rounding of the master; when it
    does not, what differs is counted as `_by_own_quantizer` counts it. True: the pair is handled."""
    for plan, master, model, own, stored in ((plan_b, plan_a, model_a, model_a.tensors[name], model_b.tensors[name]),
                                             (plan_a, plan_b, model_b, model_b.tensors[name], model_a.tensors[name])):
        again = master_quantized(name, plan, master)
        if again is None:
            continue
        if again.beta.tobytes() != np.float32(stored.beta).tobytes() or not np.array_equal(again.codes, stored.codes()):
            _by_own_quantizer(name, plan, master, own, stored, again)  # a difference, counted (no second run)
            return True
        changed = int(np.count_nonzero(again.codes != own.codes()))
        model.tensors[name] = stored
        rounding = plan.roundings[name]
        plan.applied[f"codes and β by {rounding.layout}'s own converter ({rounding.where})"] += 1
        if changed:
            plan.own_codes[name] = changed
        return True
    return False


def count_own_beta(name: str, plan: Plan) -> None:
    """The converter's beta, applied: a declared rounding, named by its layout."""
    rounding = plan.roundings[name]
    plan.applied[f"β to {rounding.kind} by {rounding.layout}'s own converter ({rounding.where})"] += 1


def _reconcile_floats(name: str, model_a: object, model_b: object, plan_a: Plan, plan_b: Plan) -> None:
    a, b = model_a.tensors[name], model_b.tensors[name]
    for plan, value, other, model in ((plan_b, a, b, model_a), (plan_a, b, a, model_b)):
        kind = plan.float_kind(name)
        if kind and rounds_to(value, other, kind):
            model.tensors[name] = other
            plan.count(name)
            return


def rounds_to(value: object, other: object, kind: str) -> bool:
    """Whether `value` (float32 array, model.HalfTensor or quant_dot.QuantTensor) rounded to
    `kind` is `other`, bit for bit and not already equal, read a block of rows at a time."""
    from ..formats import fastpath
    from .blocks import equal_blocks

    rows, others = _rows(value), _rows(other)
    if rows.shape[0] != others.shape[0]:
        return False
    changed = False
    step = max(1, fastpath.CHUNK_BYTES // max(1, 4 * rows.shape[1], 4 * others.shape[1]))
    for start in range(0, rows.shape[0], step):
        block, wanted = rows[start:start + step], others[start:start + step]
        if not equal_blocks(block, value, wanted, other):
            values, wanted = _values(block, value), _values(wanted, other)
            if values.shape != wanted.shape or not np.array_equal(round_values(values, kind).view(np.uint32),
                                                                  wanted.view(np.uint32)):
                return False
            changed = True
        fastpath.drop_mapped_pages(rows[start:start + step])
        fastpath.drop_mapped_pages(others[start:start + step])
    return changed


def _rows(value: object) -> np.ndarray:
    data = value.bits if hasattr(value, "bits") else value.blocks if hasattr(value, "blocks") else np.asarray(value)
    return data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(1, -1)


def _values(block: np.ndarray, value: object) -> np.ndarray:
    from .kernel import half_to_float32

    if hasattr(value, "blocks"):  # ggml blocks
        from .quant_dot import dequantize

        return dequantize(np.asarray(block), value.kind)
    return half_to_float32(block, value.kind) if hasattr(value, "bits") else np.asarray(block, np.float32)
