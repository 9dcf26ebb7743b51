"""bitnet-pack roundtrip MODEL: every layout that fits, there and back, checked exactly."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import VerificationMismatch
from ..layouts import layout_names
from ..progress import bars_wanted, byte_progress
from ..roundtrip import RoundtripReport, roundtrip
from .common import about, emit_json, resolve, source_bytes
from .model_io import prompt_ids


@click.command("roundtrip")
@click.argument("model")
@click.option("--layouts", default=None, metavar="LIST",
              help=f"Comma-separated layouts to try [default: all: {','.join(layout_names())}].")
@click.option("--revision", default=None, help="Branch, tag or commit when MODEL is a hub repo id.")
@click.option("--tokens", default=4, show_default=True, type=click.IntRange(0),
              help="Greedy steps verified against MODEL per layout (0: compare weights only).")
@click.option("--ids", default=None, help="Prompt token ids for verify, e.g. 1,15,27 [default: BOS, 1..7].")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini when MODEL is a TL1/TL2 GGUF that does not carry its tiling.")
@click.option("--i2s-variant", type=click.Choice(["x86", "arm"]), default=None,
              help="Read an I2_S MODEL's blocks as x86 (128/32) or ARM (64/16).")
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
    chosen = _layouts(layouts)
    bars = bars_wanted(as_json)
    source = resolve(model, revision, progress=bars)
    options = {"kernel_config": kernel_config, "i2s_variant": i2s_variant}  # used by GGUF sources
    given_ids = prompt_ids(ids, None, Path()) if ids is not None else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with about(source.path), byte_progress(source_bytes(source.path) * len(chosen), "roundtrip", bars) as advance:
        report = roundtrip(source.path, chosen, workdir=keep, prompt_ids=given_ids, n_tokens=tokens,
                           read_options=options, progress=advance)
    if as_json:
        emit_json({"model": source.label} | report.to_dict())
    else:
        _print_table(report)
    if not report.ok:
        first = report.broken[0]
        raise VerificationMismatch(f"roundtrip of {source.label} broke in layout {first.reason}")


def _layouts(text: str | None) -> list[str]:
    if text is None:
        return layout_names()
    from ..layouts import get_layout

    return [get_layout(name).name for name in text.split(",") if name.strip()]



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
        if r.status == "mismatch":
            click.echo(f"          {r.reason}")
    passed = sum(r.status == "ok" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    click.echo(f"{passed} passed, {skipped} skipped, {len(report.broken)} broken")
