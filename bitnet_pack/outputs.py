"""Outputs appear whole or not at all: built under a temporary name, renamed at the end.

An interrupted run (an exception, Ctrl-C, a kill) leaves at most a `.NAME.incomplete-PID`
sibling that the next run of the same output removes; the input is never touched.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import OutputExists


def check_output(final: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write over an input (or inside one), or over an existing output without force."""
    target = final.resolve()
    for source in inputs:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputExists(f"output {final} would overwrite the input {source}")
    if final.exists() and not force:
        raise OutputExists(f"{final} exists: pass --force to replace it")


class StagedDir:
    """A directory built at `.<name>.incomplete-<pid>` beside `final`, swapped in by commit()."""

    def __init__(self, final: Path, *, force: bool = False, inputs: list[Path] | None = None):
        self.final = Path(final)
        check_output(self.final, inputs or [], force)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = self.final.with_name(f".{self.final.name}.incomplete-{os.getpid()}")
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir()

    def commit(self) -> Path:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.replaced-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.temp, self.final)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
