"""Loading a checkpoint named on the command line (a path or a hub repo id) into the model."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...engine.runner import Loaded, prompt_ids
from .common import resolve

__all__ = ["Loaded", "loaded", "prompt_ids"]

NUMERICS = ["reference", "bitnet.cpp", "bitnet.cpp-avx2", "ik_llama.cpp"]  # model.NUMERICS, named here so the CLI starts without the kernel


@contextmanager
def loaded(src: str, numerics: str, kernel_config: Path | None = None, revision: str | None = None
           ) -> Iterator[Loaded]:
    """SRC (a path or a hub repo id) loaded through the library (`api.load`), so that a read
    option the checkpoint has no use for is refused, as `convert` refuses it."""
    from ...api import load

    path = resolve(str(src), revision, progress=False).path  # the CLI's note on a hub revision
    with load(path, numerics=numerics, kernel_config=kernel_config) as side:
        yield side
