"""Round trips through every layout, for other projects' CI: MODEL -> layout -> back.

For each layout that fits MODEL's shapes:

    MODEL --convert--> L (hf: packed directory; the others: GGUF) --convert--> BACK (MODEL's own kind)

    forward  L against MODEL: every ternary code equal; beta and float tensors bit-equal after
             exactly the rounding L's storage declares (`rounding.plan_of`: the layout's
             `round_beta`, an F16 embedding's fp16), which the row names
    back     BACK against L: everything bit-equal (no second rounding, nothing lost)
    logits   `verify` of MODEL, with L's declared rounding applied, against L's own bytes:
             bit-identical logits, or the layout's row is a mismatch

L is exactly what `convert` writes with its defaults (the F16 embedding of GGUF layouts, the
bf16 weight_scale of hf-packed); TL tilings are chosen automatically. A layout whose rules the
shapes break is skipped with the rule. The first broken check makes the layout's row a mismatch
naming the tensor; `RoundtripReport.ok` is False and the CLI exits 3. Every tensor is compared a
block of rows at a time and both models are read as `runner.model_of` reads them (one layer's
mapped bytes at a time). Intermediate files live in a temporary directory unless `workdir` is given.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..containers.outputs import scratch_directory
from ..engine.rounding import Plan, plan_of, reconcile, requantize, round_values
from ..errors import BitnetPackError, ScaleNotRepresentable, ShapeError, UsageError
from ..formats import fastpath
from ..formats.layouts import find_layout, get_layout, layout_names, outtype_of
from ..formats.ternary import TernaryWeight
from ..pipeline.convert import convert
from ..pipeline.sinks.factory import directory_outtypes, make_sink
from ..pipeline.sources import Entry, Tensor, open_checkpoint
from .diff import compare_pair

__all__ = ["LayoutResult", "RoundtripReport", "roundtrip", "scale_rounding"]

EMBEDDING_TYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32"}


@dataclass
class LayoutResult:
    layout: str
    status: str = "ok"  # "ok", "skipped", "mismatch"
    reason: str = ""  # why skipped / what broke (names the tensor)
    tensors: int = 0
    betas_rounded: int = 0
    floats_rounded: int = 0
    rounding: str = ""  # the declared roundings L applied ("β to fp16 (TQ2_0) in 14 tensors"); "" for none
    back_exact: bool | None = None
    logits: str = ""  # "identical", "max |diff| ...", "not run"
    bytes_written: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class RoundtripReport:
    model: str
    source_kind: str
    back_outtype: str
    results: list[LayoutResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "mismatch" for r in self.results)

    @property
    def broken(self) -> list[LayoutResult]:
        return [r for r in self.results if r.status == "mismatch"]

    def to_dict(self) -> dict:
        return {"model": self.model, "source_kind": self.source_kind, "back_outtype": self.back_outtype,
                "ok": self.ok, "layouts": [r.to_dict() for r in self.results]}


class _Broken(Exception):
    """A check failed: the message names the leg and the tensor."""


def scale_rounding(layout: str) -> str:
    """How a layout stores beta: "f32" (exact), "bf16" or "f16" (rounded to that type)."""
    return get_layout(layout).spec.scale.rpartition(":")[2]


def roundtrip(model: str | Path, layouts: list[str] | None = None, *, workdir: Path | None = None,
              prompt_ids: list[int] | None = None, n_tokens: int = 4, read_options: dict | None = None,
              progress: Callable[[int], None] | None = None) -> RoundtripReport:
    """Run the round trip of the module docstring for each of `layouts` (default: all)."""
    model = Path(model)
    with open_checkpoint(model, **(read_options or {})) as source:
        kind, entries = source.kind, source.entries()
        back = _back_outtype(source)
        layouts = layouts or default_layouts(source.family)
        embedding = None  # the forward leg writes convert's defaults
    report = RoundtripReport(str(model), kind, back)
    reference = _Reference(model, read_options or {}, prompt_ids, n_tokens)
    with scratch_directory("bitnet-pack-roundtrip-") as scratch:
        base = Path(workdir) if workdir is not None else scratch
        for layout in layouts:
            report.results.append(_one_layout(model, layout, base, back, embedding, reference, read_options or {}))
            if progress is not None:
                progress(sum(e.nbytes for e in entries))
    return report


def default_layouts(family: object) -> list[str]:
    """Every registered layout that takes a model of `family` (`Layout.family_refusal`)."""
    return [name for name in layout_names() if get_layout(name).family_refusal(family) is None]


def _back_outtype(source) -> str:
    # a 1/beta bf16 weight_scale (Llama-style family) cannot hold a layout's fp16 beta: the
    # master, which records every beta, is the exact way back
    if source.kind == "bf16-master" or (source.kind == "hf-packed" and source.family.packed_scale == "inverse"):
        return "bf16"
    layout = find_layout(source.layout) if source.kind == "gguf" else None
    if layout is not None and layout.spec.container == "gguf":
        return layout.spec.write_name
    return "hf-packed"


def _output_path(base: Path, name: str, outtype: str) -> Path:
    return base / (name if outtype in directory_outtypes() else f"{name}.gguf")


def _one_layout(model: Path, layout: str, base: Path, back: str, embedding: str, reference: _Reference,
                read_options: dict) -> LayoutResult:
    result = LayoutResult(layout)
    outtype = outtype_of(layout)
    forward_path = _output_path(base, f"roundtrip-{layout}", outtype)
    back_path = _output_path(base, f"roundtrip-{layout}-back", back)
    try:
        result.bytes_written = _convert(model, forward_path, outtype, embedding, read_options)
    except (ShapeError, ScaleNotRepresentable) as exc:  # the shapes or scales break the layout's rules
        result.status, result.reason = "skipped", str(exc)
        return result
    try:
        _check_forward(model, forward_path, layout, read_options, result)
        _convert_back(forward_path, back_path, back, _embedding_of(forward_path), layout)
        _check_back(forward_path, back_path, result)
        result.logits = reference.compare(forward_path)
    except _Broken as exc:
        result.status, result.reason = "mismatch", f"{layout}: {exc}"
    except UsageError:
        raise
    except BitnetPackError as exc:
        result.status, result.reason = "mismatch", f"{layout}: the converted output does not read back: {exc}"
    return result


def _embedding_of(path: Path) -> str | None:
    """The float type L stores its embedding in, kept by the back leg (no second rounding)."""
    with open_checkpoint(path) as checkpoint:
        dtype = next((e.dtype for e in checkpoint.entries() if e.name.endswith("embed_tokens.weight")), None)
    return EMBEDDING_TYPES.get(dtype)


def _convert_back(converted: Path, back_path: Path, back: str, embedding: str, layout: str) -> None:
    try:
        _convert(converted, back_path, back, embedding, {}, exact_scales=True)
    except UsageError:
        raise
    except BitnetPackError as exc:  # our own file does not convert back: the layout broke
        raise _Broken(f"converting {layout} back to {back} failed: {exc}") from exc


def _convert(source: Path, output: Path, outtype: str, embedding: str, read_options: dict, *,
             exact_scales: bool = False) -> int:
    """One conversion into `output`; returns the bytes of tensor data written. (Tests wrap this.)
    `exact_scales`: an hf-packed output keeps fp32 betas (the back leg must not round again)."""
    options: dict = {"force": True, "inputs": [source]}
    if output.suffix == ".gguf" and embedding is not None:
        options["embedding_type"] = embedding
    elif exact_scales and outtype == "hf-packed":
        options["scale_dtype"] = "f32"
    with open_checkpoint(source, **read_options) as checkpoint:
        return convert(checkpoint, make_sink(output, outtype, **options)).bytes_written


def _check_forward(model: Path, converted: Path, layout: str, read_options: dict, result: LayoutResult) -> None:
    written, own = get_layout(layout), 0
    with open_checkpoint(model, **read_options) as a, open_checkpoint(converted) as b:
        plan = plan_of(b)
        theirs = {e.name: e for e in b.entries()}
        for entry in a.entries():
            other = theirs.pop(entry.name, None)
            if other is None:
                raise _Broken(f"MODEL -> {layout} lost tensor {entry.name!r}")
            ours = entry.load()
            # a layout whose runtime's converter ternarizes masters its own way is held to that
            again = written.quantize_master(a, entry) if entry.kind == "linear" else None
            if again is not None:
                result.betas_rounded += _bits(again[0].beta) != _bits(ours.beta)
                own += 1
                ours = again[0]
            _check_pair(entry, ours, other, _load(other, layout), plan, result)
            a.release(entry)
            b.release(other)
            result.tensors += 1
        if theirs:
            raise _Broken(f"MODEL -> {layout} added tensor {sorted(theirs)[0]!r}")
    own_text = f"β and codes by {written.name}'s own converter (quantize_master) in {own} tensors" if own else ""
    result.rounding = ", ".join(text for text in (plan.description(), own_text) if text)


def _check_pair(entry: Entry, ours: TernaryWeight | Tensor, other: Entry, theirs: TernaryWeight | Tensor,
                plan: Plan, result: LayoutResult) -> None:
    """Codes equal; beta and floats bit-equal after L's declared rounding of MODEL's."""
    name, layout = entry.name, result.layout
    diff = compare_pair(name, ours, theirs)
    if diff.identical:
        return
    if diff.kind == "mismatch":
        raise _Broken(f"tensor {name!r} changed shape or kind: {list(entry.shape)} -> {list(other.shape)}")
    if diff.kind == "ternary":
        if diff.differing:
            raise _Broken(f"tensor {name!r}: {diff.differing} of {diff.size} codes differ after MODEL -> {layout}")
        if _bits(plan.beta(name, ours.beta)) != _bits(theirs.beta):
            raise _Broken(f"tensor {name!r}: beta {float(ours.beta)!r} became {float(theirs.beta)!r}, "
                          f"not its declared rounding ({plan.roundings.get(name, 'none')})")
        result.betas_rounded += 1
        return
    kind = plan.float_kind(name)
    if not kind or not _equal_after_rounding(ours, theirs, kind):
        raise _Broken(f"tensor {name!r}: {diff.differing} of {diff.size} values differ beyond the "
                      f"{other.dtype} rounding (max |diff| {diff.max_abs_diff:.3g})")
    plan.count(name)
    result.floats_rounded += 1


def _equal_after_rounding(ours: Tensor, theirs: Tensor, kind: str) -> bool:
    """MODEL's values rounded to `kind` are L's, bit for bit (a block of rows at a time)."""
    rows_a, rows_b = ours.data.reshape(ours.data.shape[0], -1), theirs.data.reshape(theirs.data.shape[0], -1)
    step = max(1, fastpath.CHUNK_BYTES // max(1, 4 * rows_a.shape[1]))
    for start in range(0, rows_a.shape[0], step):
        block_a = Tensor(ours.dtype, rows_a[start:start + step]).f32()
        block_b = Tensor(theirs.dtype, rows_b[start:start + step]).f32()
        if not np.array_equal(round_values(block_a, kind).view(np.uint32), block_b.view(np.uint32)):
            return False
    return True


def _check_back(converted: Path, back: Path, result: LayoutResult) -> None:
    with open_checkpoint(converted) as a, open_checkpoint(back) as b:
        theirs = {e.name: e for e in b.entries()}
        for entry in a.entries():
            other = theirs.get(entry.name)
            if other is None:
                raise _Broken(f"converting {result.layout} back lost tensor {entry.name!r}")
            diff = compare_pair(entry.name, _load(entry, result.layout), _load(other, f"{result.layout} back"))
            a.release(entry)  # memory holds one pair, not the two files' pages
            b.release(other)
            if not diff.identical:
                what = f"{diff.differing} of {diff.size} codes" if diff.kind == "ternary" and diff.differing else (
                    "beta" if diff.kind == "ternary" else f"{diff.differing} of {diff.size} values")
                raise _Broken(f"tensor {entry.name!r}: {what} changed converting {result.layout} back")
    result.back_exact = True


def _load(entry: Entry, what: str) -> TernaryWeight | Tensor:
    """A converted tensor; a read failure is the layout's fault and names the tensor."""
    try:
        return entry.load()
    except UsageError:
        raise
    except BitnetPackError as exc:
        raise _Broken(f"tensor {entry.name!r}: reading it from the {what} output failed: {exc}") from exc


def _bits(value) -> bytes:
    return np.float32(value).tobytes()


class _Reference:
    """MODEL read as a BitNetModel (with each layout's declared rounding applied), verified
    against each converted file run from its own bytes."""

    def __init__(self, model: Path, read_options: dict, prompt_ids: list[int] | None, n_tokens: int):
        self.path, self.read_options, self.n_tokens = model, read_options, n_tokens
        self.prompt_ids = prompt_ids

    def compare(self, converted: Path) -> str:
        if self.n_tokens < 1:
            return "not run"
        from ..engine.runner import model_of
        from .verify import verify

        with open_checkpoint(converted) as other, open_checkpoint(self.path, **self.read_options) as source:
            model_a, model_b = model_of(source), model_of(other)
            plan_a, plan_b = plan_of(source), plan_of(other)
            own = requantize(model_a, plan_a, plan_b)  # a layout held to its runtime's own converter
            rounded = reconcile(model_a, model_b, plan_a, plan_b)
            self.prompt_ids = self.prompt_ids or default_prompt(source.config)
            report = verify(model_a, model_b, self.prompt_ids, self.n_tokens, rounded=rounded)
        if not report.identical:
            raise _Broken(f"decoded weights equal after the declared rounding but the file's own bytes give "
                          f"other logits: {report.cause}")
        return "identical" + (f" to MODEL with {own}" if own else "")


def default_prompt(config: dict) -> list[int]:
    """BOS and the next seven ids: a prompt any vocabulary has, no tokenizer needed."""
    vocab = int(config["vocab_size"])
    bos = config.get("bos_token_id")
    start = [int(bos)] if isinstance(bos, int) and 0 <= bos < vocab else []
    return start + [i % vocab for i in range(1, 8)]
