"""Small helpers shared by the commands: output on stdout, notes on stderr, hub sources."""
from __future__ import annotations

import json

import click

from ..inspection import source_bytes
from ..options import parse_size
from ..progress import is_quiet
from ..runner import about

__all__ = ["about", "emit_json", "examples", "note", "parse_size", "resolve", "source_bytes"]


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def note(message: str) -> None:
    """A note on stderr (what was decided or rounded); `-q` silences them."""
    if not is_quiet():
        click.echo(f"note: {message}", err=True)


def examples(*lines: str) -> str:
    """A --help epilog listing examples, one per line (\\b keeps click from rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def resolve(src: str, revision: str | None, *, progress: bool):
    """SRC (a path or a hub repo id) as a `hub.Source`; says which commit a repo id resolved to."""
    from ..hub import resolve_source

    source = resolve_source(src, revision, progress=progress)
    if source.is_hub:
        note(source.resolution())
    return source
