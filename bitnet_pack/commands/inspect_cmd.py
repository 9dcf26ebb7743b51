"""bitnet-pack inspect PATH: one row per tensor, decoded to ternary where it is ternary."""
from __future__ import annotations

from pathlib import Path

import click

from ..checkpoints import open_checkpoint
from ..ternary import TernaryWeight
from .common import emit_json


def describe(path: Path) -> dict:
    """The inspection as data: checkpoint kind, notes, and per tensor its facts."""
    with open_checkpoint(path) as source:
        rows = []
        for entry in source.entries():
            row = {"name": entry.name, "dtype": entry.dtype, "shape": list(entry.shape),
                   "layout": source.layout if entry.kind == "linear" else None, "beta": None, "share": None}
            value = entry.load()
            if isinstance(value, TernaryWeight):
                minus, zero, plus = value.counts()
                size = max(1, minus + zero + plus)
                row["beta"] = float(value.beta)
                row["share"] = {"-1": minus / size, "0": zero / size, "+1": plus / size}
            rows.append(row)
        return {"path": str(path), "kind": source.kind, "layout": source.layout, "notes": source.notes,
                "tensors": rows}


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(path: Path, as_json: bool) -> None:
    """Show every tensor of PATH: name, dtype, shape, layout, beta and the share of -1/0/+1."""
    report = describe(path)
    if as_json:
        emit_json(report)
        return
    click.echo(f"{report['path']}: {report['kind']} ({report['layout']})")
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
