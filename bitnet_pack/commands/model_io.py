"""Loading a checkpoint into the model, and its tokenizer files, for verify and generate."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import open_checkpoint, read_weights
from ..errors import MissingFile, UsageError
from .common import about, resolve

NUMERICS = ["reference", "bitnet.cpp"]  # model.NUMERICS, named here so the CLI starts without the kernel


@dataclass(frozen=True)
class Loaded:
    """A checkpoint loaded for decoding: the model, its tokenizer.json, its config."""

    model: object  # BitNetModel (not imported here: the CLI starts without the kernel)
    tokenizer_json: Path
    config: dict
    path: Path

    def __iter__(self) -> Iterator[object]:
        """`model, tokenizer_json = loaded`, as the (model, tokenizer) pair it used to be."""
        return iter((self.model, self.tokenizer_json))

    @property
    def context(self) -> int | None:
        """max_position_embeddings, the bound of prompt + new tokens."""
        from ..generate import context_length

        return context_length(self.config)


@contextmanager
def loaded(src: str, numerics: str, kernel_config: Path | None = None, revision: str | None = None
           ) -> Iterator[Loaded]:
    """SRC (a path or a hub repo id) loaded, with the tokenizer files as the checkpoint has
    them, or as rebuilt from GGUF metadata into a temporary directory."""
    from ..model import BitNetModel  # imported on use: the CLI starts without loading the kernel

    path = resolve(str(src), revision, progress=False).path
    with about(path), open_checkpoint(path, kernel_config=kernel_config) as source:
        model = BitNetModel(source.config, read_weights(source), numerics=numerics)
        with tempfile.TemporaryDirectory(prefix="bitnet-pack-tok-") as scratch:
            for name, data in source.aux_files.items():
                (Path(scratch) / name).write_bytes(data)
            yield Loaded(model, Path(scratch) / "tokenizer.json", source.config, path)


def prompt_ids(ids: str | None, prompt: str | None, tokenizer_json: Path) -> list[int]:
    """--ids 1,2,3 as given, or --prompt encoded with the checkpoint's tokenizer."""
    if ids is not None:
        try:
            parsed = [int(x) for x in ids.replace(" ", "").split(",") if x]
        except ValueError:
            raise UsageError(f"--ids must be comma-separated integers, got {ids!r}") from None
        if not parsed:
            raise UsageError("--ids is empty")
        return parsed
    if not tokenizer_json.is_file():
        raise MissingFile("no tokenizer.json to encode --prompt with: pass --ids instead", path=tokenizer_json.parent)
    from ..generate import encode_prompt, load_tokenizer

    return encode_prompt(load_tokenizer(tokenizer_json), prompt or "", tokenizer_json)
