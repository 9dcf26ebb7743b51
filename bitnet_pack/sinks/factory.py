"""Choose the sink from OUT and --outtype: a directory is a safetensors checkpoint, a
`*.gguf` path a GGUF file; the layout follows the outtype. Options a sink would not use are
refused here (see `options`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..layouts import OUTTYPE_OF_LAYOUT, get_layout, normalize_name, outtype_of
from ..options import WriteOptions
from . import Sink

SAFETENSORS_OUTTYPES = ("hf-packed", "bf16")
TORCH_OUTTYPES = ("bitnet-gpu",)  # a directory of torch pickles (sinks/bitnet_gpu.py)
GGUF_OUTTYPES = ("i2_s", "i2_s_arm", "i2_s_1x4", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "bf16", "f32")
FLOAT_OUTTYPES = ("f16", "bf16", "f32")


def outtypes() -> tuple[str, ...]:
    return SAFETENSORS_OUTTYPES + GGUF_OUTTYPES + TORCH_OUTTYPES


def outtype_spellings() -> tuple[str, ...]:
    """Every name --outtype accepts: the outtypes and the layout names that differ ("hf")."""
    return tuple(dict.fromkeys(outtypes() + tuple(OUTTYPE_OF_LAYOUT)))


def canonical_outtype(name: str) -> str:
    """'HF' -> 'hf-packed', 'TQ2-0' -> 'tq2_0'; UsageError for names no sink writes."""
    key = normalize_name(name)
    for outtype in outtypes():
        if normalize_name(outtype) == key:
            return outtype
    try:
        return outtype_of(get_layout(name).name)
    except UsageError:
        raise UsageError(f"unknown --outtype {name!r}; known: {', '.join(outtypes())}") from None


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
        if outtype not in GGUF_OUTTYPES:
            raise UsageError(f"--outtype {outtype} does not go in a GGUF file; use one of {', '.join(GGUF_OUTTYPES)}")
        options.check_used_by(outtype, gguf=True)
        from .gguf import GGUFSink

        return GGUFSink(out, outtype, **common, **options.sink_kwargs(gguf=True))
    if out.suffix == ".safetensors":
        raise UsageError(f"a transformers checkpoint is a directory (config.json, tokenizer, weights): name OUT "
                         f"without the .safetensors suffix, e.g. {out.with_suffix('')}")
    if outtype in TORCH_OUTTYPES:
        from .bitnet_gpu import GPUSink

        return GPUSink(out, outtype, **common, **options.given())
    if outtype not in SAFETENSORS_OUTTYPES:
        raise UsageError(f"--outtype {outtype} needs a .gguf output path; a directory takes "
                         f"{' or '.join(SAFETENSORS_OUTTYPES)}")
    options.check_used_by(outtype, gguf=False)
    from .hf import HFSink

    return HFSink(out, outtype, **common, **options.sink_kwargs(gguf=False))
