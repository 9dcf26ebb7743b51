"""Loading a checkpoint named on the command line (a path or a hub repo id) into the model."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..runner import Loaded, prompt_ids
from ..runner import loaded as loaded_path
from .common import resolve

__all__ = ["Loaded", "loaded", "prompt_ids"]

NUMERICS = ["reference", "bitnet.cpp", "bitnet.cpp-avx2"]  # model.NUMERICS, named here so the CLI starts without the kernel


@contextmanager
def loaded(src: str, numerics: str, kernel_config: Path | None = None, revision: str | None = None
           ) -> Iterator[Loaded]:
    """SRC (a path or a hub repo id) loaded; see `runner.loaded`."""
    path = resolve(str(src), revision, progress=False).path
    with loaded_path(path, numerics, kernel_config=kernel_config) as pair:
        yield pair
