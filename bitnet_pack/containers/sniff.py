"""What is this file? Catch the usual impostors before a container parser sees them."""
from __future__ import annotations

from pathlib import Path

from ..errors import LfsPointer

LFS_MAGIC = b"version https://git-lfs"


def reject_lfs_pointer(path: Path, head: bytes) -> None:
    """A git-lfs pointer (clone without git-lfs) is ~130 bytes of text: say so plainly."""
    if head.startswith(LFS_MAGIC):
        raise LfsPointer("this is a git-lfs pointer, not the data: fetch the real file "
                         "(git lfs pull, or download it again)", path=path)
