"""bitnet-pack inspect SRC: one row per tensor, decoded to ternary where it is ternary;
with --raw, the file's own view (tensor names, types, offsets; GGUF key-values) like gguf-dump."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from ..checkpoints import open_checkpoint
from ..errors import FormatError
from ..progress import bars_wanted, byte_progress
from ..ternary import TernaryWeight
from .common import about, emit_json, resolve, source_bytes

ARRAY_SHOWN = 8  # elements of a KV array shown (the 2B4T vocabulary is 128k strings)
TEXT_SHOWN = 120


def describe(path: Path, progress: Callable[[int], None] | None = None) -> dict:
    """The inspection as data: checkpoint kind, notes, and per tensor its facts."""
    with open_checkpoint(path) as source:
        rows = []
        for entry in source.entries():
            if progress is not None:
                progress(entry.nbytes)
            row = {"name": entry.name, "dtype": entry.dtype, "shape": list(entry.shape),
                   "layout": source.layout if entry.kind == "linear" else None, "beta": None, "share": None}
            value = entry.load()
            if isinstance(value, TernaryWeight):
                minus, zero, plus = value.counts()
                size = max(1, minus + zero + plus)
                row["beta"] = float(value.beta)
                row["share"] = {"-1": minus / size, "0": zero / size, "+1": plus / size}
            rows.append(row)
            source.release(entry)
        return {"path": str(path), "kind": source.kind, "family": source.family.name, "layout": source.layout,
                "notes": source.notes,
                "tensors": rows}


def describe_raw(path: Path) -> dict:
    """The container as stored: GGUF header, key-values and tensor table, or safetensors
    headers (every shard), with absolute byte offsets."""
    if path.is_file() and path.suffix == ".gguf":
        return _raw_gguf(path)
    from ..containers.safetensors import SafetensorsFile
    from ..containers.shards import SafetensorsDir

    if path.is_file():
        with SafetensorsFile(path) as file:
            return {"path": str(path), "container": "safetensors", "files": [_raw_safetensors(file)]}
    directory = SafetensorsDir(path)
    try:
        return {"path": str(path), "container": "safetensors", "files": [_raw_safetensors(f) for f in directory.files]}
    finally:
        directory.close()


def _raw_gguf(path: Path) -> dict:
    from ..containers.gguf import GGUFFile, json_type_name

    with GGUFFile(path) as file:
        kv = {key: _kv_json(field, json_type_name) for key, field in file.kv.items()}
        tensors = [{"name": t.name, "type": t.type_name, "type_id": t.type_id, "shape": list(t.shape),
                    "ne": list(t.ne), "offset": t.abs_offset, "nbytes": t.nbytes} for t in file.tensors.values()]
        return {"path": str(path), "container": "gguf", "version": file.version, "alignment": file.alignment,
                "type_ids": file.types.flavour and f"bitnet.cpp {file.types.flavour}" or "mainline",
                "data_start": file.data_start, "kv": kv, "tensors": tensors}


def _kv_json(field, type_name) -> dict:
    from gguf import GGUFValueType

    if field.vtype != GGUFValueType.ARRAY:
        return {"type": type_name(field.vtype), "value": field.value}
    values = field.value
    shown = values[:ARRAY_SHOWN]
    shown = shown.tolist() if isinstance(shown, np.ndarray) else ["[...]" if hasattr(v, "vtype") else v for v in shown]
    return {"type": f"array[{type_name(field.subtype)}]", "count": len(values), "value": shown}


def _raw_safetensors(file) -> dict:
    tensors = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "offset": t.begin, "nbytes": t.nbytes}
               for t in sorted(file.tensors.values(), key=lambda t: t.begin)]
    return {"file": file.path.name, "size": file.size, "metadata": file.metadata, "tensors": tensors}


@click.command("inspect")
@click.argument("src")
@click.option("--revision", default=None, help="Branch, tag or commit of a hub SRC (default: main).")
@click.option("--raw", is_flag=True, help="The file's own view: stored tensor names, types (bitnet.cpp ids "
              "included), offsets and sizes; GGUF key-values too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(src: str, revision: str | None, raw: bool, as_json: bool) -> None:
    """Show every tensor of SRC: name, dtype, shape, layout, beta and the share of -1/0/+1.

    SRC is a checkpoint directory, a .gguf or .safetensors file, or a hub repo id.
    """
    bars = bars_wanted(as_json)
    source = resolve(src, revision, progress=bars)
    with about(source.path):
        if raw:
            report = describe_raw(source.path)
        else:
            with byte_progress(source_bytes(source.path), f"inspect {source.path.name}", bars) as advance:
                report = describe(source.path, advance)
            if not report["tensors"]:
                raise FormatError("holds no tensors: not a model checkpoint")
    if as_json:
        emit_json(report)
    elif raw:
        _print_raw(report)
    else:
        _print_checkpoint(report)



def _print_checkpoint(report: dict) -> None:
    click.echo(f"{report['path']}: {report['kind']} ({report['layout']}), family {report['family']}")
    for note in report["notes"]:
        click.echo(f"  note: {note}")
    width = max(len(r["name"]) for r in report["tensors"])
    for row in report["tensors"]:
        shape = "x".join(map(str, row["shape"]))
        line = f"{row['name']:<{width}}  {row['dtype']:<6}  {shape:>11}"
        if row["beta"] is not None:
            share = row["share"]
            line += (f"  {row['layout']:<6} beta={row['beta']:.6g}  "
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
