"""GGUF files out, for bitnet.cpp (I2_S, TL1, TL2) or mainline llama.cpp (TQ1_0, TQ2_0).

Tensor types: projections in the chosen layout (or t*beta in F16/BF16/F32 for float
outtypes); `token_embd` F16 by default (what llama-quantize and llama.cpp's converter pick);
every norm F32. Tensors are written in the order the source yields them, so nothing is held
back; the large embedding is converted in row chunks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFValueType as VT

from .. import __version__, fastpath, interrupts
from ..arch import BITNET_2B4T, Family
from ..checkpoints import Checkpoint, Entry, Tensor
from ..containers.gguf import FLAVOUR_KEY, GGUFWriter
from ..dtypes import f32_to_stored
from ..errors import ShapeError, UnexpectedTensor, UsageError
from ..ggml_types import BITNET_CPP_FILE_TYPES, TypeTable
from ..gguf_meta import Target, hparam_kvs, make_target
from ..kernel_config import (
    KernelConfig,
    choose_config,
    read_kernel_config,
    render_kernel_config,
    sibling_path,
)
from ..layouts import get_layout
from ..outputs import check_output, publish, temp_name
from ..ternary import TernaryWeight
from . import PlannedTensor, Sink
from .direct_io import open_direct_file
from .gguf_tokenizer import tokenizer_kvs

LAYOUT_OUTTYPES = ("i2_s", "i2_s_arm", "tl1", "tl2", "tq1_0", "tq2_0")
FLOAT_OUTTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "tq1_0": 36, "tq2_0": 37, "tl1": BITNET_CPP_FILE_TYPES["TL1"],
              "tl2": BITNET_CPP_FILE_TYPES["TL2"], "i2_s": BITNET_CPP_FILE_TYPES["I2_S"],
              "i2_s_arm": BITNET_CPP_FILE_TYPES["I2_S"]}
BITNET_CPP_ONLY = ("i2_s", "i2_s_arm", "tl1", "tl2")
EMBEDDING_NAME = "model.embed_tokens.weight"
MAINLINE_WARNING = ("mainline llama.cpp currently computes the BitNet FFN with SiLU instead of relu2, so "
                    "2B4T-style models give wrong output there until that is fixed upstream")


def default_target(outtype: str) -> str:
    return "bitnet.cpp" if outtype in BITNET_CPP_ONLY else "llama.cpp"


class GGUFSink(Sink):
    def __init__(self, path: Path, outtype: str, *, target: str | None = None, arch: str | None = None,
                 type_ids: str = "2025", embedding_type: str = "f16", kernel_config: Path | None = None,
                 force: bool = False, inputs: list[Path] | None = None, name: str | None = None,
                 extra_metadata: dict[str, str] | None = None):
        self.path, self.outtype = Path(path), outtype
        self.target_options = {"name": target or default_target(outtype), "arch": arch, "type_ids": type_ids}
        self.family: Family = BITNET_2B4T  # until the source is known (plan / begin)
        self.target: Target = make_target(self.target_options["name"], type_ids=type_ids)
        if outtype in BITNET_CPP_ONLY and not self.target.is_bitnet_cpp:
            raise UsageError(f"--outtype {outtype} runs only in bitnet.cpp; mainline llama.cpp takes "
                             "tq1_0, tq2_0, f16, bf16 or f32")
        if embedding_type not in FLOAT_OUTTYPES:
            raise UsageError(f"--embedding-type must be one of {', '.join(FLOAT_OUTTYPES)}, got {embedding_type!r}")
        self.types = TypeTable.for_target(self.target.flavour)
        self.embedding_type, self.kernel_config_path = embedding_type, kernel_config
        self.force, self.inputs, self.name = force, inputs or [], name
        self.extra_metadata = extra_metadata or {}
        self.layout = get_layout(outtype) if outtype in LAYOUT_OUTTYPES else None
        self.notes: list[str] = []
        self.kernel_config: KernelConfig | None = None

    def _for_family(self, source: Checkpoint) -> None:
        """The arch and keys follow the source's family (arch.Family.gguf_archs)."""
        options = self.target_options
        self.family = source.family
        if not source.family.gguf_output and not source.family.is_tied(source.config):
            raise UnexpectedTensor(f"an untied output, which GGUF arch {source.family.gguf_arch(options['name'])!r} "
                                   "has no place for (both runtimes multiply by token_embd)", path=source.path,
                                   tensor="lm_head.weight")
        self.target = make_target(options["name"], arch=options["arch"], type_ids=options["type_ids"],
                                  family=source.family)
        arch_note = f"GGUF arch {self.target.arch!r} for {self.target.name} ({source.family.title})"
        for message in (arch_note, MAINLINE_WARNING if source.family is BITNET_2B4T and not self.target.is_bitnet_cpp
                        else None):
            if message is not None and message not in self.notes:
                self.notes.append(message)

    # -- planning -------------------------------------------------------------------------
    def _tiling_config(self, entries: list[Entry]) -> None:
        if self.outtype not in ("tl1", "tl2") or self.kernel_config is not None:
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
            type_name = self.layout.name.upper().replace("_ARM", "")
            return type_name, self.types.type_id(type_name), self.layout.nbytes(entry.shape)
        if entry.kind == "linear":
            type_name = FLOAT_OUTTYPES[self.outtype]
        elif entry.name in (EMBEDDING_NAME, "lm_head.weight"):
            type_name = FLOAT_OUTTYPES[self.embedding_type]
        else:
            type_name = "F32"
        type_id = self.types.type_id(type_name)
        return type_name, type_id, self.types.nbytes(type_id, entry.shape)

    def plan(self, source: Checkpoint, entries: list[Entry]) -> list[PlannedTensor]:
        self._for_family(source)
        self._tiling_config(entries)
        return [self._planned(e) for e in entries]

    def _planned(self, entry: Entry) -> PlannedTensor:
        type_name, _, nbytes = self._tensor_type(entry)
        return PlannedTensor(self.family.to_gguf(entry.name), type_name, entry.shape, nbytes)

    # -- writing --------------------------------------------------------------------------
    def begin(self, source: Checkpoint, entries: list[Entry]) -> None:
        check_output(self.path, self.inputs, self.force)
        self._for_family(source)
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
        kvs += [("general.file_type", FILE_TYPES[self.outtype], VT.UINT32),
                ("general.quantization_version", 2, VT.UINT32),
                (FLAVOUR_KEY, self.target.flavour or "mainline", VT.STRING),
                ("bitnet_pack.version", __version__, VT.STRING),
                ("bitnet_pack.layout", self.outtype, VT.STRING)]
        if self.kernel_config is not None:
            kvs.append(("bitnet_pack.kernel_config", render_kernel_config(self.kernel_config), VT.STRING))
        kvs += [(key, value, VT.STRING) for key, value in sorted(self.extra_metadata.items())]
        return kvs

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
        if self.layout.spec.scale == "block:f16":
            return self.layout.encode(weight, lossy=self._note_fp16_rounding(weight.beta))
        return self.layout.encode(weight)

    def _note_fp16_rounding(self, beta: np.float32) -> bool:
        """TQ keeps beta as fp16: exact for bf16 scales (packed sources), rounded for the fp32
        scales of masters and bitnet.cpp's I2_S. Say how much, once, at the end."""
        rounded = np.float32(np.float16(beta))
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
            self.notes.append(f"{self.outtype.upper()} stores beta as fp16: rounded {self._rounded} fp32 betas "
                              f"(largest relative change {self._worst:.1e}); bf16 betas are kept exactly")
        self.files = [(str(path), "gguf")]
        if ini is not None:
            self._publish_ini(ini)
            self.files.append((str(self._ini_path()), "kernel_config"))
        elif self.kernel_config is not None:
            self.notes.append(f"kept {self._ini_path().name}: it is the --kernel-config this file was tiled with")
        return path

    def planned_ini(self) -> Path | None:
        """The kernel_config.ini a real run writes beside OUT (None: none, or the one given)."""
        return self._ini_path() if self.outtype in ("tl1", "tl2") and not self._ini_is_input() else None

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
