"""Loading a checkpoint into the model, and its tokenizer files, for verify and generate."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..checkpoints import open_checkpoint, read_weights
from ..errors import MissingFile, UsageError
from .common import about, resolve


@contextmanager
def loaded(src: str, numerics: str, kernel_config: Path | None = None, revision: str | None = None
           ) -> Iterator[tuple[object, Path]]:
    """(model, tokenizer.json path) for SRC, a path or a hub repo id: the tokenizer files as
    the checkpoint has them, or as rebuilt from GGUF metadata into a temporary directory.
    Packed projections run from the file's own mapped bytes (no decode, no re-encode)."""
    from ..model import BitNetModel  # imported on use: the CLI starts without loading the kernel

    path = resolve(str(src), revision, progress=False).path
    with about(path), open_checkpoint(path, kernel_config=kernel_config) as source:
        model = BitNetModel(source.config, read_weights(source, stored=True), numerics=numerics)
        with tempfile.TemporaryDirectory(prefix="bitnet-pack-tok-") as scratch:
            for name, data in source.aux_files.items():
                (Path(scratch) / name).write_bytes(data)
            yield model, Path(scratch) / "tokenizer.json"


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
