"""bitnet-pack inspect SRC: one row per tensor, decoded to ternary where it is ternary;
with --raw, the file's own view (tensor names, types, offsets; GGUF key-values) like gguf-dump."""
from __future__ import annotations

from pathlib import Path

import click

from ...api import inspect
from ...formats.layouts import variants
from ...pipeline.progress import bars, bars_wanted, is_quiet
from ...proof.inspection import Inspection, describe_raw
from .common import PATH_OR_REPO, about, emit_json, examples, note, resolve
from .schema import inspect_json

TEXT_SHOWN = 120


@click.command("inspect", epilog=examples(
    "bitnet-pack inspect out.gguf",
    "bitnet-pack inspect ggml-model-tl2.gguf --json     # finds ggml-model-tl2.kernel_config.ini",
    "bitnet-pack inspect ./packed --raw"))
@click.argument("src", type=PATH_OR_REPO)
@click.option("--revision", default=None, help="Branch, tag or commit of a hub SRC (default: main).")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini of a TL1/TL2 SRC (default: its metadata, else <stem>.kernel_config.ini "
                   "beside it).")
@click.option("--i2s-variant", type=click.Choice(variants()), default=None,
              help="Read an I2_S SRC's blocks as x86 (128/32), arm (64/16) or 1x4 (four rows per byte).")
@click.option("--raw", is_flag=True, help="The file's own view: stored tensor names, types (bitnet.cpp ids "
              "included), offsets and sizes; GGUF key-values too.")
@click.option("--hf-names", is_flag=True, help="Name a GGUF's tensors as transformers does (default: the "
              "file's own GGUF names).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(src: str, revision: str | None, kernel_config: Path | None, i2s_variant: str | None, raw: bool,
            hf_names: bool, as_json: bool) -> None:
    """Show every tensor of SRC: name, dtype, shape, layout, beta and the share of -1/0/+1.

    SRC is a checkpoint directory, a .gguf or .safetensors file, or a hub repo id.
    """
    if raw:
        source = resolve(src, revision, progress=bars_wanted(as_json))
        with about(source.path):
            report = describe_raw(source.path)
        emit_json(report) if as_json else _print_raw(report)
        return
    inspection = inspect(src, revision=revision, progress=bars(bars_wanted(as_json)), kernel_config=kernel_config,
                         i2s_variant=i2s_variant, hf_names=hf_names)
    if as_json:
        emit_json(inspect_json(inspection))
    else:
        _print_checkpoint(inspection)


def _print_checkpoint(report: Inspection) -> None:
    if report.source is not None:
        note(f"resolved the hub source to {report.source}")
    click.echo(f"{report.path}: {report.kind} ({report.layout}), family {report.family}"
               + (f", pooling {report.pooling}, embedding size {report.embedding_size}" if report.pooling else ""))
    model = report.model
    click.echo(f"  {model['layers']} layers, vocab {model['vocab']}, context {model['context']}, hidden "
               f"{model['hidden']}; {model['parameters'] / 1e6:.2f}M parameters, {model['tensor_bytes'] / 1e6:.2f} MB "
               f"of tensors ({model['file_bytes'] / 1e6:.2f} MB on disk)")
    for message in [] if is_quiet() else report.notes:  # -q: results only
        click.echo(f"  note: {message}")
    width = max(len(r.name) for r in report.tensors)
    for row in report.tensors:
        shape = "x".join(map(str, row.shape))
        line = f"{row.name:<{width}}  {row.dtype:<6}  {shape:>11}"
        if row.beta is not None:
            share = row.share
            line += (f"  {row.layout:<6} beta={row.beta:.6g}  "
                     f"-1:{share['-1']:.3f} 0:{share['0']:.3f} +1:{share['+1']:.3f}")
        click.echo(line)


def _print_raw(report: dict) -> None:
    if report["container"] == "gguf":
        click.echo(f"{report['path']}: GGUF v{report['version']}, {len(report['kv'])} key-values, "
                   f"{len(report['tensors'])} tensors, alignment {report['alignment']}, "
                   f"data at {report['data_start']}, type ids: {report['type_ids']}")
        width = max((len(k) for k in report["kv"]), default=0)
        for key, field in report["kv"].items():
            click.echo(f"  {_printable(key):<{width}}  {field['type']:<16}  {_shown(field)}")
        _print_tensor_table(report["tensors"], "type")
        return
    for file in report["files"]:
        click.echo(f"{report['path']} [{file['file']}]: safetensors, {file['size']} bytes, "
                   f"{len(file['tensors'])} tensors")
        for key, value in file["metadata"].items():
            click.echo(f"  {_printable(key)} = {_printable(_clip(value))}")
        _print_tensor_table(file["tensors"], "dtype")


def _print_tensor_table(tensors: list[dict], type_key: str) -> None:
    width = max((len(t["name"]) for t in tensors), default=0)
    for t in tensors:
        kind = t[type_key] + (f" ({t['type_id']})" if "type_id" in t else "")
        click.echo(f"{_printable(t['name']):<{width}}  {kind:<10}  {'x'.join(map(str, t['shape'])):>12}  "
                   f"@{t['offset']:<12} {t['nbytes']:>12} B")


def _shown(field: dict) -> str:
    if "count" in field:
        more = f", ... ({field['count']} in all)" if field["count"] > len(field["value"]) else ""
        return _printable("[" + ", ".join(_clip(repr(v), 40) for v in field["value"]) + more + "]")
    value = field["value"]
    return _printable(_clip(repr(value) if isinstance(value, str) else str(value)))


def _clip(text: str, limit: int = TEXT_SHOWN) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _printable(text: str) -> str:
    """Control characters escaped, so a crafted name cannot rewrite the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))
