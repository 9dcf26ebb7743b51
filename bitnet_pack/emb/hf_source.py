"""A BitNet embedding model as transformers stores it: bf16 latent weights, config.json, the
tokenizer and the sentence-transformers files (modules.json, 1_Pooling/config.json)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..arch import EMBEDDING_FAMILIES, family_of_config, is_projection
from ..checkpoints import Tensor
from ..containers.shards import SafetensorsDir
from ..errors import HeaderInvalid, MissingFile, UnknownArchitecture
from ..validate import check_sizes
from .source import (
    DROPPED_SUFFIXES,
    EmbSource,
    EmbTensor,
    check_complete,
    checked_projection,
    hf_name,
    is_native_gemma_norm,
    read_pooling,
)


class HFEmbSource(EmbSource):
    kind = "hf"

    def __init__(self, directory: Path):
        self.path = Path(directory)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise MissingFile("config.json is missing: is this a transformers checkpoint?", path=self.path)
        try:
            self.config = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise HeaderInvalid(f"config.json is not valid JSON ({exc})", path=config_path) from None
        self.family = family_of_config(self.config)
        if self.family not in EMBEDDING_FAMILIES:
            raise UnknownArchitecture(f"{self.family.title} is not an embedding family", path=config_path)
        check_sizes(self.config, where=config_path)
        self.files = SafetensorsDir(self.path)
        self.pooling, pooling_note = read_pooling(self.path)
        self.notes = [f"family {self.family.name}: {self.family.title}", pooling_note]
        self.tensors = self._tensors()
        dtypes = sorted({t.stored for t in self.tensors if t.kind == "linear"})
        self.layout = "+".join(d.lower() for d in dtypes) or "none"

    def _tensors(self) -> list[EmbTensor]:
        """In the converter's order: files sorted by name, each file's names sorted."""
        order = sorted(self.files.where, key=lambda n: (str(self.files.where[n][0].path), n))
        tensors, unmapped = [], []
        for name in order:
            if name.endswith(DROPPED_SUFFIXES):
                continue
            full = hf_name(self.family, name)
            try:
                gguf = self.family.to_gguf(full)
            except UnknownArchitecture:
                unmapped.append(name)
                continue
            info = self.files.info(name)
            checked_projection(self.family, full, info.shape, self.path)
            tensors.append(EmbTensor(gguf, full, tuple(info.shape), info.dtype,
                                     lambda n=name, g=gguf: self._load(n, g)))
        if unmapped:
            self.notes.append(f"skipped {len(unmapped)} tensors the converter has no name for, e.g. {unmapped[0]!r}")
        check_complete(self.family, self.config, {t.hf for t in tensors}, self.path)
        return tensors

    def _load(self, name: str, gguf: str) -> np.ndarray:
        info = self.files.info(name)
        values = Tensor(info.dtype, self.files.raw(name)).f32().reshape(info.shape)
        if is_native_gemma_norm(self.family, gguf):
            values = values + np.float32(1.0)  # float32 addition, as the converter
        return values

    def is_latent(self, tensor: EmbTensor) -> bool:
        return is_projection(tensor.hf)

    @property
    def aux_dir(self) -> Path:
        return self.path

    def close(self) -> None:
        self.files.close()

    def gguf_name(self) -> str:
        """general.name: the converter writes the model folder's name."""
        return self.path.resolve().name

    def tokenizer_kvs(self) -> list[tuple]:
        from .vocab import tokenizer_kvs

        return tokenizer_kvs(self.path, self.config, self.family.gguf_arch("bitnet.cpp"))
