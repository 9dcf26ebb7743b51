"""GGUF files out, in a registered GGUF layout (its entry says which runtimes load it, with
which type ids and file type) or in floats.

Tensor types: projections in the chosen layout (or t*beta in F16/BF16/F32 for float
outtypes); `token_embd` (and an untied `output`) F16 by default for the ternary layouts (what
llama-quantize and llama.cpp's converter pick), the outtype's own type for f32/f16/bf16 (as
convert_hf_to_gguf.py --outtype writes them, so `general.file_type` is true to the contents);
every norm F32. Tensors are written in the order the source yields them, so nothing is held
back; the large embedding is converted in row chunks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFValueType as VT

from ... import interrupts
from ..._version import __version__
from ...containers.gguf import FLAVOUR_KEY, GGUFWriter
from ...containers.outputs import check_output, publish, temp_name
from ...errors import ShapeError, UnexpectedTensor, UsageError
from ...families.arch import BITNET_2B4T, Family
from ...families.gguf_meta import Target, hparam_kvs, make_target
from ...formats import fastpath
from ...formats.dtypes import f32_to_stored
from ...formats.ggml_types import MAINLINE, TypeTable
from ...formats.kernel_config import (
    KernelConfig,
    choose_config,
    read_kernel_config,
    render_kernel_config,
    sibling_path,
)
from ...formats.layouts import Layout, get_layout, layout_notes
from ...formats.quant_floats import EMBEDDING_TYPES, check_shape, ggml_name, quantized_chunks, rounding_note
from ...formats.ternary import TernaryWeight
from ..sources import Checkpoint, Entry, Tensor
from . import PlannedTensor, Sink
from .direct_io import open_direct_file
from .gguf_tokenizer import tokenizer_kvs

FLOAT_OUTTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
FLOAT_FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32}  # a layout's file type is in its entry
EMBEDDING_NAME = "model.embed_tokens.weight"
MAINLINE_WARNING = ("mainline llama.cpp currently computes the BitNet FFN with SiLU instead of relu2, so "
                    "2B4T-style models give wrong output there until that is fixed upstream")


def gguf_layout(outtype: str) -> Layout | None:
    """The layout a GGUF outtype writes its projections in (None: a float outtype)."""
    return None if outtype in FLOAT_OUTTYPES else get_layout(outtype)


def default_target(outtype: str) -> str:
    """The first runtime the layout's entry lists (llama.cpp for float outtypes)."""
    layout = gguf_layout(outtype)
    return layout.spec.runtimes[0] if layout is not None and layout.spec.runtimes else "llama.cpp"


class GGUFSink(Sink):
    def __init__(self, path: Path, outtype: str, *, target: str | None = None, arch: str | None = None,
                 type_ids: str = "2025", embedding_type: str | None = None, output_type: str | None = None,
                 kernel_config: Path | None = None,
                 force: bool = False, inputs: list[Path] | None = None, name: str | None = None,
                 extra_metadata: dict[str, str] | None = None):
        self.path, self.outtype = Path(path), outtype
        self.target_options = {"name": target or default_target(outtype), "arch": arch, "type_ids": type_ids}
        self.family: Family = BITNET_2B4T  # until the source is known (plan / begin)
        self.target: Target = make_target(self.target_options["name"], type_ids=type_ids)
        self.layout = gguf_layout(outtype)
        refusal = None if self.layout is None else self.layout.target_refusal(self.target.name, tuple(FLOAT_OUTTYPES))
        if refusal is not None:
            raise UsageError(refusal)
        if embedding_type is None:  # a float outtype keeps floats; the ternary ones default to F16
            embedding_type = outtype if outtype in FLOAT_OUTTYPES else "f16"
        for flag, value in (("--embedding-type", embedding_type), ("--output-type", output_type)):
            if value is not None and value not in FLOAT_OUTTYPES and value not in EMBEDDING_TYPES:
                raise UsageError(f"{flag} must be one of {', '.join([*FLOAT_OUTTYPES, *EMBEDDING_TYPES])}, "
                                 f"got {value!r}")
        self.output_type = output_type  # output.weight of untied families (default: --embedding-type)
        self.types = TypeTable.for_target(self._type_table())
        self.embedding_type, self.kernel_config_path = embedding_type, kernel_config
        self.force, self.inputs, self.name = force, inputs or [], name
        self.extra_metadata = extra_metadata or {}
        self.notes: list[str] = []
        self.kernel_config: KernelConfig | None = None

    def _type_table(self) -> str | None:
        """The target's type-id table, or the layout's own when it lists its id only there
        (a runtime of its own, like ik_llama.cpp: its ids are no other table's)."""
        flavour, ids = self.target.flavour, self.layout.spec.type_ids if self.layout is not None else {}
        if not ids or (flavour or MAINLINE) in ids or len(ids) != 1:
            return flavour
        return next(iter(ids))

    def _for_family(self, source: Checkpoint) -> None:
        """The arch and keys follow the source's family (arch.Family.gguf_archs)."""
        options = self.target_options
        self.family = source.family
        if not source.family.gguf_output and not source.family.is_tied(source.config):
            raise UnexpectedTensor(f"an untied output, which GGUF arch {source.family.gguf_arch(options['name'])!r} "
                                   "has no place for (both runtimes multiply by token_embd)", path=source.path,
                                   tensor="lm_head.weight")
        if self.output_type is not None and source.family.is_tied(source.config):
            raise UsageError(f"--output-type applies to models with their own output matrix; {source.path.name} "
                             "ties it to token_embd (--embedding-type sets both)")
        arch = options["arch"] if self.layout is None else \
            self.layout.gguf_arch(source.family, options["name"], options["arch"])
        self.target = make_target(options["name"], arch=arch, type_ids=options["type_ids"], family=source.family)
        arch_note = f"GGUF arch {self.target.arch!r} for {self.target.name} ({source.family.title})"
        for message in (arch_note, MAINLINE_WARNING if source.family is BITNET_2B4T and not self.target.is_bitnet_cpp
                        else None):
            if message is not None and message not in self.notes:
                self.notes.append(message)

    # -- planning -------------------------------------------------------------------------
    def _tiling_config(self, entries: list[Entry]) -> None:
        if self.layout is None or not self.layout.spec.tiled or self.kernel_config is not None:
            return
        shapes = sorted({e.shape for e in entries if e.kind == "linear"}, key=lambda s: (s[1], s[0]))
        if self.kernel_config_path is not None:
            self.kernel_config = read_kernel_config(self.kernel_config_path, kind=self.outtype)
        else:
            self.kernel_config = choose_config(self.outtype, shapes)

    def _tensor_type(self, entry: Entry) -> tuple[str, int, int]:
        """(type name, type id, nbytes) of one entry in this file."""
        if not entry.shape or 0 in entry.shape:  # the source's fault: named as its tensor, not OUT's
            raise ShapeError(f"shape {list(entry.shape)} has no elements; a GGUF tensor has 1..4 dimensions, "
                             "all > 0", tensor=entry.name)
        if entry.kind == "linear" and self.layout is not None:
            options = {"tiling": self.kernel_config} if self.kernel_config is not None else {}
            self.layout.check_shape(entry.shape, tensor=entry.name, **options)
            type_name = self.layout.spec.type_name
            return type_name, self.types.type_id(type_name), self.layout.nbytes(entry.shape)
        if entry.kind == "linear":
            type_name = FLOAT_OUTTYPES[self.outtype]
        elif entry.name in (EMBEDDING_NAME, "lm_head.weight"):
            chosen = self.output_type if entry.name == "lm_head.weight" and self.output_type else self.embedding_type
            if chosen in EMBEDDING_TYPES:  # a ggml block type (quant_floats)
                check_shape(chosen, entry.shape, entry.name)
            type_name = FLOAT_OUTTYPES.get(chosen) or ggml_name(chosen)
        else:
            type_name = "F32"
        type_id = self.types.type_id(type_name)
        return type_name, type_id, self.types.nbytes(type_id, entry.shape)

    def plan(self, source: Checkpoint, entries: list[Entry]) -> list[PlannedTensor]:
        self._for_family(source)
        self._layout_notes(entries)
        self._tiling_config(entries)
        return [self._planned(e) for e in entries]

    def _layout_notes(self, entries: list[Entry]) -> None:
        """What the layout and the runtimes say about writing it (layouts.layout_notes), once."""
        if self.layout is not None:
            new = layout_notes(self.layout, writing=(entries, self.embedding_type))
            self.notes += [n for n in new if n not in self.notes]

    def _planned(self, entry: Entry) -> PlannedTensor:
        type_name, _, nbytes = self._tensor_type(entry)
        return PlannedTensor(self.family.to_gguf(entry.name), type_name, entry.shape, nbytes)

    # -- writing --------------------------------------------------------------------------
    def begin(self, source: Checkpoint, entries: list[Entry]) -> None:
        check_output(self.path, self.inputs, self.force)
        self._for_family(source)
        self._layout_notes(entries)
        self.config = source.config
        self._tiling_config(entries)
        if self.kernel_config is not None and not self._ini_is_input():
            check_output(self._ini_path(), self.inputs, self.force)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = GGUFWriter(self.path, types=self.types, data_stream=_direct_data_stream,
                                 overwrite=self.force)
        for key, value, vtype in self._metadata(source):
            self.writer.add_kv(key, value, vtype)
        for field in tokenizer_kvs(source, self.target):
            self.writer.add_kv(*field)
        for entry in entries:
            _, type_id, nbytes = self._tensor_type(entry)
            self.writer.add_tensor(self.family.to_gguf(entry.name), entry.shape, type_id, nbytes)
        self.writer.write_header()

    def _metadata(self, source: Checkpoint) -> list[tuple[str, object, VT]]:
        name = self.name or source.config.get("_name_or_path") or source.path.resolve().name.removesuffix(".gguf")
        kvs = [("general.architecture", self.target.arch, VT.STRING), ("general.name", str(name), VT.STRING)]
        kvs += hparam_kvs(source.config, self.target, self.family)
        kvs += [("general.file_type", self._file_type(), VT.UINT32),
                ("general.quantization_version", 2, VT.UINT32),
                (FLAVOUR_KEY, self.types.flavour or MAINLINE, VT.STRING),
                ("bitnet_pack.version", __version__, VT.STRING),
                ("bitnet_pack.layout", self.outtype, VT.STRING)]
        if self.kernel_config is not None:
            kvs.append(("bitnet_pack.kernel_config", render_kernel_config(self.kernel_config), VT.STRING))
        kvs += [(key, value, VT.STRING) for key, value in sorted(self.extra_metadata.items())]
        return kvs

    def _file_type(self) -> int:
        if self.layout is None:
            return FLOAT_FILE_TYPES[self.outtype]
        if self.layout.spec.file_type is None:
            raise UsageError(f"layout {self.layout.name!r} has no general.file_type in its entry")
        return self.layout.spec.file_type

    def put(self, entry: Entry, value: TernaryWeight | Tensor) -> None:
        gguf_name = self.family.to_gguf(entry.name)
        if isinstance(value, TernaryWeight):
            value = self.family.gguf_weight(entry.name, value, self.config, to_gguf=True)
            self.writer.write_tensor(gguf_name, self._encode_linear(value))
        else:
            type_name = self._tensor_type(entry)[0]
            self.writer.write_tensor_chunks(gguf_name, self._float_chunks(entry.name, value, type_name))

    def _float_chunks(self, name: str, tensor: Tensor, type_name: str):
        """Row chunks of a float tensor converted to `type_name`: the 2B4T embedding (656 MB
        as F16) never exists whole in another dtype. Values F16 cannot hold are counted."""
        quantized = {ggml_name(t): t for t in EMBEDDING_TYPES}
        if type_name in quantized:
            self.notes.append(rounding_note(name, quantized[type_name], tensor))
            yield from quantized_chunks(tensor, quantized[type_name])
            return
        inexact = 0
        for part in tensor.row_chunks():
            data, lost = part.converted(type_name)
            inexact += lost
            yield data
        if inexact:
            self.notes.append(f"{name}: {inexact} of {tensor.data.size} values are not exact in F16 (below its normal "
                              "range or above 65504), so verify against the source can differ; --embedding-type bf16 or f32 "
                              "keeps them")

    def _encode_linear(self, weight: TernaryWeight) -> np.ndarray:
        if self.layout is None:
            return f32_to_stored(weight.dequantize(), FLOAT_OUTTYPES[self.outtype])
        if self.kernel_config is not None:
            return self.layout.encode(weight, tiling=self.kernel_config)
        if self.layout.spec.beta_rounding:
            return self.layout.encode(weight, lossy=self._note_rounding(weight.beta))
        return self.layout.encode(weight)

    def _note_rounding(self, beta: np.float32) -> bool:
        """A layout whose entry declares `beta_rounding` (TQ: fp16) keeps beta exactly for bf16
        scales (packed sources) and rounds the fp32 scales of masters and bitnet.cpp's files.
        Say how much, once, at the end."""
        rounded = self.layout.rounded_beta(beta)
        if rounded == beta:
            return False
        change = abs(float(rounded) / float(beta) - 1)
        self._rounded = getattr(self, "_rounded", 0) + 1
        self._worst = max(getattr(self, "_worst", 0.0), change)
        return True

    def finish(self) -> Path:
        ini = self._ini_temp()  # before the GGUF is published: a full disk fails with nothing published
        try:
            path = self.writer.finish()
        except BaseException:
            _discard(ini)
            raise
        if getattr(self, "_rounded", 0):
            rounding = self.layout.spec.beta_rounding
            self.notes.append(f"{self.outtype.upper()} stores beta as {rounding}: rounded {self._rounded} fp32 betas "
                              f"(largest relative change {self._worst:.1e})"
                              + ("; bf16 betas are kept exactly" if rounding == "fp16" else ""))
        self.files = [(str(path), "gguf")]
        if ini is not None:
            self._publish_ini(ini)
            self.files.append((str(self._ini_path()), "kernel_config"))
        elif self.kernel_config is not None:
            self.notes.append(f"kept {self._ini_path().name}: it is the --kernel-config this file was tiled with")
        return path

    def planned_ini(self) -> Path | None:
        """The kernel_config.ini a real run writes beside OUT (None: none, or the one given)."""
        tiled = self.layout is not None and self.layout.spec.tiled
        return self._ini_path() if tiled and not self._ini_is_input() else None

    def _ini_path(self) -> Path:
        return sibling_path(self.path)

    def _ini_is_input(self) -> bool:
        """--kernel-config names the file we would write: it is an input, never replaced."""
        given = self.kernel_config_path
        return given is not None and Path(given).resolve() == self._ini_path().resolve()

    def _ini_temp(self) -> Path | None:
        """The kernel_config.ini written under its temporary name (None: none to write)."""
        if self.kernel_config is None or self._ini_is_input():
            return None
        temp = temp_name(self._ini_path())
        interrupts.track(temp)
        try:
            temp.write_text(render_kernel_config(self.kernel_config))
        except BaseException:
            _discard(temp)
            raise
        return temp

    def _publish_ini(self, temp: Path) -> None:
        ini = self._ini_path()
        try:
            publish(temp, ini, force=self.force)
        except BaseException:
            _discard(temp)
            raise
        self.notes.append(f"wrote {ini.name}: the {self.outtype.upper()} kernel tilings a bitnet.cpp build "
                          "needs for this file (its include/kernel_config.ini, then codegen)")

    def abort(self) -> None:
        if hasattr(self, "writer"):
            self.writer.abort()


def _discard(temp: Path | None) -> None:
    if temp is not None:
        temp.unlink(missing_ok=True)
        interrupts.untrack(temp)


def _direct_data_stream(path: Path, data_start: int):
    """Tensor data past the header bypasses the page cache where the filesystem allows it
    (see `direct_io`); the bytes are the same."""
    return open_direct_file(path, data_start) if fastpath.streaming() else None
