"""`convert` for the BitNet embedding families: GGUF (f32 / f16 / i2_s, the converter's bytes)
or a transformers directory (bf16), from a transformers checkpoint or any of those GGUFs."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..formats.absmean import SUMS
from .naming import resolve_output
from .sinks.embedding_gguf import OUTTYPES, REFUSED, check_outtype, write_gguf
from .sources.embedding import open_embedding

ALLOWED_OPTIONS = {"name", "beta_rule", "float_type", "scale_dtype"}


def convert_embedding(path: Path, out, outtype: str, given: dict, *, force: bool, dry_run: bool):
    """A ConvertReport (api) for an embedding model; `given` the write options given."""
    from ..api import ConvertReport

    unused = sorted(set(given) - ALLOWED_OPTIONS)
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} does not apply to BitNet embedding models")
    rule = given.get("beta_rule", "numpy1")
    if rule not in SUMS:
        raise UsageError(f"--beta-rule must be one of {', '.join(SUMS)}, got {rule!r}")
    with open_embedding(path) as source:
        target = resolve_output(out, outtype, source.path.resolve().name.removesuffix(".gguf"),
                                sum(int(__import__("math").prod(t.shape)) for t in source.tensors))
        gguf = target.suffix == ".gguf"
        if gguf:
            check_outtype(outtype)
        elif outtype not in ("bf16", "hf-packed"):
            raise UsageError(f"--outtype {outtype} needs a .gguf OUT ({', '.join(OUTTYPES)}); {REFUSED}")
        if "scale_dtype" in given and (gguf or outtype != "hf-packed"):
            raise UsageError("--scale-dtype applies to --outtype hf-packed only")
        for key in ("beta_rule", "float_type"):
            if key in given and not (gguf and outtype == "i2_s"):
                raise UsageError(f"--{key.replace('_', '-')} applies to --outtype i2_s only")
        report = ConvertReport(target, outtype, str(path), source.kind, len(source.tensors), 0, 0,
                               list(source.notes), dry_run, source_path=str(path), source_layout=source.layout,
                               family=source.family.name)
        report.bytes_read = sum(path.stat().st_size for path in _files(source.path))
        report.planned = plan(source, outtype, gguf, given)
        report.bytes_written = sum(p.nbytes for p in report.planned)
        if dry_run:
            report.files = [(str(target), "gguf" if gguf else "checkpoint")]
            report.existed = os.path.lexists(target)
            return report
        if gguf:
            written, report.bytes_written, notes = write_gguf(source, target, outtype, beta_rule=rule,
                                                              name=given.get("name"), force=force,
                                                              float_type=given.get("float_type", "f16"))
        else:
            from .sinks.embedding_hf import write_hf

            written, report.bytes_written, notes = write_hf(source, target, packed=outtype == "hf-packed",
                                                            scale_dtype=given.get("scale_dtype", "f32"), force=force)
        report.output = written
        report.files = [(str(written), "gguf")] if gguf else [(str(written), "checkpoint")] + [
            (str(written / name), "file") for name in sorted(p.name for p in written.iterdir())]
        report.notes += notes
    return report


def plan(source, outtype: str, gguf: bool, given: dict) -> list:
    """What convert writes (for --dry-run): name, type, shape, bytes per tensor."""
    from .sinks import PlannedTensor
    from .sinks.embedding_gguf import TYPES, tensor_type
    from .sinks.embedding_hf import _plans

    if not gguf:
        return [PlannedTensor(p.name, p.dtype, p.shape, p.nbytes)
                for p in _plans(source, outtype == "hf-packed", given.get("scale_dtype", "f32").upper())]
    planned = []
    for tensor in source.tensors:
        kind = tensor_type(tensor, outtype, given.get("float_type", "f16"))
        planned.append(PlannedTensor(tensor.gguf, kind, tuple(tensor.shape),
                                     TYPES.nbytes(TYPES.type_id(kind), tuple(tensor.shape))))
    return planned


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.safetensors"))
