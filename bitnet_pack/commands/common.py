"""Small helpers shared by the commands."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import BitnetPackError, UsageError, VerificationMismatch

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def parse_size(text: str | None) -> int | None:
    """'2G' -> 2_000_000_000 (decimal units, as llama.cpp's --split-max-size)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", text.upper())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"size {text!r} is not a positive number with an optional K/M/G/T suffix")
    return int(match.group(1)) * _UNITS[match.group(2)]


def resolve(src: str, revision: str | None, *, progress: bool):
    """SRC (a path or a hub repo id) as a `hub.Source`; says which commit a repo id resolved to."""
    from ..hub import resolve_source

    source = resolve_source(src, revision, progress=progress)
    if source.is_hub:
        note(f"resolved {source.repo_id} (revision {source.revision or 'main'}) to commit {source.commit}")
    return source


def model_id(source, checkpoint) -> str:
    """The name a model goes by, for default output names and GGUF general.name."""
    if source.is_hub:
        return source.model_id
    name = checkpoint.file.get("general.name") if hasattr(checkpoint, "file") else None
    return name if isinstance(name, str) and name.strip() else source.model_id


@contextmanager
def about(path: Path) -> Iterator[None]:
    """Errors about the data raised without a file name get `path` (the source), so every
    message names one; usage errors (about the command line) and mismatches (about two
    sources, named in the message) stay as they are."""
    try:
        yield
    except BitnetPackError as exc:
        if exc.path is not None or isinstance(exc, (UsageError, VerificationMismatch)):
            raise
        raise type(exc)(str(exc), path=path) from exc


def source_bytes(path: Path) -> int:
    """Bytes of a checkpoint's tensor files (a .gguf, or a directory's *.safetensors)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.safetensors"))


def revisions(sources: list[str], shared: str | None, own: list[str | None]) -> list[str | None]:
    """The revision of each of several sources: its own (--revision-a/-b), else the shared
    --revision when the source is a hub repo id (a local path takes none)."""
    is_hub = [not Path(src).exists() for src in sources]
    if shared is not None and not any(is_hub):
        raise UsageError(f"--revision applies to hub repo ids, but {', '.join(sources)} are local paths")
    return [mine if mine is not None else shared if hub else None for mine, hub in zip(own, is_hub, strict=True)]
