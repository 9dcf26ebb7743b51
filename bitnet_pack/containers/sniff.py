"""What is this file? Catch the usual impostors before a container parser sees them."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import FormatError, LfsPointer, MissingFile

LFS_MAGIC = b"version https://git-lfs"


def reject_lfs_pointer(path: Path, head: bytes) -> None:
    """A git-lfs pointer (clone without git-lfs) is ~130 bytes of text: say so plainly."""
    if head.startswith(LFS_MAGIC):
        raise LfsPointer("this is a git-lfs pointer, not the data: fetch the real file "
                         "(git lfs pull, or download it again)", path=path)


def require_regular(path: str | os.PathLike) -> int:
    """The size of `path` if it is a regular file (after symlinks); a FIFO, device or
    directory is refused before any open (opening a FIFO blocks until a writer comes)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFile("no such file", path=path) from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a directory" if stat.S_ISDIR(info.st_mode)
                else "a device or socket")
        raise FormatError(f"is {kind}, not a regular file", path=path)
    return info.st_size
