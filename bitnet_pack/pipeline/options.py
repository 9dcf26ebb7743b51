"""One options model: what a source reads and what a sink writes, typed, and refused where unused.

    option (library keyword / CLI flag)          used by
    i2s_variant          --i2s-variant           GGUF sources holding I2_S tensors
    src_kernel_config    --src-kernel-config     GGUF sources holding TL1/TL2 tensors
    max_shard_size       --max-shard-size        safetensors outputs (hf-packed, bf16 directories)
    scale_dtype          --scale-dtype           hf-packed outputs (weight_scale bf16 or f32)
    target, arch, type_ids, embedding_type, name GGUF outputs
    out_kernel_config    --out-kernel-config     tl1 / tl2 outputs
    beta_rule            --beta-rule             i2_s outputs of BitNet embedding models (bitnet_pack/formats/absmean.py)
    float_type           --float-type            i2_s outputs of BitNet embedding models (norms, embedding)
    kernel_config        --kernel-config         the old single option: read tilings when SRC is
                                                 TL1/TL2, write tilings when OUT is; both is refused

An option given where it has no effect is a usage error naming the option and why, never a
silent no-op. A TL1/TL2 GGUF with neither metadata nor option reads the tilings from the sibling
`<stem>.kernel_config.ini` (what bitnet.cpp's converter writes next to its output).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

from ..errors import UsageError

__all__ = ["ReadOptions", "WriteOptions", "flag", "parse_size", "split_options"]

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _entries(layouts: str) -> list:
    """The registered layouts named in a "+"-joined projection layout ("bf16+<layout>")."""
    from ..formats.layouts import find_layout

    return [layout for layout in map(find_layout, layouts.split("+")) if layout is not None]


def _named(what: str) -> str:
    """The registered layouts with entry field `what` set, as a phrase ("tl1/tl2")."""
    from ..formats.layouts import layouts

    return "/".join(layout.name for layout in layouts() if getattr(layout.spec, what))


def is_tiled(layouts: str) -> bool:
    """Whether the bytes depend on a kernel_config tiling (the entry's `tiled`)."""
    return any(layout.spec.tiled for layout in _entries(layouts))


def has_variants(layouts: str) -> bool:
    """Whether one of the layouts shares its GGUF type with others (the entry's `variant`)."""
    return any(layout.spec.variant for layout in _entries(layouts))


def flag(key: str) -> str:
    """The command-line spelling of a library keyword: max_shard_size -> --max-shard-size."""
    return "--" + key.replace("_", "-")


def parse_size(text: str | int | None) -> int | None:
    """'2G' -> 2_000_000_000 (decimal units, as llama.cpp's --split-max-size); ints pass through."""
    if text is None or (isinstance(text, int) and not isinstance(text, bool) and text > 0):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGT])(I?))?B?\s*", str(text).upper())
    size = 0 if not match else Fraction(match.group(1)) * (
        _UNITS[match.group(2) or ""] if not match.group(3) else 1024 ** " KMGT".index(match.group(2)))
    if size < 1:
        raise UsageError(f"size {text!r} is not a positive number of bytes with an optional K/M/G/T suffix "
                         "(decimal, e.g. 2G or 0.5GB) or KiB/MiB/GiB/TiB (binary, e.g. 500MiB)")
    return int(size)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source: only GGUF sources use these."""

    i2s_variant: str | None = None  # a layout entry's variant: "x86" (128/32 blocks, official files), "arm" (64/16) or "1x4"
    src_kernel_config: Path | None = None  # kernel_config.ini of a TL1/TL2 source

    def __post_init__(self) -> None:
        from ..errors import UnknownLayout
        from ..formats.layouts import variants

        if self.i2s_variant is not None and self.i2s_variant not in variants():  # refused before any file opens
            raise UnknownLayout(f"i2s_variant: unknown variant {self.i2s_variant!r}; known: {', '.join(variants())}")

    def checkpoint_kwargs(self) -> dict[str, object]:
        return {"i2s_variant": self.i2s_variant, "kernel_config": self.src_kernel_config}

    def check_used_by(self, layout: str, what: str) -> None:
        """Refuse an option the source (whose projection layout is `layout`) has no use for."""
        if self.i2s_variant is not None and not has_variants(layout):
            raise UsageError(f"--i2s-variant applies to GGUF sources in {_named('variant')}, and {what} is {layout}")
        if self.src_kernel_config is not None and not is_tiled(layout):
            raise UsageError(f"--src-kernel-config applies to GGUF sources in {_named('tiled')}, and {what} is {layout}")


@dataclass(frozen=True)
class WriteOptions:
    """How to write an output; each field belongs to one kind of sink (see the module table)."""

    target: str | None = None
    arch: str | None = None
    type_ids: str | None = None
    embedding_type: str | None = None
    output_type: str | None = None
    out_kernel_config: Path | None = None
    name: str | None = None
    max_shard_size: int | None = None
    scale_dtype: str | None = None
    beta_rule: str | None = None  # BitNet embedding models' I2_S beta: "numpy1" | "numpy2" | "exact"
    float_type: str | None = None  # BitNet embedding models' i2_s norms and embedding: "f16" | "f32"

    def given(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def check_used_by(self, outtype: str, gguf: bool) -> None:
        """Refuse what a GGUF or safetensors sink of `outtype` would ignore."""
        given = self.given()
        for key in ("beta_rule", "float_type"):  # the embedding path (emb.convert) takes them, never a sink
            if key in given:
                raise UsageError(f"{flag(key)} applies to BitNet embedding models (qwen3 / gemma3) with --outtype "
                                 "i2_s only")
        if gguf:
            unused = [k for k in ("max_shard_size", "scale_dtype") if k in given]
            why = "safetensors outputs (a directory OUT)"
            if not unused and "out_kernel_config" in given and not is_tiled(outtype):
                unused, why = ["out_kernel_config"], f"--outtype {_named('tiled')}"
        else:
            unused = [k for k in ("target", "arch", "type_ids", "embedding_type", "output_type", "out_kernel_config",
                                  "name")
                      if k in given]
            why = "GGUF outputs (OUT ending in .gguf)"
            if not unused and "scale_dtype" in given and outtype != "hf-packed":
                unused, why = ["scale_dtype"], "--outtype hf-packed (a master has no weight_scale)"
        if unused:
            raise UsageError(f"{flag(unused[0])} applies to {why} only; here --outtype is {outtype}")

    def sink_kwargs(self, gguf: bool) -> dict[str, object]:
        given = self.given()
        if gguf:
            kwargs = {k: v for k, v in given.items() if k not in ("out_kernel_config",)}
            kwargs["kernel_config"] = self.out_kernel_config
            return kwargs
        return given


READ_KEYS = {f.name for f in fields(ReadOptions)}
WRITE_KEYS = {f.name for f in fields(WriteOptions)}


def split_options(options: dict[str, object]) -> tuple[ReadOptions, WriteOptions, Path | None]:
    """(read options, write options, the old `kernel_config` still to be placed) from keywords;
    None values count as not given, unknown keys are a usage error."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - READ_KEYS - WRITE_KEYS - {"kernel_config"})
    if unknown:
        known = ", ".join(sorted(READ_KEYS | WRITE_KEYS | {"kernel_config"}))
        raise UsageError(f"unknown option {unknown[0]!r}; known: {known}")
    paths = {k: Path(os.fspath(v)) for k, v in given.items() if k.endswith("kernel_config")}
    given.update(paths)
    if "max_shard_size" in given:
        given["max_shard_size"] = parse_size(given["max_shard_size"])
    read = ReadOptions(**{k: v for k, v in given.items() if k in READ_KEYS})
    write = WriteOptions(**{k: v for k, v in given.items() if k in WRITE_KEYS})
    return read, write, given.get("kernel_config")


def place_kernel_config(path: Path | None, read: ReadOptions, write: WriteOptions, source_layout: str,
                        outtype: str) -> tuple[ReadOptions, WriteOptions]:
    """The old `--kernel-config`: the tilings of SRC when SRC is TL1/TL2, those of OUT when OUT
    is; refused when both are (say which with --src-/--out-kernel-config) or neither is."""
    if path is None:
        return read, write
    reads, writes = is_tiled(source_layout), is_tiled(outtype)
    if reads and writes:
        raise UsageError(f"--kernel-config is ambiguous when SRC ({source_layout}) and OUT ({outtype}) are both "
                         f"{_named('tiled')}: pass --src-kernel-config and/or --out-kernel-config")
    if (reads and read.src_kernel_config is not None) or (writes and write.out_kernel_config is not None):
        raise UsageError("--kernel-config is the old spelling of --src-kernel-config / --out-kernel-config: "
                         "give one of them, not both")
    if reads:
        return ReadOptions(read.i2s_variant, path), write
    if writes:
        return read, WriteOptions(**(write.given() | {"out_kernel_config": path}))
    raise UsageError(f"--kernel-config applies to {_named('tiled')} sources or outputs, and SRC is {source_layout}, "
                     f"--outtype {outtype}")
