"""Output names: the `{outtype}` placeholder, and the default name when OUT is left out.

OUT may hold `{outtype}` or llama.cpp's `{ftype}` (both become the outtype). OUT left out, or
given as a folder (`.`, `..`, or a path ending in `/`), gets the default name in that folder.

Defaults follow the GGUF naming convention (ggml docs/gguf.md):

    <BaseName>-<SizeLabel>-<FineTune>-<Version>-<Type>.gguf   e.g. Bitnet-B1.58-2B-4T-I2_S.gguf

The parts come from the model id (hub repo name, GGUF general.name, or the directory / file
stem, with a trailing type like "-bf16" or "-gguf" dropped) through gguf-py's own heuristics,
as llama.cpp's converter does; lowercase words are capitalised. When the id carries no size
("tiny-bitnet"), the parameter count gives it (Tiny-Bitnet-1.6M-I2_S.gguf). A safetensors
output is a directory named the same way without the suffix (Bitnet-B1.58-2B-4T-HF-PACKED).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..formats.layouts import find_layout, layouts
from .sinks.factory import FLOAT_OUTTYPES, gguf_outtypes, safetensors_outtypes

PLACEHOLDERS = ("{outtype}", "{ftype}")  # ours, and llama.cpp's --outfile placeholder
_FIXED_SUFFIXES = ("gguf", "safetensors", *FLOAT_OUTTYPES, "fp16", "fp32", "packed")
_COUNT_WORD = re.compile(r"\d+(?:\.\d+)?[a-z]")


def expand(out: str, outtype: str) -> str:
    """OUT with every `{outtype}` (or `{ftype}`) replaced by the outtype."""
    for placeholder in PLACEHOLDERS:
        out = out.replace(placeholder, outtype)
    return out


def default_is_gguf(outtype: str) -> bool:
    """Which container a default name gets: `bf16` (both) means a transformers master."""
    return outtype in gguf_outtypes() and outtype not in safetensors_outtypes()


def default_name(model_id: str, total_params: int, outtype: str, *, gguf: bool | None = None) -> str:
    """`<BaseName>-<SizeLabel>-<FineTune>-<Version>-<Type>`, plus `.gguf` for GGUF outputs."""
    from gguf import naming_convention, size_label
    from gguf.metadata import Metadata

    model_id = strip_type_suffix(model_id.split("/")[-1]) or "ggml-model"
    full, _org, base, finetune, version, size = Metadata.get_model_id_components(model_id, total_params)
    if size is None and total_params > 0:
        size = size_label(total_params, 0, 0, 0)
    name = naming_convention(_capitalised(full), _capitalised(base), _capitalised(finetune),
                             version, size, _suffix(outtype))
    gguf = default_is_gguf(outtype) if gguf is None else gguf
    return f"{name}.gguf" if gguf else name


def _suffix(outtype: str) -> str:
    """The type part of a default name: the layout entry's `name_suffix`, else the outtype upper-cased."""
    layout = find_layout(outtype)
    return outtype.upper() if layout is None else layout.spec.name_suffix


def _type_suffix() -> re.Pattern[str]:
    """A trailing type: a float or container word, or any registered layout's outtype, alias or
    name suffix ("-i2_s", "-TQ2-0", "-hf-packed"; not "-hf", a transformers repo's mark), with
    `-` and `_` taken for each other."""
    words = {w for layout in layouts() for w in (layout.spec.write_name, layout.spec.name_suffix,
                                                 *layout.spec.aliases)}
    spelled = sorted({re.sub(r"\\?[-_]", "[-_]", re.escape(w.lower())) for w in {*words, *_FIXED_SUFFIXES}},
                     key=len, reverse=True)
    return re.compile(r"(?i)[-_.](" + "|".join(spelled) + ")$")


def strip_type_suffix(model_id: str) -> str:
    previous = None
    while previous != model_id:
        previous, model_id = model_id, _type_suffix().sub("", model_id)
    return model_id


def _capitalised(text: str | None) -> str | None:
    """'bitnet-b1.58' -> 'Bitnet-B1.58', '4t' -> '4T'; words with capitals stay as they are."""
    if text is None or text.lower() == "ggml-model":  # the convention's generic name stays as is
        return text
    words = []
    for word in text.split("-"):
        if word != word.lower():
            words.append(word)
        elif _COUNT_WORD.fullmatch(word):
            words.append(word.upper())
        else:
            words.append(word[:1].upper() + word[1:])
    return "-".join(words)


def names_folder(out: str) -> bool:
    """OUT given as a folder to put the default name in: `.`, `..`, or ending in a separator."""
    return Path(out).name in ("", ".", "..") or out.endswith(("/", os.sep))


def resolve_output(out: str | os.PathLike | None, outtype: str, model_id: str, total_params: int,
                   directory: Path | None = None) -> Path:
    """OUT with its placeholder filled in, or the default name in `directory` (the cwd) or in
    the folder OUT names."""
    if out is not None and not names_folder(os.fspath(out)) and not _gguf_into_folder(out, outtype):
        return Path(expand(os.fspath(out), outtype))
    folder = Path(os.fspath(out)) if out is not None else (directory or Path.cwd())
    return folder / default_name(model_id, total_params, outtype)


def model_id(source, checkpoint) -> str:
    """The name a model goes by, for default output names and GGUF general.name: the hub
    repo name, else GGUF general.name, else the directory or file stem."""
    if source.is_hub:
        return source.model_id
    name = checkpoint.file.get("general.name") if hasattr(checkpoint, "file") else None
    usable = isinstance(name, str) and name.strip() and name.isprintable() and not re.search(r"[/\\]", name)
    return name if usable else source.model_id  # a NUL, a control character or a path is not a name


def _gguf_into_folder(out: str | os.PathLike, outtype: str) -> bool:
    """An existing directory given as OUT of a GGUF outtype: the default name goes inside it
    (a GGUF is a file; a directory OUT of a transformers outtype is the checkpoint itself)."""
    text = expand(os.fspath(out), outtype)
    return default_is_gguf(outtype) and not text.endswith(".gguf") and Path(text).is_dir()


def count_params(shapes: list[tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes:
        count = 1
        for dim in shape:
            count *= int(dim)
        total += count
    return total
