"""Choose the sink from OUT and --outtype: a directory is a safetensors checkpoint, a
`*.gguf` path a GGUF file; the layout follows the outtype."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import Sink

SAFETENSORS_OUTTYPES = ("hf-packed", "bf16")
GGUF_OUTTYPES = ("i2_s", "i2_s_arm", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "bf16", "f32")


def outtypes() -> tuple[str, ...]:
    return SAFETENSORS_OUTTYPES + GGUF_OUTTYPES


def make_sink(out: Path, outtype: str, **options: object) -> Sink:
    if out.suffix == ".gguf":
        if outtype not in GGUF_OUTTYPES:
            raise UsageError(f"--outtype {outtype} does not go in a GGUF file; use one of "
                             f"{', '.join(GGUF_OUTTYPES) or '(none yet)'}")
        from .gguf import GGUFSink

        return GGUFSink(out, outtype, **options)
    if outtype not in SAFETENSORS_OUTTYPES:
        raise UsageError(f"--outtype {outtype} needs a .gguf output path; a directory takes "
                         f"{' or '.join(SAFETENSORS_OUTTYPES)}")
    from .hf import HFSink

    allowed = {"force", "max_shard_size", "inputs", "extra_metadata"}
    unused = [k for k in ("target", "arch", "name") if options.get(k)]
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} applies to GGUF outputs only")
    return HFSink(out, outtype, **{k: v for k, v in options.items() if k in allowed})
