"""Choose the sink from OUT and --outtype: a directory is a safetensors checkpoint, a
`*.gguf` path a GGUF file; the layout follows the outtype. Options a sink would not use are
refused here (see `options`)."""
from __future__ import annotations

from pathlib import Path

from ...errors import UnknownLayout, UsageError
from ...formats.layouts import find_layout, layouts, load_hook, normalize_name
from ..options import WriteOptions
from . import Sink

FLOAT_OUTTYPES = ("f16", "bf16", "f32")  # GGUF; a safetensors directory takes bf16 (a master)


def layout_outtypes(container: str) -> tuple[str, ...]:
    """The outtypes of the registered layouts stored in `container` ("gguf" / "safetensors")."""
    return tuple(layout.spec.write_name for layout in layouts() if layout.spec.container == container)


def safetensors_outtypes() -> tuple[str, ...]:
    return layout_outtypes("safetensors") + ("bf16",)


def directory_outtypes() -> tuple[str, ...]:
    """What a directory OUT takes: the safetensors outtypes, then the layouts of other directory
    containers (their entries name their sink)."""
    others = (layout.spec.write_name for layout in layouts() if layout.spec.container not in ("gguf", "safetensors"))
    return safetensors_outtypes() + tuple(others)


def gguf_outtypes() -> tuple[str, ...]:
    return layout_outtypes("gguf") + FLOAT_OUTTYPES


def outtypes() -> tuple[str, ...]:
    return tuple(dict.fromkeys(directory_outtypes() + gguf_outtypes()))


def outtype_spellings() -> tuple[str, ...]:
    """Every name --outtype accepts: the outtypes, and the layout names and aliases that differ ("hf")."""
    names = [n for layout in layouts() for n in (layout.name, *layout.spec.aliases)]
    return tuple(dict.fromkeys(outtypes() + tuple(names)))


def canonical_outtype(name: str) -> str:
    """'HF' -> 'hf-packed', 'TQ2-0' -> 'tq2_0'; UsageError for names no sink writes."""
    key = normalize_name(name)
    for outtype in outtypes():
        if normalize_name(outtype) == key:
            return outtype
    layout = find_layout(name)
    if layout is None:
        raise UnknownLayout(f"unknown --outtype {name!r}; known: {', '.join(outtypes())}")
    return layout.spec.write_name


def is_gguf_output(out: Path) -> bool:
    return out.suffix == ".gguf"


def make_sink(out: Path, outtype: str, *, force: bool = False, inputs: list[Path] | None = None,
              extra_metadata: dict[str, str] | None = None, options: WriteOptions | None = None,
              **keywords: object) -> Sink:
    """The sink writing `outtype` to `out`; `options` (or the same as keywords, e.g.
    `embedding_type="bf16"`) are checked against what it uses."""
    outtype = canonical_outtype(outtype)
    options = options or WriteOptions(**{k: v for k, v in keywords.items() if v is not None})
    common = {"force": force, "inputs": inputs, "extra_metadata": extra_metadata}
    if is_gguf_output(out):
        if outtype not in gguf_outtypes():
            raise UsageError(f"--outtype {outtype} does not go in a GGUF file; use one of {', '.join(gguf_outtypes())}")
        options.check_used_by(outtype, gguf=True)
        from .gguf import GGUFSink

        return GGUFSink(out, outtype, **common, **options.sink_kwargs(gguf=True))
    if out.suffix == ".safetensors":
        raise UsageError(f"a transformers checkpoint is a directory (config.json, tokenizer, weights): name OUT "
                         f"without the .safetensors suffix, e.g. {out.with_suffix('')}")
    if outtype not in directory_outtypes():
        raise UsageError(f"--outtype {outtype} needs a .gguf output path; a directory takes "
                         f"{' or '.join(directory_outtypes())}")
    options.check_used_by(outtype, gguf=False)
    layout = find_layout(outtype)
    if layout is not None and layout.spec.sink:  # a directory layout with a writer of its own
        return load_hook(layout.spec.sink)(out, outtype, **common, **options.sink_kwargs(gguf=False))
    from .hf import HFSink

    if outtype not in HFSink.OUTTYPES:
        raise UsageError(f"--outtype {outtype} is a directory layout no sink writes yet (the transformers "
                         f"sink writes {' and '.join(HFSink.OUTTYPES)}; an entry names its own with sink=)")
    return HFSink(out, outtype, **common, **options.sink_kwargs(gguf=False))
