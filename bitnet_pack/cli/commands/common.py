"""Small helpers shared by the commands: output on stdout, notes on stderr, hub sources."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ...engine.runner import about
from ...errors import UsageError
from ...pipeline.options import parse_size
from ...pipeline.progress import is_quiet
from ...proof.inspection import source_bytes

# SRC/OUT: a path (completed as one by the shell) or a hub repo id; the value stays the text given
PATH_OR_REPO = click.Path(dir_okay=True, file_okay=True)

__all__ = ["PATH_OR_REPO", "about", "emit_json", "examples", "note", "parse_size", "resolve", "source_bytes"]


def emit_json(data: object) -> None:
    """Strict JSON (RFC 8259): a NaN or Inf value (a crafted file's metadata) becomes the
    string "NaN", "Infinity" or "-Infinity", never the bare tokens json parsers refuse."""
    click.echo(json.dumps(_strict(data), indent=2, default=str, allow_nan=False))


def _strict(value: object) -> object:
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


def note(message: str) -> None:
    """A note on stderr (what was decided or rounded); `-q` silences them."""
    if not is_quiet():
        click.echo(f"note: {message}", err=True)


def examples(*lines: str) -> str:
    """A --help epilog listing examples, one per line (\\b keeps click from rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def resolve(src: str, revision: str | None, *, progress: bool):
    """SRC (a path or a hub repo id) as a `hub.Source`; says which commit a repo id resolved to."""
    from ...pipeline.hub import resolve_source

    source = resolve_source(src, revision, progress=progress)
    if source.is_hub:
        note(source.resolution())
    return source


def revisions(sources: list[str], shared: str | None, own: list[str | None]) -> list[str | None]:
    """The revision of each of several sources: its own (--revision-a/-b), else the shared
    --revision when the source is a hub repo id (a local path takes none)."""
    is_hub = [not Path(src).exists() for src in sources]
    if shared is not None and not any(is_hub):
        raise UsageError(f"--revision applies to hub repo ids, but {', '.join(sources)} are local paths")
    return [mine if mine is not None else shared if hub else None for mine, hub in zip(own, is_hub, strict=True)]
