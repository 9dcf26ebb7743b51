"""bitnet-pack roundtrip MODEL: every layout that fits, there and back, checked exactly."""
from __future__ import annotations

from pathlib import Path

import click

from ...api import roundtrip
from ...engine.runner import prompt_ids
from ...errors import VerificationMismatch
from ...formats.layouts import layout_names, variants
from ...pipeline.progress import bars, bars_wanted
from ...proof.roundtrip import RoundtripReport
from .common import PATH_OR_REPO, emit_json, examples


@click.command("roundtrip", epilog=examples(
    "bitnet-pack roundtrip ./packed",
    "bitnet-pack roundtrip ./master --layouts hf-packed,i2_s,tq2_0 --tokens 8",
    "bitnet-pack roundtrip ggml-model-i2_s.gguf --keep ./rt --json"))
@click.argument("model", type=PATH_OR_REPO)
@click.option("--layouts", default=None, metavar="LIST",
              help=f"Comma-separated layouts or outtypes to try [default: all: {','.join(layout_names())}].")
@click.option("--revision", default=None, help="Branch, tag or commit when MODEL is a hub repo id.")
@click.option("--tokens", default=4, show_default=True, type=click.IntRange(0),
              help="Greedy steps verified against MODEL per layout (0: compare weights only).")
@click.option("--ids", default=None, help="Prompt token ids for verify, e.g. 1,15,27 [default: BOS, 1..7].")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini when MODEL is a TL1/TL2 GGUF that neither carries its tiling nor has "
                   "<stem>.kernel_config.ini beside it.")
@click.option("--i2s-variant", type=click.Choice(variants()), default=None,
              help="Read an I2_S MODEL's blocks as x86 (128/32), arm (64/16) or 1x4 (four rows per byte).")
@click.option("--keep", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Keep the intermediate files in this directory (its roundtrip-* entries are replaced) "
                   "instead of a temporary one.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
def command(model: str, layouts: str | None, revision: str | None, tokens: int, ids: str | None,
            kernel_config: Path | None, i2s_variant: str | None, keep: Path | None, as_json: bool) -> None:
    """Convert MODEL into every layout that fits it and back; check codes and scales survive.

    Per layout: MODEL -> layout (codes exact; scales exact or rounded only to the layout's
    scale type), layout -> MODEL's own kind (bit-exact), and verify MODEL against the layout
    (bit-identical logits when nothing was rounded). One table; exit 0 when every layout
    passes or is skipped (its shape rule is printed), 3 naming the layout and tensor that broke.
    """
    chosen = [name for name in layouts.split(",") if name.strip()] if layouts is not None else None
    given_ids = prompt_ids(ids, None, Path()) if ids is not None else None
    report = roundtrip(model, chosen, revision=revision, tokens=tokens, ids=given_ids, keep=keep,
                       progress=bars(bars_wanted(as_json)), kernel_config=kernel_config, i2s_variant=i2s_variant)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_table(report)
    if not report.ok:
        first = report.broken[0]
        raise VerificationMismatch(f"roundtrip of {report.model} broke in layout {first.reason}")


def _print_table(report: RoundtripReport) -> None:
    click.echo(f"roundtrip of {report.model} ({report.source_kind}; back as {report.back_outtype})")
    click.echo(f"{'layout':<9} {'result':<9} {'tensors':>7}  {'betas':<16} {'floats':<14} {'back':<6} logits")
    for r in report.results:
        if r.status == "skipped":
            click.echo(f"{r.layout:<9} {'skipped':<9} {'':>7}  {r.reason}")
            continue
        betas = f"{r.betas_rounded} rounded" if r.betas_rounded else "exact"
        floats = f"{r.floats_rounded} rounded" if r.floats_rounded else "exact"
        back = {True: "exact", None: "-"}.get(r.back_exact, "broken")
        click.echo(f"{r.layout:<9} {r.status:<9} {r.tensors:>7}  {betas:<16} {floats:<14} {back:<6} {r.logits}")
        if r.rounding:
            click.echo(f"          declared rounding: {r.rounding}")
        if r.status == "mismatch":
            click.echo(f"          {r.reason}")
    passed = sum(r.status == "ok" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    click.echo(f"{passed} passed, {skipped} skipped, {len(report.broken)} broken")
