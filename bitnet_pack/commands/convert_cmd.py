"""bitnet-pack convert SRC [OUT] --outtype ..."""
from __future__ import annotations

from pathlib import Path

import click

from ..checkpoints import open_checkpoint
from ..convert import convert, plan
from ..naming import count_params, resolve_output
from ..outputs import remove_stale_temps
from ..progress import bars_wanted, byte_progress
from ..sinks.factory import make_sink, outtypes
from ..validate import validate
from .common import about, emit_json, model_id, note, parse_size, resolve


@click.command("convert")
@click.argument("src")
@click.argument("out", required=False)
@click.option("--outtype", required=True, type=click.Choice(outtypes(), case_sensitive=False),
              help="Layout of the projections in OUT.")
@click.option("--revision", default=None, help="Branch, tag or commit of a hub SRC (default: main).")
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
@click.option("--push-to-hub", "push_repo", default=None, metavar="REPO",
              help="Upload OUT to this hub repo (created if needed; uses HF_TOKEN) once it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(src: str, out: str | None, outtype: str, revision: str | None, target: str | None, arch: str | None,
            type_ids: str, embedding_type: str, kernel_config: Path | None, i2s_variant: str | None,
            name: str | None, force: bool, dry_run: bool, max_shard_size: str | None, push_repo: str | None,
            as_json: bool) -> None:
    """Convert SRC into OUT with --outtype.

    SRC is a checkpoint directory, a .gguf or .safetensors file, or a hub repo id
    (org/name, or org/name/file.gguf) fetched through huggingface_hub.

    OUT's container follows its name: a directory gets a transformers safetensors
    checkpoint, a *.gguf path a GGUF file. OUT may hold {outtype}; left out, it is
    named after the model in the current directory, GGUF style
    (e.g. Bitnet-B1.58-2B-4T-I2_S.gguf; hf-packed and bf16 give a directory).
    """
    outtype = outtype.lower()
    if push_repo is not None:
        from ..hub import check_push

        check_push(push_repo)
    source = resolve(src, revision, progress=bars_wanted(as_json))
    read_options = {"i2s_variant": i2s_variant, "kernel_config": kernel_config}  # used by GGUF sources
    with about(source.path), open_checkpoint(source.path, **read_options) as checkpoint:
        entries = checkpoint.entries()
        validate(checkpoint, entries)  # the verdict comes first, before any note
        the_model = model_id(source, checkpoint)
        target_path = resolve_output(out, outtype, the_model, count_params([e.shape for e in entries]))
        sink = make_sink(target_path, outtype, force=force, inputs=[source.path],
                         max_shard_size=parse_size(max_shard_size), target=target, arch=arch, type_ids=type_ids,
                         embedding_type=embedding_type, kernel_config=kernel_config,
                         name=name or _hub_name(source, target_path), extra_metadata=source.metadata())
        if dry_run:  # writes nothing, but clears what killed runs left, as a real run would
            for message in checkpoint.notes:
                note(message)
            for stale in remove_stale_temps(target_path):
                note(f"removed {stale.name}, left by a run that was killed")
            _print_plan(plan(checkpoint, sink), target_path, push_repo, as_json)
            for message in getattr(sink, "notes", []):  # what the sink decided: arch, warnings
                note(message)
            return
        total = sum(entry.nbytes for entry in entries)
        with byte_progress(total, f"{source.path.name} -> {target_path.name}", bars_wanted(as_json)) as advance:
            result = convert(checkpoint, sink, progress=advance)
    for message in [*result.notes, *getattr(sink, "notes", [])]:  # after success: a failure is one line
        note(message)
    summary = {"output": str(result.output), "outtype": outtype, "source": result.source_kind,
               "source_ref": source.label if source.is_hub else None,
               "tensors": result.tensors, "bytes_read": result.bytes_read, "bytes_written": result.bytes_written}
    if not as_json:
        click.echo(f"wrote {result.output} ({outtype}): {result.tensors} tensors, "
                   f"{result.bytes_read / 1e6:.2f} MB read, {result.bytes_written / 1e6:.2f} MB written")
    if push_repo is not None:
        from ..hub import push_to_hub

        origin = source.label if source.is_hub else source.model_id
        summary["pushed"] = push_to_hub(result.output, push_repo, message=f"bitnet-pack: {outtype} from {origin}")
        if not as_json:
            click.echo(f"pushed to {summary['pushed']}")
    if as_json:
        emit_json(summary)


def _hub_name(source, output: Path) -> str | None:
    """A GGUF from a hub snapshot is named after the repo, not the snapshot's commit folder."""
    return source.model_id if source.is_hub and output.suffix == ".gguf" else None


def _print_plan(planned: list, output: Path, push_repo: str | None, as_json: bool) -> None:
    total = sum(p.nbytes for p in planned)
    if as_json:
        emit_json({"output": str(output), "exists": output.exists(), "push_to_hub": push_repo,
                   "tensors": [vars(p) | {"shape": list(p.shape)} for p in planned], "total_bytes": total})
        return
    width = max(len(p.name) for p in planned)
    for p in planned:
        click.echo(f"{p.name:<{width}}  {p.kind:<6}  {'x'.join(map(str, p.shape)):>12}  {p.nbytes:>12}")
    click.echo(f"{len(planned)} tensors, {total} bytes of tensor data -> {output}"
               f"{' (exists: a real run needs --force)' if output.exists() else ''}"
               f"{f', then pushed to {push_repo}' if push_repo else ''} (dry run: nothing written)")
