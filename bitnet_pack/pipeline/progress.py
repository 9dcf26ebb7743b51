"""Progress in bytes on stderr: tqdm when a person is watching, nothing otherwise.

Library functions take `progress`, a `ProgressFactory`: called with the total bytes and a
description, it gives a context manager yielding the callable that advances by n bytes.
`bars(enabled)` is the CLI's; `None` means no progress. Units are decimal (MB, GB), the same
as every size the CLI prints and `--max-shard-size` parses.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

Advance = Callable[[int], None]
ProgressFactory = Callable[[int, str], AbstractContextManager[Advance]]

_quiet = False


def set_quiet(quiet: bool) -> None:
    """`-q`: no bars and no notes, only results and errors."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def bars_wanted(json_output: bool) -> bool:
    """Off for --json and -q, when stderr is not a terminal, or with HF_HUB_DISABLE_PROGRESS_BARS."""
    disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes", "on")
    return not json_output and not _quiet and not disabled and sys.stderr.isatty()


@contextmanager
def byte_progress(total: int, description: str, enabled: bool) -> Iterator[Advance]:
    """A tqdm bar on stderr counting decimal bytes (MB), or a no-op when not `enabled`."""
    with _bar(total, description, enabled, unit="B", unit_scale=True, unit_divisor=1000) as advance:
        yield advance


def bars(enabled: bool) -> ProgressFactory | None:
    """The CLI's progress factory: tqdm bars when `enabled`, else None."""
    if not enabled:
        return None
    return lambda total, description: byte_progress(total, description, True)


@contextmanager
def started(progress: ProgressFactory | None, total: int, description: str) -> Iterator[Advance]:
    """`progress(total, description)`, or a no-op when progress is None."""
    if progress is None:
        yield lambda _n: None
        return
    with progress(total, description) as advance:
        yield advance


@contextmanager
def count_progress(total: int, description: str, unit: str, enabled: bool) -> Iterator[Advance]:
    """Like `byte_progress`, counting `unit`s (decode passes, tokens) instead of bytes."""
    with _bar(total, description, enabled, unit=unit) as advance:
        yield advance


@contextmanager
def _bar(total: int, description: str, enabled: bool, **tqdm_options: object) -> Iterator[Advance]:
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, file=sys.stderr, leave=False, **tqdm_options) as bar:
        yield bar.update
