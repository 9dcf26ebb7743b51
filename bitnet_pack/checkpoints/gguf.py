"""GGUF files in: ours, bitnet.cpp's official I2_S/TL files, and llama.cpp's TQ files.

Projections are decoded from their layout back to ternary codes and beta; everything else is
yielded as stored (F32 norms, F16 embedding). The config and the tokenizer files are rebuilt
from the metadata, so a GGUF converts back into a transformers checkpoint.

Which layout a tensor is in follows from its type id, read with the right runtime's table
(see `GGUFFile` flavours). Two things the bytes alone cannot say are taken from our own
`bitnet_pack.*` keys when present, else from options: the I2_S block variant (x86 128/32 or
ARM 64/16; official files are x86) and the TL tilings (a kernel_config.ini).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .. import fastpath
from ..containers.gguf import GGUFFile
from ..errors import MissingFile, NotTernary, UnknownTensorType
from ..gguf_meta import config_from_kvs
from ..kernel_config import KernelConfig, parse_kernel_config, read_kernel_config
from ..layouts import get_layout
from ..names import to_gguf, to_hf
from ..ternary import TernaryWeight, check_ternary
from ..tokenizer_reverse import tokenizer_files_from_gguf
from . import Checkpoint, Entry, StoredProjection, Tensor, is_projection

FLOAT_TYPES = {"F32": ("F32", "<f4"), "F16": ("F16", "<f2"), "BF16": ("BF16", "<u2")}
LAYOUT_OF_TYPE = {"I2_S": "i2_s", "TL1": "tl1", "TL2": "tl2", "TQ1_0": "tq1_0", "TQ2_0": "tq2_0"}


class GGUFCheckpoint(Checkpoint):
    kind = "gguf"

    def __init__(self, path: Path, *, flavour: str | None = "auto", i2s_variant: str | None = None,
                 kernel_config: Path | None = None, **_ignored: object):
        self.path = Path(path)
        self.file = GGUFFile(self.path, flavour=flavour)
        self.config = config_from_kvs(self.file.get, self.file.architecture or "")
        self.tokenizer_fields = {k: f for k, f in self.file.kv.items() if k.startswith("tokenizer.")}
        self.notes = [f"read GGUF arch {self.file.architecture!r} with "
                      f"{'mainline' if self.types_flavour is None else 'bitnet.cpp ' + self.types_flavour} type ids"]
        self.i2s_layout = self._i2s_layout(i2s_variant)
        self.kernel_config = self._kernel_config(kernel_config)
        self.layout = self._projection_layout()

    @property
    def types_flavour(self) -> str | None:
        return self.file.types.flavour

    def _i2s_layout(self, variant: str | None) -> str:
        recorded = self.file.get("bitnet_pack.layout")
        if variant is not None:
            return "i2_s_arm" if variant == "arm" else "i2_s"
        return "i2_s_arm" if recorded == "i2_s_arm" else "i2_s"

    def _kernel_config(self, path: Path | None) -> KernelConfig | None:
        if path is not None:
            return read_kernel_config(path)
        text = self.file.get("bitnet_pack.kernel_config")
        return parse_kernel_config(text, source=f"{self.path} (bitnet_pack.kernel_config)") if text else None

    def _projection_layout(self) -> str:
        kinds = {self._layout_of(info.type_name) for name, info in self.file.tensors.items()
                 if is_projection(to_hf(name))}
        return "+".join(sorted(kinds)) or "none"

    def _layout_of(self, type_name: str) -> str:
        if type_name == "I2_S":
            return self.i2s_layout
        return LAYOUT_OF_TYPE.get(type_name, type_name.lower())

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
            hf_name = to_hf(name)
            if is_projection(hf_name):
                entries.append(Entry(hf_name, info.shape, "linear", info.type_name, info.nbytes,
                                     lambda n=name: self._load_linear(n)))
            elif info.type_name in FLOAT_TYPES:
                entries.append(Entry(hf_name, info.shape, "tensor", info.type_name, info.nbytes,
                                     lambda n=name: self._load_tensor(n)))
            else:
                raise UnknownTensorType(f"{info.type_name} is not a float type and the tensor is not a projection",
                                        path=self.path, tensor=name)
        return entries

    def _load_tensor(self, name: str) -> Tensor:
        info = self.file.tensors[name]
        dtype, storage = FLOAT_TYPES[info.type_name]
        return Tensor(dtype, self.file.tensor_bytes(name).view(storage).reshape(info.shape))

    def _load_linear(self, name: str) -> TernaryWeight:
        info = self.file.tensors[name]
        if info.type_name in FLOAT_TYPES:
            return _ternary_from_float(self._load_tensor(name).f32(), name, self.path)
        layout = get_layout(self._layout_of(info.type_name))
        options = {"tiling": self._tiling(name)} if info.type_name in ("TL1", "TL2") else {}
        return layout.decode(self.file.tensor_bytes(name), info.shape, **options)

    def _tiling(self, name: str) -> KernelConfig:
        """The kernel config TL bytes were laid out with (it maps each shape to its tiling)."""
        if self.kernel_config is None:
            raise MissingFile(f"{self.file.tensors[name].type_name} bytes depend on the kernel tiling: pass "
                              "--kernel-config (the kernel_config.ini used to convert it)", path=self.path, tensor=name)
        return self.kernel_config

    def stored(self, entry: Entry) -> StoredProjection | None:
        name = to_gguf(entry.name)
        info = self.file.tensors[name]
        if info.type_name not in LAYOUT_OF_TYPE:
            return None
        tiling = None
        if info.type_name in ("TL1", "TL2"):
            tiling = self._tiling(name).tiling_for(tuple(info.shape), tensor=name)
        return StoredProjection(self._layout_of(info.type_name), self.file.tensor_bytes(name), tuple(info.shape),
                                tiling=tiling)

    def release(self, entry: Entry) -> None:
        if not self.file.closed:
            fastpath.drop_mapped_pages(self.file.tensor_bytes(to_gguf(entry.name)))

    def close(self) -> None:
        self.file.close()


def _ternary_from_float(values: np.ndarray, name: str, path: Path) -> TernaryWeight:
    """A float projection that holds t * beta exactly (our f16/f32 exports) back to ternary."""
    beta = np.float32(np.abs(values).max()) if values.size else np.float32(0)
    if beta == 0:
        return TernaryWeight(np.zeros(values.shape, np.int8), np.float32(0))
    codes = values / beta
    if not np.array_equal(codes, np.rint(codes)):
        raise NotTernary("the float projection is not ternary x one scale; convert from the master checkpoint",
                         path=path, tensor=name)
    check_ternary(codes, tensor=name)
    return TernaryWeight(codes.astype(np.int8), beta)
