"""A BitNet embedding model as transformers stores it: bf16 latent weights, config.json, the
tokenizer and the sentence-transformers files (modules.json, 1_Pooling/config.json); or the
packed form (hf_out.py: uint8 projections, weight_scale = beta, `<proj>.rms_norm.weight`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...containers.shards import SafetensorsDir
from ...errors import (
    BitnetPackError,
    HeaderInvalid,
    MissingFile,
    ShapeError,
    UnknownArchitecture,
    UnknownTensorType,
)
from ...families.arch import EMBEDDING_FAMILIES, family_of_config, is_projection
from ...families.validate import check_rope, check_sizes
from ...formats.layouts import get_layout
from . import Tensor
from .embedding import (
    DROPPED_SUFFIXES,
    EmbSource,
    EmbTensor,
    check_complete,
    checked_projection,
    hf_name,
    is_native_gemma_norm,
    read_json_file,
    read_pooling,
)

FLOAT_DTYPES = ("BF16", "F16", "F32")
LINEAR_CLASSES = {"bitlinear": True, "autobitlinear": False}  # weight_scale is 1/beta (divided by), or beta


class HFEmbSource(EmbSource):
    kind = "hf"

    def __init__(self, directory: Path):
        self.path = Path(directory)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise MissingFile("config.json is missing: is this a transformers checkpoint?", path=self.path)
        self.config = read_json_file(config_path)
        if not isinstance(self.config, dict):
            raise HeaderInvalid(f"config.json holds a JSON {type(self.config).__name__}, not an object",
                                path=config_path)
        try:
            self.family = family_of_config(self.config)
        except BitnetPackError as exc:
            raise type(exc)(str(exc), path=config_path) from None
        if self.family not in EMBEDDING_FAMILIES:
            raise UnknownArchitecture(f"{self.family.title} is not an embedding family", path=config_path)
        check_sizes(self.config, where=config_path)
        check_rope(self.config, where=config_path)
        qc = self.config.get("quantization_config") or {}
        self.packed = qc.get("quant_method") == "bitnet" and qc.get("quantization_mode", "offline") == "offline"
        linear_class = qc.get("linear_class", "bitlinear")
        if self.packed and linear_class not in LINEAR_CLASSES:  # it decides beta or 1/beta
            raise HeaderInvalid(f"config.json quantization_config linear_class {linear_class!r} is not "
                                "'bitlinear' (weight_scale = 1/beta) or 'autobitlinear' (beta)", path=config_path)
        self.inverse_scale = LINEAR_CLASSES.get(linear_class, True)  # BitLinear divides by it
        self.files = SafetensorsDir(self.path)
        self.pooling, pooling_note = read_pooling(self.path)
        self.notes = [f"family {self.family.name}: {self.family.title}", pooling_note]
        self.tensors = self._tensors()
        dtypes = sorted({"hf" if t.stored == "U8" else t.stored.lower() for t in self.tensors if t.kind == "linear"})
        self.layout = "+".join(dtypes) or "none"

    def _tensors(self) -> list[EmbTensor]:
        """In the converter's order: files sorted by name, each file's names sorted."""
        order = sorted(self.files.where, key=lambda n: (str(self.files.where[n][0].path), n))
        tensors, unmapped = [], []
        for name in order:
            if name.endswith(DROPPED_SUFFIXES) or (self.packed and name.endswith(".weight_scale")):
                continue
            full = hf_name(self.family, name).replace(".rms_norm.weight", ".norm.weight")
            try:
                gguf = self.family.to_gguf(full)
            except UnknownArchitecture:
                unmapped.append(name)
                continue
            info = self.files.info(name)
            if info.dtype == "U8" and is_projection(full):
                shape = self._packed_shape(full, info.shape)
                tensors.append(EmbTensor(gguf, full, shape, "U8", lambda n=name, s=shape: self._load_packed(n, s)))
                continue
            checked_projection(self.family, full, info.shape, self.path)
            tensors.append(EmbTensor(gguf, full, tuple(info.shape), info.dtype,
                                     lambda n=name, g=gguf: self._load(n, g)))
        if unmapped:
            self.notes.append(f"skipped {len(unmapped)} tensors the converter has no name for, e.g. {unmapped[0]!r}")
        check_complete(self.family, self.config, {t.hf for t in tensors}, self.path)
        return tensors

    def _load(self, name: str, gguf: str) -> np.ndarray:
        info = self.files.info(name)
        if info.dtype not in FLOAT_DTYPES:
            raise UnknownTensorType(f"{info.dtype} is not a float dtype ({', '.join(FLOAT_DTYPES)})", path=self.path,
                                    tensor=name)
        values = Tensor(info.dtype, self.files.raw(name)).check_finite(tensor=name, path=self.path).f32()
        values = values.reshape(info.shape)
        if is_native_gemma_norm(self.family, gguf):
            values = values + np.float32(1.0)  # float32 addition, as the converter
        return values

    def _packed_shape(self, full: str, stored: tuple[int, ...]) -> tuple[int, int]:
        from ...families.arch import out_features

        out = out_features(self.config, full)
        if not self.packed or len(stored) != 2 or -(-out // 4) != stored[0]:
            raise ShapeError(f"packed rows {list(stored)} do not match out_features {out} of a packed "
                             "quantization_config", path=self.path, tensor=full)
        return (out, int(stored[1]))

    def _load_packed(self, name: str, shape: tuple[int, int]):
        scale_name = name + "_scale"
        if scale_name not in self.files.where:
            raise MissingFile(f"packed projection has no {scale_name!r}", path=self.path, tensor=name)
        info = self.files.info(scale_name)
        if info.dtype not in FLOAT_DTYPES:
            raise UnknownTensorType(f"weight_scale is {info.dtype}, not a float dtype ({', '.join(FLOAT_DTYPES)})",
                                    path=self.path, tensor=scale_name)
        stored = Tensor(info.dtype, self.files.raw(scale_name)).f32().reshape(-1)
        if stored.size != 1 or not (np.isfinite(stored[0]) and stored[0] > 0):
            raise ShapeError(f"weight_scale must be one finite value > 0, got {stored.tolist()[:4]}", path=self.path,
                             tensor=scale_name)
        beta = np.float32(1) / stored[0] if self.inverse_scale else stored[0]
        return get_layout("hf").decode(self.files.raw(name), shape, beta=beta)

    @property
    def aux_dir(self) -> Path:
        return self.path

    def close(self) -> None:
        self.files.close()

    def gguf_name(self) -> str:
        """general.name: the converter writes the model folder's name."""
        return self.path.resolve().name

    def tokenizer_kvs(self) -> list[tuple]:
        from ...families.tokenizers.embedding_vocab import tokenizer_kvs

        return tokenizer_kvs(self.path, self.config, self.family.gguf_arch("bitnet.cpp"))
