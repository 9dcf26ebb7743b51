"""bitnet-pack convert SRC OUT --outtype ..."""
from __future__ import annotations

from pathlib import Path

import click

from ..checkpoints import open_checkpoint
from ..convert import convert, plan
from ..progress import bars_wanted, byte_progress
from ..sinks.factory import make_sink, outtypes
from .common import emit_json, parse_size


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--outtype", required=True, type=click.Choice(outtypes(), case_sensitive=False),
              help="Layout of the projections in OUT.")
@click.option("--target", type=click.Choice(["bitnet.cpp", "llama.cpp"]), default=None,
              help="GGUF runtime: sets the architecture name and keys. Default: bitnet.cpp for "
                   "i2_s/tl1/tl2, llama.cpp otherwise.")
@click.option("--arch", default=None, help="GGUF architecture name (bitnet.cpp: bitnet-b1.58 or bitnet-25).")
@click.option("--type-ids", type=click.Choice(["2025", "2026"]), default="2025", show_default=True,
              help="bitnet.cpp type-id generation: TL2 is 39 in forks up to mid-2025, 42 in newer ones.")
@click.option("--embedding-type", type=click.Choice(["f16", "bf16", "f32"]), default="f16", show_default=True,
              help="GGUF type of token_embd.")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="bitnet.cpp kernel_config.ini giving the TL1/TL2 tilings (default: chosen automatically "
                   "and written next to OUT).")
@click.option("--i2s-variant", type=click.Choice(["x86", "arm"]), default=None,
              help="Read SRC's I2_S blocks as x86 (128/32, official files) or ARM (64/16).")
@click.option("--name", default=None, help="general.name of a GGUF output.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--dry-run", is_flag=True, help="Print the plan (tensors, layouts, sizes); write nothing.")
@click.option("--max-shard-size", default=None, metavar="SIZE",
              help="Shard safetensors outputs (e.g. 2G, 500M).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(src: Path, out: Path, outtype: str, target: str | None, arch: str | None, type_ids: str,
            embedding_type: str, kernel_config: Path | None, i2s_variant: str | None, name: str | None,
            force: bool, dry_run: bool, max_shard_size: str | None, as_json: bool) -> None:
    """Convert SRC (a checkpoint directory or .gguf) into OUT with --outtype.

    OUT's container follows its name: a directory gets a transformers safetensors
    checkpoint, a *.gguf path a GGUF file.
    """
    sink = make_sink(out, outtype.lower(), force=force, inputs=[src], max_shard_size=parse_size(max_shard_size),
                     target=target, arch=arch, type_ids=type_ids, embedding_type=embedding_type,
                     kernel_config=kernel_config, name=name)
    read_options = {"i2s_variant": i2s_variant, "kernel_config": kernel_config} if src.suffix == ".gguf" else {}
    with open_checkpoint(src, **read_options) as source:
        for note in source.notes:
            click.echo(f"note: {note}", err=True)
        if dry_run:
            _print_plan(plan(source, sink), as_json)
            return
        total = sum(entry.nbytes for entry in source.entries())
        with byte_progress(total, f"{src.name} -> {out.name}", bars_wanted(as_json)) as advance:
            result = convert(source, sink, progress=advance)
    for note in getattr(sink, "notes", []):
        click.echo(f"note: {note}", err=True)
    summary = {"output": str(result.output), "outtype": outtype, "source": result.source_kind,
               "tensors": result.tensors, "bytes_read": result.bytes_read, "bytes_written": result.bytes_written}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {result.output} ({outtype}): {result.tensors} tensors, "
                   f"{result.bytes_read / 1e6:.2f} MB read, {result.bytes_written / 1e6:.2f} MB written")


def _print_plan(planned: list, as_json: bool) -> None:
    if as_json:
        emit_json({"tensors": [vars(p) | {"shape": list(p.shape)} for p in planned],
                   "total_bytes": sum(p.nbytes for p in planned)})
        return
    width = max(len(p.name) for p in planned)
    for p in planned:
        click.echo(f"{p.name:<{width}}  {p.kind:<6}  {'x'.join(map(str, p.shape)):>12}  {p.nbytes:>12}")
    click.echo(f"{len(planned)} tensors, {sum(p.nbytes for p in planned)} bytes (dry run: nothing written)")
