"""bitnet-pack diff A B: which tensors differ in ternary space, by how many codes, by what beta,
and which model hyper-parameters (rope theta, eps, head counts, vocab, ...) differ."""
from __future__ import annotations

from pathlib import Path

import click

from ... import api
from ...errors import VerificationMismatch
from ...pipeline.progress import bars_wanted, byte_progress
from ...proof.diff import TensorDiff, WeightDiff
from .common import PATH_OR_REPO, emit_json, examples, resolve, revisions


@click.command("diff", epilog=examples(
    "bitnet-pack diff ./packed out.gguf",
    "bitnet-pack diff org/name ./packed --revision-a v1 --json"))
@click.argument("a", type=PATH_OR_REPO)
@click.argument("b", type=PATH_OR_REPO)
@click.option("--revision", default=None, help="Branch, tag or commit of every hub repo id among A and B.")
@click.option("--revision-a", default=None, help="Branch, tag or commit of A (overrides --revision).")
@click.option("--revision-b", default=None, help="Branch, tag or commit of B (overrides --revision).")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini for TL1/TL2 GGUFs that do not carry their tiling.")
@click.option("--strict", is_flag=True, help="Demand identity without rounding: by default a difference that "
              "one side's declared rounding of the other's value explains (an fp16 or bf16 beta, an F16 "
              "or quantized embedding, an embedding model's F16 norms) counts as equal, and is named.")
@click.option("--stop-early", is_flag=True, help="Stop at the first tensor that differs (exit 3 sooner; the "
              "report then covers the tensors compared so far).")
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON on stdout.")
def command(a: str, b: str, revision: str | None, revision_a: str | None, revision_b: str | None,
            kernel_config: Path | None, strict: bool, stop_early: bool, as_json: bool) -> None:
    """Compare checkpoints A and B tensor by tensor, in ternary space.

    Any two of: a bf16 master, a packed directory, a GGUF in any layout, a hub repo id.
    Projections compare as codes and beta (masters are ternarized first), other tensors
    as float32 values; the model config (rope theta, eps, head counts, vocab, context, ...)
    as values. Exit 0 when identical, 3 when anything differs.
    """
    bars = bars_wanted(as_json)
    rev_a, rev_b = revisions([a, b], revision, [revision_a, revision_b])
    source_a, source_b = resolve(a, rev_a, progress=bars), resolve(b, rev_b, progress=bars)
    report = api.diff(source_a.path, source_b.path, kernel_config=kernel_config, strict=strict,
                      stop_early=stop_early, progress=lambda total, what: byte_progress(total, what, bars))
    if as_json:
        emit_json({"a": source_a.label, "b": source_b.label} | report.to_dict())
    else:
        _print_table(report)
    if not report.identical:
        raise VerificationMismatch(f"{source_a.label} and {source_b.label} differ: {_headline(report)}")


def _print_table(report: WeightDiff) -> None:
    rows = [t for t in report.tensors if not t.identical]
    if report.identical:
        after = f" after rounding {report.rounded}" if report.rounded else ""
        click.echo(f"identical{after}: {len(report.tensors)} tensors equal (codes, beta bits, float bits), same config")
        return
    for change in report.config:
        click.echo(f"config {change.key}: A {change.a!r} -> B {change.b!r}")
    if not rows and not (report.only_in_a or report.only_in_b):
        click.echo(f"{len(report.tensors)} tensors equal (codes, beta bits, float bits)")
        return
    width = max([len(t.name) for t in rows] + [len(n) for n in report.only_in_a + report.only_in_b] + [6])
    click.echo(f"{'tensor':<{width}}  {'kind':<8}  {'differing':>21}  scale A -> B")
    for t in rows:
        click.echo(f"{t.name:<{width}}  {t.kind:<8}  {_differing(t):>21}  {_scale(t)}")
    for name in report.only_in_a:
        click.echo(f"{name:<{width}}  only in A")
    for name in report.only_in_b:
        click.echo(f"{name:<{width}}  only in B")
    click.echo(f"{len(rows)} of {len(report.tensors)} shared tensors differ; "
               f"{len(report.only_in_a)} only in A, {len(report.only_in_b)} only in B")
    if report.rounded:
        click.echo(f"declared roundings applied: {report.rounded}")


def _differing(t: TensorDiff) -> str:
    if t.kind == "mismatch":
        return "shape or kind"
    unit = "codes" if t.kind == "ternary" else "values"
    return f"{t.differing} of {t.size} {unit}"


def _scale(t: TensorDiff) -> str:
    if t.kind != "ternary":
        return f"max |diff| {t.max_abs_diff:.4g}" if t.differing else ""
    if t.betas_equal:
        return f"{t.beta_a:.8g} (same bits)"
    return f"{t.beta_a:.8g} -> {t.beta_b:.8g} (rel {t.beta_rel_diff:.2e})"


def _headline(report: WeightDiff) -> str:
    parts = [f"config differs in {', '.join(c.key for c in report.config)}"] if report.config else []
    if report.code_diffs:
        worst = max(report.code_diffs, key=lambda t: t.differing)
        parts.append(f"codes differ in {len(report.code_diffs)} tensors (most: {worst.name}, "
                     f"{worst.differing} of {worst.size})")
    if report.beta_diffs:
        parts.append(f"beta differs in {len(report.beta_diffs)}")
    if report.float_diffs:
        parts.append(f"float values differ in {len(report.float_diffs)}")
    if report.mismatched:
        parts.append(f"shape or kind differs in {len(report.mismatched)}")
    if report.only_in_a or report.only_in_b:
        parts.append(f"{len(report.only_in_a)} tensors only in A, {len(report.only_in_b)} only in B")
    return "; ".join(parts)
