"""bitnet-pack verify A B: greedy decode of both checkpoints, logits compared at every step;
verify A --record TRACE / --against TRACE: the same with a golden trace file as one side."""
from __future__ import annotations

import math
from pathlib import Path

import click

from ...errors import UsageError, VerificationMismatch
from ...pipeline.progress import bars_wanted, count_progress
from .common import PATH_OR_REPO, emit_json, examples, resolve, revisions
from .model_io import NUMERICS, Loaded, loaded, prompt_ids

DEFAULT_PROMPT = "BitNet b1.58 stores every weight as"
DEFAULT_TOKENS = 16


def _finite(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number (NaN would let every difference pass)")
    return value


@click.command("verify", epilog=examples(
    "bitnet-pack verify ./packed out.gguf --prompt 'Hello' --tokens 16",
    "bitnet-pack verify ./master out.gguf --ids 1,15,27 --json",
    "bitnet-pack verify out.gguf ggml-model-i2_s.gguf --numerics bitnet.cpp --atol 1e-3"))
@click.argument("a", type=PATH_OR_REPO)
@click.argument("b", type=PATH_OR_REPO, required=False)
@click.option("--record", "record_to", type=click.Path(path_type=Path, dir_okay=False), default=None,
              metavar="TRACE", help="Decode A alone and write the prompt, greedy ids and every logits row "
                                    "to TRACE (.npz), for later --against.")
@click.option("--against", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="TRACE",
              help="Decode A with TRACE's prompt and ids and compare every logits row with TRACE's.")
@click.option("--prompt", default=None, help=f"Prompt text, encoded with A's tokenizer [default: {DEFAULT_PROMPT!r}].")
@click.option("--ids", default=None, help="Prompt as token ids, e.g. 1,15,27 (instead of --prompt).")
@click.option("--tokens", default=None, type=click.IntRange(1), help=f"Greedy steps [default: {DEFAULT_TOKENS}].")
@click.option("--atol", default=0.0, show_default=True, type=click.FloatRange(0), callback=_finite,
              help="Allowed |diff| of logits (finite).")
@click.option("--numerics", type=click.Choice(NUMERICS), default=None,
              help="Float arithmetic of the runs: fp32 reference, or bitnet.cpp's f16 KV cache "
                   "[default: reference; with --against, the trace's].")
@click.option("--revision", default=None, help="Branch, tag or commit of every hub repo id among A and B.")
@click.option("--revision-a", default=None, help="Branch, tag or commit of A (overrides --revision).")
@click.option("--revision-b", default=None, help="Branch, tag or commit of B (overrides --revision).")
@click.option("--kernel-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="kernel_config.ini for TL1/TL2 GGUFs that do not carry their tiling.")
@click.option("--strict", is_flag=True, help="Demand identity without rounding: by default, where B's layout "
              "must round what A holds (an fp16 or bf16 beta or row scale, an F16 or quantized "
              "embedding, an embedding model's F16 norms), A is compared after exactly that rounding (and B after "
              "A's), and the report names it and the layout.")
@click.option("--force", is_flag=True, help="Replace an existing --record TRACE.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
def command(a: str, b: str | None, record_to: Path | None, against: Path | None, prompt: str | None,
            ids: str | None, tokens: int | None, atol: float, numerics: str | None, revision: str | None,
            revision_a: str | None, revision_b: str | None, kernel_config: Path | None, strict: bool, force: bool,
            as_json: bool) -> None:
    """Run A and B (paths or hub repo ids) greedily and show bit-identical logits, or where and
    by how much they differ. With --record, write A's decode to a trace file; with --against,
    compare A with a trace (A of the report is then the trace, B the model).

    Exit 0 when every compared logit is identical (or within --atol), 3 otherwise (also when
    the vocabularies differ), 1 for an unreadable model or trace file.
    """
    if sum(x is not None for x in (b, record_to, against)) != 1:
        raise UsageError("give exactly one of B (a second model), --record TRACE or --against TRACE")
    from .embedding_verify import run as embedding_verify
    from .embedding_verify import wants_embedding

    if wants_embedding(a, b, against):  # BitNet embedding models: pooled embeddings, not a decode
        if tokens is not None or numerics is not None or kernel_config is not None:
            raise UsageError("--tokens, --numerics and --kernel-config do not apply to embedding models")
        embedding_verify(a, b, record_to, against, prompt, ids, atol, force, as_json, emit_json, strict)
        return
    options = {"kernel_config": kernel_config}
    steps = tokens or DEFAULT_TOKENS
    text = prompt if prompt is not None or ids else DEFAULT_PROMPT
    bars = bars_wanted(as_json)
    if against is not None:
        if prompt is not None or ids is not None or tokens is not None:
            raise UsageError("--against replays the trace's prompt and ids: drop --prompt, --ids and --tokens")
        _against(a, against, numerics, atol, revision_a or revision, options, as_json, bars)
    elif record_to is not None:
        _record(a, record_to, (ids, text), steps, numerics, revision_a or revision, options, force, as_json, bars)
    else:
        _two_models(a, b, (ids, text), steps, numerics or "reference", atol,
                    revisions([a, b], revision, [revision_a, revision_b]), options, as_json, bars, strict)


def _two_models(a: str, b: str, prompt: tuple, steps: int, numerics: str, atol: float, revisions: tuple,
                options: dict, as_json: bool, bars: bool, strict: bool = False) -> None:
    from ...api import verify

    ids, text = prompt
    path_a, path_b = (resolve(str(src), rev, progress=False).path for src, rev in zip((a, b), revisions, strict=True))
    report = verify(path_a, path_b, prompt=text, ids=ids, tokens=steps, atol=atol, numerics=numerics,
                    strict=strict,
                    progress=lambda total, what: count_progress(total, what, "pass", bars), **options)
    _show(report, as_json, f"{a} and {b} differ")


def _record(a: str, trace_path: Path, prompt: tuple, steps: int, numerics: str | None, revision: str | None,
            options: dict, force: bool, as_json: bool, bars: bool) -> None:
    from ...containers.outputs import check_output
    from ...proof.trace import record, save_trace

    check_output(trace_path, [], force)  # before the decode, not after it
    with loaded(a, numerics or "reference", revision=revision, **options) as side:
        prompt_tokens = _prompt(prompt, side, steps)
        with count_progress(steps + 1, "record", "pass", bars) as tick:
            trace = record(side.model, prompt_tokens, steps, progress=tick)
        written = save_trace(trace, trace_path, force=force, inputs=[side.path])
    summary = {"trace": str(written), "prompt_ids": trace.prompt.tolist(), "ids": trace.ids.tolist(),
               "rows": int(trace.logits.shape[0]), "vocab_size": trace.vocab_size, "numerics": trace.numerics,
               "version": trace.version}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"recorded {summary['rows']} logits rows ({len(trace.prompt)}-token prompt, {len(trace.ids)} "
                   f"steps, vocab {trace.vocab_size}, numerics {trace.numerics}) to {written}")


def _against(a: str, trace_path: Path, numerics: str | None, atol: float, revision: str | None, options: dict,
             as_json: bool, bars: bool) -> None:
    from ...engine.generate import check_context
    from ...proof.trace import load_trace, verify_trace

    trace = load_trace(trace_path)  # a bad trace fails before the model is loaded
    with loaded(a, numerics or trace.numerics or "reference", revision=revision, **options) as side:
        check_context(len(trace.prompt), len(trace.ids), side.context)
        with count_progress(len(trace.ids) + 1, "verify", "pass", bars) as tick:
            report = verify_trace(side.model, trace, atol=atol, progress=tick)
    _show(report, as_json, f"{a} differs from the trace {trace_path}")


def _prompt(prompt: tuple, side: Loaded, steps: int, other: Loaded | None = None) -> list[int]:
    """The prompt's ids (A's tokenizer), checked to fit both models' context with the steps."""
    from ...engine.generate import check_context

    tokens = prompt_ids(*prompt, side.tokenizer_json)
    contexts = [s.context for s in (side, other) if s is not None and s.context is not None]
    check_context(len(tokens), steps, min(contexts, default=None))
    return tokens


def _show(report, as_json: bool, headline: str) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.summary())
    if not report.ok:  # the cause was printed above (or is in the JSON): the error says where, once
        first = report.first_divergence or report.first_token_mismatch
        if first is None:
            raise VerificationMismatch(f"{headline}: logits identical, but --strict and the weights differ")
        step = "prompt" if first.step is None else f"step {first.step}"
        raise VerificationMismatch(f"{headline} at {step}, position {first.position}: max |diff| "
                                   f"{first.max_abs_diff:.4g}" + ("" if as_json else " (cause above)"))
