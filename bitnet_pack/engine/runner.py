"""A checkpoint loaded into the model with its tokenizer files, for verify and generate."""
from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..containers.outputs import scratch_directory
from ..errors import BitnetPackError, MissingFile, UsageError, VerificationMismatch
from ..families.validate import validate
from ..formats import fastpath
from ..formats.ternary import TernaryWeight
from ..pipeline.sources import Checkpoint, Tensor, open_checkpoint
from .rounding import Plan, plan_of

if TYPE_CHECKING:
    from .model import BitNetModel

MAX_TOKEN_ID = 2**31  # ids are int32 in every runtime (and int64 in traces)


@dataclass(frozen=True)
class Loaded:
    """A checkpoint loaded for decoding: the model, its tokenizer.json, its config."""

    model: object  # BitNetModel (not imported here: the CLI starts without the kernel)
    tokenizer_json: Path
    config: dict
    path: Path
    plan: Plan | None = None  # what the checkpoint's storage rounds (rounding.plan_of)

    def __iter__(self) -> Iterator[object]:
        """`model, tokenizer_json = loaded`, as the (model, tokenizer) pair it used to be."""
        return iter((self.model, self.tokenizer_json))

    @property
    def context(self) -> int | None:
        """max_position_embeddings, the bound of prompt + new tokens."""
        from .generate import context_length

        return context_length(self.config)


@contextmanager
def loaded(path: Path, numerics: str, **read_options: object) -> Iterator[Loaded]:
    """(model, tokenizer.json path) for the checkpoint at `path`: the tokenizer files as the
    checkpoint has them, or as rebuilt from GGUF metadata into a temporary directory. `plan`
    is what the checkpoint's storage declares it rounds (`rounding.plan_of`)."""
    from ..pipeline.sources.embedding import is_embedding_model

    if is_embedding_model(path):
        raise UsageError(f"{path} is a BitNet embedding model: it has no LM head to decode (verify compares its "
                         "pooled embeddings)")

    with about(path), open_checkpoint(path, **read_options) as source:
        validate(source, source.entries())  # as convert: counts bounded by the file before any table
        model = model_of(source, numerics)
        with scratch_directory("bitnet-pack-tok-") as scratch:
            for name, data in source.aux_files.items():
                (scratch / name).write_bytes(data)
            yield Loaded(model, scratch / "tokenizer.json", source.config, path, plan_of(source))


def model_of(source: Checkpoint, numerics: str = "reference") -> BitNetModel:
    """The checkpoint as a BitNetModel, read one tensor at a time: stored projections stay the
    file's mapped bytes (their pages dropped once checked), computed ones (a master's) are packed
    for the kernel as they are read and the source pages under them dropped. Memory ends up
    holding the packed projections that have no file bytes, never a whole int8 or float32 model."""
    from .kernel import PackedMatrix
    from .model import BitNetModel, kernel_layout

    weights: dict[str, object] = {}
    for entry in source.entries():
        value = source.stored(entry) if entry.kind == "linear" else None
        if value is not None:  # checked here, then its pages forgotten until a decode reads them
            value = PackedMatrix.from_bytes(value.layout, value.data, value.shape, value.beta, tiling=value.tiling)
            fastpath.drop_mapped_pages(value.data)
        else:
            value = entry.load()
            if isinstance(value, TernaryWeight):
                value = PackedMatrix.from_ternary(value, kernel_layout(value.shape))
                source.release(entry)
            elif isinstance(value, Tensor):  # NaN/Inf in a norm or embedding: refused, as convert does
                value.check_finite(tensor=entry.name, path=source.path)
        weights[entry.name] = value
    model = BitNetModel(source.config, weights, numerics=numerics)
    return model


@contextmanager
def about(path: Path) -> Iterator[None]:
    """Errors about the data raised without a file name get `path` (the source), so every
    message names one; usage errors are about the command line and stay as they are."""
    try:
        yield
    except BitnetPackError as exc:
        if exc.path is not None or isinstance(exc, (UsageError, VerificationMismatch)):
            raise
        raise type(exc)(str(exc), path=path) from exc


def prompt_ids(ids: str | list[int] | None, prompt: str | None, tokenizer_json: Path) -> list[int]:
    """`ids` as given ("1,2,3" or a list), or `prompt` encoded with the checkpoint's tokenizer."""
    if ids is not None:
        if isinstance(ids, str):
            try:
                ids = [int(x) for x in ids.replace(" ", "").split(",") if x]
            except ValueError:
                raise UsageError(f"--ids must be comma-separated integers, got {ids!r}") from None
        if not ids:
            raise UsageError("--ids is empty")
        bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)
                    or not 0 <= int(i) < MAX_TOKEN_ID), None)
        if bad is not None:
            raise UsageError(f"--ids holds {bad!r}: token ids are integers in [0, {MAX_TOKEN_ID})")
        return [int(i) for i in ids]
    if not tokenizer_json.is_file():
        raise MissingFile("no tokenizer.json to encode --prompt with: pass --ids instead", path=tokenizer_json.parent)
    from .generate import encode_prompt, load_tokenizer

    return encode_prompt(load_tokenizer(tokenizer_json), prompt or "", tokenizer_json)
