"""Progress in bytes on stderr: tqdm when a person is watching, nothing otherwise."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def bars_wanted(json_output: bool) -> bool:
    """Off for --json, when stderr is not a terminal, or with HF_HUB_DISABLE_PROGRESS_BARS."""
    disabled = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").lower() in ("1", "true", "yes", "on")
    return not json_output and not disabled and sys.stderr.isatty()


@contextmanager
def byte_progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, leave=False) as bar:
        yield bar.update


@contextmanager
def count_progress(total: int, description: str, unit: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Like `byte_progress`, counting `unit`s (decode passes, tokens) instead of bytes."""
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False) as bar:
        yield bar.update
