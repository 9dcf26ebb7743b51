"""`--split-max-size`: a GGUF output in parts, as llama.cpp's `gguf-split --split-max-size` writes
them and its loader reads them (given the first part):

    model.gguf  ->  model-00001-of-00003.gguf   every key-value of the whole file, and
                    model-00002-of-00003.gguf   in every part: split.no (u16, from 0),
                    model-00003-of-00003.gguf   split.count (u16), split.tensors.count (i32)

Tensors keep the whole file's order; a new part starts when the next tensor would take the
current one past the limit (a tensor larger than the limit gets a part of its own). The whole
file is written first under a hidden temporary name, then cut; every part is published with
the same no-replace rename as any output, and a failure removes the parts already written.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gguf import GGUFValueType as VT

from ... import interrupts
from ...containers.gguf import GGUFFile, GGUFWriter
from ...containers.outputs import check_output
from ...errors import UsageError
from ...formats.layouts import find_layout
from ..options import parse_size

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
MAX_PARTS = 65535  # split.count is a u16


def limit(size: int | str | None, target: Path, outtype: str, push: str | None) -> int | None:
    if size is None:
        return None
    layout = find_layout(outtype)
    if target.suffix != ".gguf" or (layout is not None and layout.spec.tiled) or push is not None:
        raise UsageError("--split-max-size applies to GGUF outputs (not tiled layouts, tl1/tl2, whose "
                         "kernel_config.ini names one file; not with --push-to-hub); here OUT is "
                         f"{target.name}, --outtype {outtype}")
    return parse_size(size)


def planned_parts(planned: list, target: Path, split: int | None, force: bool,
                   inputs: list[Path]) -> list[Path]:
    """The parts a split run writes (checked: none exists without force), before any work."""
    if not split:
        return []
    count = len(groups([(p.name, p.nbytes) for p in planned], split))
    return check_parts(target, count, force, inputs)


def converted_in_parts(run: Callable[[], object], target: Path, split: int, force: bool,
                       inputs: list[Path]) -> tuple[object, list[Path]]:
    """`run()` (the conversion into `whole_path(target)`), then the cut; the whole file goes."""
    whole = whole_path(target)
    interrupts.track(whole)  # the whole file is a temporary too
    try:
        result = run()
        return result, split_file(whole, target, split, force=force, inputs=inputs)
    finally:
        discard(whole)


def part_paths(out: Path, count: int) -> list[Path]:
    stem = out.name.removesuffix(".gguf")
    return [out.with_name(f"{stem}-{i + 1:05d}-of-{count:05d}.gguf") for i in range(count)]


def groups(sizes: list[tuple[str, int]], limit: int) -> list[list[str]]:
    """Tensor names in parts of at most `limit` bytes of tensor data (a larger tensor alone)."""
    parts: list[list[str]] = [[]]
    size = 0
    for name, nbytes in sizes:
        if parts[-1] and size + nbytes > limit:
            parts.append([])
            size = 0
        parts[-1].append(name)
        size += nbytes
    if len(parts) > MAX_PARTS:
        raise UsageError(f"--split-max-size {limit} cuts this model into {len(parts)} parts, more than {MAX_PARTS}")
    return parts


def whole_path(out: Path) -> Path:
    """Where the whole file is written before it is cut (hidden, removed afterwards)."""
    return out.with_name(f".{out.name.removesuffix('.gguf')}.unsplit-{os.getpid()}.gguf")


def check_parts(out: Path, count: int, force: bool, inputs: list[Path]) -> list[Path]:
    paths = part_paths(out, count)
    for path in paths:
        check_output(path, inputs, force)
    return paths


def split_file(whole: Path, out: Path, limit: int, *, force: bool, inputs: list[Path]) -> list[Path]:
    """Cut the GGUF at `whole` into parts named after `out`; returns their paths, first first."""
    written: list[Path] = []
    with GGUFFile(whole) as file:
        parts = groups([(name, info.nbytes) for name, info in file.tensors.items()], limit)
        paths = check_parts(out, len(parts), force, inputs)
        try:
            for number, (path, names) in enumerate(zip(paths, parts, strict=True)):
                written.append(_write_part(file, path, names, number, len(parts), force))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    return written


def _write_part(file: GGUFFile, path: Path, names: list[str], number: int, count: int, force: bool) -> Path:
    writer = GGUFWriter(path, types=file.types, alignment=file.alignment, overwrite=force)
    try:
        if number == 0:
            for key, field in file.kv.items():
                if key != "general.alignment" and key not in SPLIT_KEYS:
                    writer.add_kv(key, field)
        writer.add_kv("split.no", number, VT.UINT16)
        writer.add_kv("split.count", count, VT.UINT16)
        writer.add_kv("split.tensors.count", len(file.tensors), VT.INT32)
        for name in names:
            info = file.tensors[name]
            writer.add_tensor(name, info.shape, info.type_id, info.nbytes)
        writer.write_header()
        for name in names:
            writer.write_tensor(name, file.tensor_bytes(name))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def discard(whole: Path) -> None:
    whole.unlink(missing_ok=True)
    interrupts.untrack(whole)
