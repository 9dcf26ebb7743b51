"""Outputs appear whole or not at all: built under a temporary name, renamed at the end.

An exception, Ctrl-C or SIGTERM leaves nothing; a kill (SIGKILL, power loss) can leave only a
hidden `.NAME.incomplete-PID` sibling, which the next run writing NAME (or a --dry-run of it)
removes once that process is gone. The final name never holds a partial output, and the
input is never touched.

Two writers, one output: `publish` renames without replacing (renameat2 RENAME_NOREPLACE,
else link-then-unlink for a file), so an output that appeared while we wrote is never
replaced unless --force was given: the second writer fails with OutputExists. With --force a
directory output is updated as `save_pretrained` does: the files of the new checkpoint
replace theirs and old weight shards go, anything else there (a user's notes.txt) stays.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import interrupts
from ..errors import OutputExists

RENAME_NOREPLACE = 1
AT_FDCWD = -100
# What a transformers checkpoint directory's weights consist of: these go when --force
# replaces a checkpoint with one sharded differently; every other file is left alone.
STALE_WEIGHTS = re.compile(r"model(-\d+-of-\d+)?\.safetensors(\.index\.json)?")


def check_output(final: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write over an input (or inside one), or over an existing output without force;
    then clear what killed runs left beside `final`."""
    target = final.resolve()
    for source in inputs:
        source = source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OutputExists(f"output {final} would overwrite the input {source}")
    if os.path.lexists(final) and not force:  # a dangling symlink is something there too
        raise OutputExists(f"{final} exists: pass --force to replace it")
    if final.is_dir() and not final.is_symlink() and force and final.suffix == ".gguf":
        raise OutputExists(f"{final} is a directory; a GGUF output is a file")
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


@contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory that an interrupt removes too (the signal policy ends the
    process without running tempfile's cleanup)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        interrupts.track(Path(name))
        try:
            yield Path(name)
        finally:
            interrupts.untrack(Path(name))


def temp_name(final: Path) -> Path:
    """Where `final` is built: a hidden sibling named after it and this process."""
    return final.with_name(f".{final.name}.incomplete-{os.getpid()}")


def publish(temp: Path, final: Path, *, force: bool) -> Path:
    """Rename the finished `temp` to `final`; without `force` never over something that
    appeared meanwhile (OutputExists). A signal waits until this is done."""
    with interrupts.deferred():
        if temp.is_dir():
            _publish_dir(temp, final, force)
        elif force:
            os.replace(temp, final)
        else:
            _rename_exclusive(temp, final)
        interrupts.untrack(temp)
        interrupts.published(final)
    return final


def _exists_error(final: Path) -> OutputExists:
    return OutputExists(f"{final} appeared while this run was writing it (another writer?); "
                        "nothing was replaced: pass --force to replace it")


def _rename_exclusive(temp: Path, final: Path) -> None:
    if _renameat2_noreplace(temp, final):
        return
    if temp.is_dir():  # no renameat2: a rename onto a non-empty directory fails; check first
        if os.path.lexists(final):
            raise _exists_error(final)
        os.rename(temp, final)
        return
    try:
        os.link(temp, final)  # fails if final exists, atomically
    except FileExistsError:
        raise _exists_error(final) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.lexists(final):
            raise _exists_error(final) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def _renameat2_noreplace(temp: Path, final: Path) -> bool:
    """True when renamed; False where renameat2 is missing (old libc/kernel, other OS) or
    the filesystem does not take the flag; OutputExists when `final` exists."""
    rename = _libc_renameat2()
    if rename is None:
        return False
    if rename(AT_FDCWD, os.fsencode(temp), AT_FDCWD, os.fsencode(final), RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise _exists_error(final)
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(final))


_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            _renameat2 = libc.renameat2
            _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _renameat2 = False
    return _renameat2 or None


def _publish_dir(temp: Path, final: Path, force: bool) -> None:
    if not force or not os.path.lexists(final):
        try:
            _rename_exclusive(temp, final)
            return
        except OutputExists:
            if not force:
                raise
    if not final.is_dir() or final.is_symlink():
        final.unlink()
        os.rename(temp, final)
        return
    _replace_checkpoint_files(temp, final)


def _replace_checkpoint_files(temp: Path, final: Path) -> None:
    """Move every file of `temp` into `final`, first deleting `final`'s weight files that the
    new checkpoint does not have (a different sharding); other files stay."""
    new = {p.name for p in temp.iterdir()}
    for old in final.iterdir():
        if old.name not in new and STALE_WEIGHTS.fullmatch(old.name) and old.is_file():
            old.unlink()
    for item in sorted(temp.iterdir(), key=lambda p: p.name == "config.json"):  # config last
        target = final / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    temp.rmdir()


class StagedDir:
    """A directory built at `.<name>.incomplete-<pid>` beside `final`, published by commit()."""

    def __init__(self, final: Path, *, force: bool = False, inputs: list[Path] | None = None):
        self.final = Path(final)
        self.force = force
        check_output(self.final, inputs or [], force)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = temp_name(self.final)
        interrupts.track(self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp.mkdir()

    def commit(self) -> Path:
        return publish(self.temp, self.final, force=self.force)

    def abort(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        interrupts.untrack(self.temp)
