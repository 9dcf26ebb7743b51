"""The `bitnet-pack` console script: the interruption policy first, then the command line.

Kept apart from `cli` so that nothing (click, numpy, the kernel) is imported before
SIGINT/SIGTERM are handled: an interrupt during start-up ends the run like any other, with
one line and exit 130/143 (see `interrupts`).
"""
from __future__ import annotations


def main() -> None:
    from . import interrupts

    interrupts.install()
    from .cli import main as command_line

    command_line(prog_name="bitnet-pack")
