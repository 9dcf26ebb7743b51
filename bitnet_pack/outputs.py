"""Outputs appear whole or not at all: built under a temporary name, renamed at the end.

An exception or Ctrl-C leaves nothing; a kill (SIGKILL, power loss) can leave only a hidden
`.NAME.incomplete-PID` sibling, which the next run writing NAME removes once that process is
gone. The final name never holds a partial output, and the input is never touched.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .errors import OutputExists


def check_output(final: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write over an input (or inside one), or over an existing output without force;
    then clear what killed runs left beside `final`."""
    target = final.resolve()
    for source in inputs:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputExists(f"output {final} would overwrite the input {source}")
    if final.exists() and not force:
        raise OutputExists(f"{final} exists: pass --force to replace it")
    remove_stale_temps(final)


def remove_stale_temps(final: Path) -> list[Path]:
    """Delete `.NAME.incomplete-PID` siblings of `final` whose process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.incomplete-(\d+)")
    removed = []
    for candidate in final.parent.glob(f".{final.name}.incomplete-*"):
        match = pattern.fullmatch(candidate.name)
        if match and not _process_alive(int(match.group(1))):
            shutil.rmtree(candidate) if candidate.is_dir() else candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: the caller manages it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
