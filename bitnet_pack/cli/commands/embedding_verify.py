"""The `verify` command's embedding branch: A and/or B (or the trace) is a BitNet embedding model."""
from __future__ import annotations

from pathlib import Path

import click

from ...engine.runner import MAX_TOKEN_ID
from ...errors import MissingFile, UsageError, VerificationMismatch
from ...pipeline.sources.embedding import is_embedding_model


def wants_embedding(a: str, b: str | None, against: Path | None) -> bool:
    from ...proof.embedding_verify import is_embedding_trace

    return any(p is not None and is_embedding_model(Path(p)) for p in (a, b)) or (
        against is not None and is_embedding_trace(against))


def _prompt_ids(ids: str | None) -> list[list[int]] | None:
    """--ids "1,2,3" is one prompt; ";" separates prompts ("1,2;3,4,5")."""
    if ids is None:
        return None
    try:
        prompts = [[int(x) for x in part.replace(" ", "").split(",") if x] for part in ids.split(";")]
    except ValueError:
        raise UsageError(f"--ids must be comma-separated integers (';' between prompts), got {ids!r}") from None
    if not prompts or not all(prompts):
        raise UsageError("--ids has an empty prompt")
    bad = next((i for seq in prompts for i in seq if not 0 <= i < MAX_TOKEN_ID), None)
    if bad is not None:
        raise UsageError(f"--ids holds {bad}: token ids are integers in [0, {MAX_TOKEN_ID})")
    return prompts


def run(a: str, b: str | None, record_to: Path | None, against: Path | None, prompt: str | None,
        ids: str | None, atol: float, force: bool, as_json: bool, emit_json, strict: bool = False) -> None:
    from ...proof import embedding_verify as ev

    enc_a, family, tok_a = ev.open_encoder(Path(a))
    prompts_given = _prompt_ids(ids)
    texts = [prompt] if prompt is not None else None
    if against is not None:
        if prompt is not None or ids is not None:
            raise UsageError("--against replays the trace's prompts: drop --prompt and --ids")
        report = ev.verify_against(enc_a, against, a)
        return _show(_within(report, atol), as_json, emit_json, f"{a} differs from the trace {against}")
    if record_to is not None:
        prompts = ev.prompt_set(prompts_given, texts, [tok_a] if tok_a else [], enc_a.vocab)
        written, embeddings = ev.save_trace(enc_a, prompts, record_to, family=family, force=force, inputs=[Path(a)])
        summary = {"trace": str(written), "prompts": len(prompts), "embedding_size": int(embeddings.shape[1]),
                   "family": family}
        return emit_json(summary) if as_json else click.echo(
            f"recorded {len(prompts)} embeddings of size {embeddings.shape[1]} ({family}) to {written}")
    if not Path(b).exists():
        raise MissingFile("no such file or directory", path=Path(b))
    if not is_embedding_model(Path(b)):
        raise UsageError(f"{a} is a BitNet embedding model and {b} is not: nothing to compare")
    from ...api import verify

    report = verify(a, b, ids=prompts_given, prompt=prompt, strict=strict)
    _show(_within(report, atol), as_json, emit_json, f"{a} and {b} differ")


def _within(report, atol: float):
    for row in report.rows:
        row.identical = row.identical or row.max_abs_diff <= atol
    return report


def _show(report, as_json: bool, emit_json, headline: str) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.summary())
    if not report.ok:
        worst = max(report.rows, key=lambda r: r.max_abs_diff)
        raise VerificationMismatch(f"{headline}: embeddings of {sum(not r.identical for r in report.rows)} of "
                                   f"{len(report.rows)} prompts, max |diff| {worst.max_abs_diff:.4g}, cosine "
                                   f"{worst.cosine:.9f}; {report.cause}")
