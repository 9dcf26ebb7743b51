"""GGUF files in: ours, bitnet.cpp's official I2_S/TL files, and llama.cpp's TQ files.

Projections are decoded from their layout back to ternary codes and beta; everything else is
yielded as stored (F32 norms, F16 embedding). The config and the tokenizer files are rebuilt
from the metadata, so a GGUF converts back into a transformers checkpoint.

Float tensors in a ggml block type (`token_embd`/`output` as Q8_0, Q4_K, Q6_K, ... as
llama-quantize leaves them) are read through gguf-py's dequantizers as F32: exactly the values
the runtimes compute with, which the file already rounded from the original floats (a note says
so). A projection in such a type is dequantized too, and accepted only if that is ternary x one
scale.

Which layout a tensor is in follows from its type id, read with the right runtime's table
(see `GGUFFile` flavours). Two things the bytes alone cannot say are taken from our own
`bitnet_pack.*` keys when present, else from options: the I2_S block variant (x86 128/32 or
ARM 64/16; official files are x86) and the TL tilings (a kernel_config.ini).
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants

from ...containers.gguf import GGUFFile
from ...errors import (
    BitnetPackError,
    FormatError,
    MissingFile,
    NonFiniteWeight,
    NotTernary,
    UnknownTensorType,
    UsageError,
)
from ...families.arch import family_of_gguf
from ...families.gguf_meta import check_tokenizer_kvs, config_from_kvs
from ...families.tokenizers.reverse import tokenizer_files_from_gguf
from ...formats import fastpath
from ...formats.ggml_types import table_label
from ...formats.kernel_config import KernelConfig, parse_kernel_config, read_kernel_config, sibling_path
from ...formats.layouts import Layout, layout_of_type, layouts_of_type
from ...formats.ternary import ZERO_BETA, TernaryWeight, check_ternary
from . import Checkpoint, Entry, StoredProjection, Tensor, is_projection
from .hf import LatentTernary

FLOAT_TYPES = {"F32": ("F32", "<f4"), "F16": ("F16", "<f2"), "BF16": ("BF16", "<u2")}
# ggml block types that hold rounded floats (ternary layouts and plain floats/ints excluded);
# whether gguf-py can dequantize one is known only when it is tried (NotImplementedError).
PLAIN_TYPES = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}
GGUF_PY_TYPES = frozenset(t.name for t in GGMLQuantizationType)


def is_lossy_float(type_name: str) -> bool:
    """A gguf-py block type that is neither plain nor a registered layout's type."""
    return type_name in GGUF_PY_TYPES and type_name not in PLAIN_TYPES and not layouts_of_type(type_name)


class GGUFCheckpoint(Checkpoint):
    kind = "gguf"

    def __init__(self, path: Path, *, flavour: str | None = "auto", i2s_variant: str | None = None,
                 kernel_config: Path | None = None, **_ignored: object):
        self.path = Path(path)
        self.file = GGUFFile(self.path, flavour=flavour)
        arch = self.file.architecture or ""
        try:
            check_tokenizer_kvs(self.file.kv)
            self.family = family_of_gguf(arch, self.file.get)
            self.config = config_from_kvs(self.file.get, arch, has_output="output.weight" in self.file.tensors)
        except BitnetPackError as exc:
            raise type(exc)(str(exc), path=self.path) from None
        self.tokenizer_fields = {k: f for k, f in self.file.kv.items() if k.startswith("tokenizer.")}
        check_vocab_arrays(self.tokenizer_fields, self.config.get("vocab_size"), self.path)
        self.notes = [f"family {self.family.name}: {self.family.title}",
                      f"read GGUF arch {arch!r} with {table_label(self.types_flavour).removesuffix(' llama.cpp')} type ids"]
        self.notes += self._lossy_float_notes()
        self.variant = i2s_variant
        self._check_variant(i2s_variant)
        self.kernel_config = self._kernel_config(kernel_config)
        self.layout = self._projection_layout()

    @property
    def types_flavour(self) -> str | None:
        return self.file.types.flavour

    def _lossy_float_notes(self) -> list[str]:
        lossy = [(name, info.type_name) for name, info in self.file.tensors.items()
                 if is_lossy_float(info.type_name)]
        return [f"{name} is {type_name} in the file: read through gguf-py's {type_name} dequantizer as F32, "
                "the values the runtime uses; the original floats were rounded when the file was made (lossy)"
                for name, type_name in lossy]

    def _check_variant(self, variant: str | None) -> None:
        """A file that records its layout (`bitnet_pack.layout`) is read as it says: a read
        variant naming another layout of the same GGUF type is refused, not a silent rescramble;
        for a file that records none, the choice is said in a note."""
        if variant is None:
            return
        recorded = self.file.get("bitnet_pack.layout")
        for type_name in sorted({info.type_name for info in self.file.tensors.values()}):
            sharing = layouts_of_type(type_name)
            if len(sharing) < 2:
                continue
            wanted = layout_of_type(type_name, variant=variant)
            if recorded in {lay.name for lay in sharing} and recorded != wanted.name:
                raise UsageError(f"--i2s-variant {variant}: the file records its layout as {recorded} "
                                 "(bitnet_pack.layout); reading it as the other variant scrambles the codes")
            if recorded is None:
                self.notes.append(f"read the {type_name} blocks as {wanted.name} because --i2s-variant says so: "
                                  "the file does not record its variant")

    def _kernel_config(self, path: Path | None) -> KernelConfig | None:
        """The TL tilings: the given file, else our metadata, else the sibling
        `<stem>.kernel_config.ini` that bitnet.cpp's converter and ours write beside the GGUF."""
        if path is not None:
            return read_kernel_config(path)
        text = self.file.get("bitnet_pack.kernel_config")
        if text:
            return parse_kernel_config(text, source=f"{self.path} (bitnet_pack.kernel_config)")
        sibling = sibling_path(self.path)
        if sibling.is_file() and any(self._tiled(i.type_name) for i in self.file.tensors.values()):
            self.notes.append(f"read the TL tilings from {sibling.name} beside the file")
            return read_kernel_config(sibling)
        return None

    def _projection_layout(self) -> str:
        kinds = {self._layout_name(info.type_name) for name, info in self.file.tensors.items()
                 if is_projection(self.family.to_hf(name))}
        return "+".join(sorted(kinds)) or "none"

    def _layout_of(self, type_name: str) -> Layout | None:
        """The registered layout this file's `type_name` tensors are in (None: not a layout type)."""
        return layout_of_type(type_name, variant=self.variant, recorded=self.file.get("bitnet_pack.layout"))

    def _layout_name(self, type_name: str) -> str:
        layout = self._layout_of(type_name)
        return type_name.lower() if layout is None else layout.name

    def _tiled(self, type_name: str) -> bool:
        layout = self._layout_of(type_name)
        return layout is not None and layout.spec.tiled

    @functools.cached_property
    def aux_files(self) -> dict[str, bytes]:
        """tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from the
        metadata, on first use (inspect, diff and verify never need them)."""
        files = {name: text.encode() for name, text in tokenizer_files_from_gguf(
            {k: self.file.get(k) for k in self.tokenizer_fields}).items()}
        generation = {k: self.config[k] for k in ("bos_token_id", "eos_token_id")}
        files["generation_config.json"] = (json.dumps(generation, indent=2) + "\n").encode()
        return files

    def entries(self) -> list[Entry]:
        entries = []
        for name, info in self.file.tensors.items():
            hf_name = self.family.to_hf(name)
            if is_projection(hf_name):
                entries.append(Entry(hf_name, info.shape, "linear", info.type_name, info.nbytes,
                                     lambda n=name: self._load_linear(n)))
            elif info.type_name in FLOAT_TYPES or is_lossy_float(info.type_name):
                entries.append(Entry(hf_name, info.shape, "tensor", info.type_name, info.nbytes,
                                     lambda n=name: self._load_tensor(n)))
            else:
                raise UnknownTensorType(f"{info.type_name} is not a float type and the tensor is not a projection",
                                        path=self.path, tensor=name)
        return entries

    def _load_tensor(self, name: str) -> Tensor:
        info = self.file.tensors[name]
        if is_lossy_float(info.type_name):
            rows = self.file.tensor_bytes(name).reshape(math.prod(info.shape[:-1]), -1)
            return DequantizedTensor(rows, info.type_name, info.shape, where=(self.path, name))
        dtype, storage = FLOAT_TYPES[info.type_name]
        return Tensor(dtype, self.file.tensor_bytes(name).view(storage).reshape(info.shape))

    def _load_linear(self, name: str) -> TernaryWeight:
        return self.family.gguf_weight(self.family.to_hf(name), self._decode_linear(name), self.config,
                                       to_gguf=False)

    def _decode_linear(self, name: str) -> TernaryWeight:
        info = self.file.tensors[name]
        if info.type_name in FLOAT_TYPES or is_lossy_float(info.type_name):
            values = self._load_tensor(name).f32()
            ternary = _ternary_from_float(values, name, self.path)
            # a latent family's float file holds -0.0 where the master was negative: keep it
            return LatentTernary.of(ternary, values, "F32") if self.family.float_dtype is None else ternary
        layout = self._layout_of(info.type_name)
        if layout is None:
            raise UnknownTensorType(f"{info.type_name} is neither a float type nor a registered layout's type",
                                    path=self.path, tensor=name)
        options = {"tiling": self._tiling(name)} if layout.spec.tiled else {}
        return layout.decode(self.file.tensor_bytes(name), info.shape, **options)

    def _tiling(self, name: str) -> KernelConfig:
        """The kernel config TL bytes were laid out with (it maps each shape to its tiling)."""
        if self.kernel_config is None:
            raise MissingFile(f"{self.file.tensors[name].type_name} bytes depend on the kernel tiling: pass "
                              "--kernel-config (the kernel_config.ini used to convert it), or put it beside the file "
                              f"as {sibling_path(self.path).name}", path=self.path, tensor=name)
        return self.kernel_config

    def stored(self, entry: Entry) -> StoredProjection | None:
        name = self.family.to_gguf(entry.name)
        info = self.file.tensors[name]
        layout = self._layout_of(info.type_name)
        if layout is None or self.family.permuted_heads(entry.name, self.config) is not None:
            return None  # q/k rows the llama arch stores permuted are decoded and put back in order
        tiling = None
        if layout.spec.tiled:
            tiling = self._tiling(name).tiling_for(tuple(info.shape), tensor=name)
        return StoredProjection(layout.name, self.file.tensor_bytes(name), tuple(info.shape), tiling=tiling)

    def release(self, entry: Entry) -> None:
        if not self.file.closed:
            fastpath.drop_mapped_pages(self.file.tensor_bytes(self.family.to_gguf(entry.name)))

    def close(self) -> None:
        self.file.close()


PER_TOKEN_KEYS = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")
SPECIAL_ID_KEYS = ("bos", "eos", "unknown", "seperator", "padding", "eot", "eom")  # llama.cpp's spelling


def check_vocab_arrays(fields: dict, vocab_size: object, path: Path) -> None:
    """Every per-token array has one entry per token, the token count is the vocabulary the
    metadata states, special ids are tokens, and merges are "left right" strings."""
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        return
    count = len(tokens.value)
    for key in PER_TOKEN_KEYS:
        if key in fields and len(fields[key].value) != count:
            raise FormatError(f"{key} has {len(fields[key].value)} entries for {count} tokens "
                              "(tokenizer.ggml.tokens)", path=path)
    if isinstance(vocab_size, int) and vocab_size != count:
        raise FormatError(f"the vocabulary is {vocab_size} (vocab_size) but tokenizer.ggml.tokens holds {count}",
                          path=path)
    for kind in SPECIAL_ID_KEYS:
        field = fields.get(f"tokenizer.ggml.{kind}_token_id")
        if field is not None and not (isinstance(field.value, int) and 0 <= field.value < count):
            raise FormatError(f"tokenizer.ggml.{kind}_token_id = {field.value!r} is not a token id below {count}",
                              path=path)
    merges = fields.get("tokenizer.ggml.merges")
    if merges is not None:
        bad = next((i for i, m in enumerate(merges.value) if not _is_merge(m)), None)
        if bad is not None:
            raise FormatError(f"tokenizer.ggml.merges[{bad}] = {merges.value[bad]!r} is not two tokens "
                              "separated by one space", path=path)


def _is_merge(merge: object) -> bool:
    text = merge.decode("utf-8", "replace") if isinstance(merge, (bytes, bytearray)) else merge
    return isinstance(text, str) and text.count(" ") == 1 and not text.startswith(" ") and not text.endswith(" ")


class DequantizedTensor(Tensor):
    """An F32 `Tensor` whose values gguf-py dequantizes from a ggml block type on demand: all
    at once for `data`, a chunk of rows at a time for `row_chunks` (so a Q8_0 embedding
    streams into a sink like an F16 one)."""

    def __init__(self, rows: np.ndarray, type_name: str, shape: tuple[int, ...], *, where: tuple[Path, str]):
        object.__setattr__(self, "dtype", "F32")
        object.__setattr__(self, "rows", rows)  # uint8 [rows, bytes per row], memory-mapped
        object.__setattr__(self, "qtype", GGMLQuantizationType[type_name])
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "where", where)

    @property
    def data(self) -> np.ndarray:
        return self._dequantize(self.rows).reshape(self.shape)

    def row_chunks(self, max_bytes: int | None = None) -> Iterator[Tensor]:
        row_bytes = 4 * self.shape[-1]
        step = max(1, (max_bytes or fastpath.CHUNK_BYTES) // row_bytes) if fastpath.streaming() else len(self.rows)
        for start in range(0, len(self.rows), step):
            part = self.rows[start:start + step]
            yield Tensor("F32", self._dequantize(part))
            fastpath.drop_mapped_pages(part)

    def _dequantize(self, rows: np.ndarray) -> np.ndarray:
        try:
            return np.ascontiguousarray(quants.dequantize(rows, self.qtype), dtype=np.float32)
        except NotImplementedError:
            raise UnknownTensorType(f"{self.qtype.name} has no dequantizer in the installed gguf-py; "
                                    "re-export the tensor as F16 or F32", path=self.where[0],
                                    tensor=self.where[1]) from None


def _ternary_from_float(values: np.ndarray, name: str, path: Path) -> TernaryWeight:
    """A float projection that holds t * beta exactly (our f16/f32 exports) back to ternary."""
    beta = np.float32(np.abs(values).max()) if values.size else np.float32(0)
    if not np.isfinite(beta):
        raise NonFiniteWeight(f"{int(np.count_nonzero(~np.isfinite(values)))} NaN/Inf values in a float projection",
                              path=path, tensor=name)
    if beta == 0:  # an all-zero projection (see ternary.ZERO_BETA)
        return TernaryWeight(np.zeros(values.shape, np.int8), ZERO_BETA)
    codes = values / beta
    if not np.array_equal(codes, np.rint(codes)):
        raise NotTernary("the float projection is not ternary x one scale; convert from the master checkpoint",
                         path=path, tensor=name)
    check_ternary(codes, tensor=name)
    return TernaryWeight(codes.astype(np.int8), beta)
