"""Small helpers shared by the commands."""
from __future__ import annotations

import json
import re

import click

from ..errors import UsageError

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_size(text: str | None) -> int | None:
    """'2G' -> 2_000_000_000 (decimal units, as llama.cpp's --split-max-size)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", text.upper())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"size {text!r} is not a positive number with an optional K/M/G/T suffix")
    return int(match.group(1)) * _UNITS[match.group(2)]
