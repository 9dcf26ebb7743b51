"""Round trips through every layout, for other projects' CI: MODEL -> layout -> back.

For each layout that fits MODEL's shapes:

    MODEL --convert--> L (hf: packed directory; the others: GGUF) --convert--> BACK (MODEL's own kind)

    forward  L against MODEL: every ternary code equal; beta bit-equal, or equal to MODEL's beta
             rounded to the layout's scale type (bf16 weight_scale for hf, fp16 d for TQ);
             float tensors bit-equal, or equal to MODEL's rounded to the dtype L stores
    back     BACK against L: everything bit-equal (no second rounding, nothing lost)
    logits   `verify` of MODEL against L: bit-identical logits when the forward leg was exact;
             with rounded scales the difference is reported, not failed

A layout whose rules the shapes break is skipped with the rule. The first broken check makes
the layout's row a mismatch naming the tensor; `RoundtripReport.ok` is False and the CLI exits 3.
GGUF legs keep the embedding in MODEL's float type (so floats survive) and let TL tilings be
chosen automatically. Intermediate files live in a temporary directory unless `workdir` is given.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoints import Entry, Tensor, load_weights, open_checkpoint
from .convert import convert
from .diff import compare_pair
from .dtypes import round_to_bf16
from .errors import BitnetPackError, ScaleNotRepresentable, ShapeError, UsageError
from .layouts import find_layout, get_layout, layout_names, outtype_of
from .outputs import scratch_directory
from .sinks.factory import directory_outtypes, make_sink
from .ternary import TernaryWeight

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
        embedding = EMBEDDING_TYPES.get(next((e.dtype for e in entries if e.name.endswith("embed_tokens.weight")),
                                             "F16"), "f16")
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
        _convert_back(forward_path, back_path, back, embedding, layout)
        _check_back(forward_path, back_path, result)
        result.logits = reference.compare(forward_path, exact=result.betas_rounded + result.floats_rounded == 0)
    except _Broken as exc:
        result.status, result.reason = "mismatch", f"{layout}: {exc}"
    except UsageError:
        raise
    except BitnetPackError as exc:
        result.status, result.reason = "mismatch", f"{layout}: the converted output does not read back: {exc}"
    return result


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
    if output.suffix == ".gguf":
        options["embedding_type"] = embedding
    elif exact_scales and outtype == "hf-packed":
        options["scale_dtype"] = "f32"
    with open_checkpoint(source, **read_options) as checkpoint:
        return convert(checkpoint, make_sink(output, outtype, **options)).bytes_written


def _check_forward(model: Path, converted: Path, layout: str, read_options: dict, result: LayoutResult) -> None:
    rounding, written = scale_rounding(layout), get_layout(layout)
    with open_checkpoint(model, **read_options) as a, open_checkpoint(converted) as b:
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
                ours = again[0]
            _check_pair(entry, ours, other, _load(other, layout), rounding, result)
            result.tensors += 1
        if theirs:
            raise _Broken(f"MODEL -> {layout} added tensor {sorted(theirs)[0]!r}")


def _check_pair(entry: Entry, ours: TernaryWeight | Tensor, other: Entry, theirs: TernaryWeight | Tensor,
                rounding: str, result: LayoutResult) -> None:
    name, layout = entry.name, result.layout
    diff = compare_pair(name, ours, theirs)
    if diff.identical:
        return
    if diff.kind == "mismatch":
        raise _Broken(f"tensor {name!r} changed shape or kind: {list(entry.shape)} -> {list(other.shape)}")
    if diff.kind == "ternary":
        if diff.differing:
            raise _Broken(f"tensor {name!r}: {diff.differing} of {diff.size} codes differ after MODEL -> {layout}")
        if _bits(_rounded(ours.beta, rounding)) != _bits(theirs.beta):
            raise _Broken(f"tensor {name!r}: beta {float(ours.beta)!r} became {float(theirs.beta)!r}, "
                          f"not its {rounding} rounding")
        result.betas_rounded += 1
        return
    expected = _rounded(ours.f32(), other.dtype.lower())
    if not np.array_equal(np.asarray(expected, np.float32).view(np.uint32), theirs.f32().view(np.uint32)):
        raise _Broken(f"tensor {name!r}: {diff.differing} of {diff.size} values differ beyond the "
                      f"{other.dtype} rounding (max |diff| {diff.max_abs_diff:.3g})")
    result.floats_rounded += 1


def _check_back(converted: Path, back: Path, result: LayoutResult) -> None:
    with open_checkpoint(converted) as a, open_checkpoint(back) as b:
        theirs = {e.name: e for e in b.entries()}
        for entry in a.entries():
            other = theirs.get(entry.name)
            if other is None:
                raise _Broken(f"converting {result.layout} back lost tensor {entry.name!r}")
            diff = compare_pair(entry.name, _load(entry, result.layout), _load(other, f"{result.layout} back"))
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


def _rounded(values, rounding: str):
    if rounding == "bf16":
        return round_to_bf16(values)
    if rounding == "f16":
        return np.asarray(values, np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(values, np.float32)


def _bits(value) -> bytes:
    return np.float32(value).tobytes()


class _Reference:
    """MODEL loaded once as a BitNetModel, verified against each converted file."""

    def __init__(self, model: Path, read_options: dict, prompt_ids: list[int] | None, n_tokens: int):
        self.path, self.read_options, self.n_tokens = model, read_options, n_tokens
        self.prompt_ids, self._model = prompt_ids, None

    def compare(self, converted: Path, *, exact: bool) -> str:
        if self.n_tokens < 1:
            return "not run"
        from .model import BitNetModel
        from .verify import verify

        if self._model is None:
            config, weights = load_weights(self.path, stored=True, **self.read_options)
            self._model = BitNetModel(config, weights)
            self.prompt_ids = self.prompt_ids or default_prompt(config)
        config, weights = load_weights(converted, stored=True)  # run from the converted file's own bytes
        report = verify(self._model, BitNetModel(config, weights), self.prompt_ids, self.n_tokens)
        if report.identical:
            return "identical"
        if exact:
            raise _Broken(f"decoded weights identical but the file's own bytes give other logits: {report.cause}")
        return f"max |diff| {report.max_abs_diff:.3g} (rounded scales)"


def default_prompt(config: dict) -> list[int]:
    """BOS and the next seven ids: a prompt any vocabulary has, no tokenizer needed."""
    vocab = int(config["vocab_size"])
    bos = config.get("bos_token_id")
    start = [int(bos)] if isinstance(bos, int) and 0 <= bos < vocab else []
    return start + [i % vocab for i in range(1, 8)]
