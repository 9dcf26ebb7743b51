"""A BitNet embedding GGUF (the converter's f32 / f16 / i2_s files, or ours) read back:
hyperparameters into a transformers config, pooling_type, tokenizer keys carried as they are,
and tensors in file order (I2_S projections as ternary, with their bytes for the kernel)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...containers.gguf import GGUFFile
from ...errors import BitnetPackError, FormatError, UnknownArchitecture, UnknownTensorType
from ...families.arch import EMB_GEMMA3, EMBEDDING_FAMILIES, family_of_gguf, is_projection
from ...families.gguf_meta import ROPE_SCALING_PARTS, check_tokenizer_kvs, unscaled
from ...families.validate import check_sizes
from ...formats.layouts import get_layout
from . import StoredProjection
from .embedding import EmbSource, EmbTensor, check_complete, float_tensor

CONFIG_KEYS = (("block_count", "num_hidden_layers"), ("context_length", "max_position_embeddings"),
               ("embedding_length", "hidden_size"), ("feed_forward_length", "intermediate_size"),
               ("attention.head_count", "num_attention_heads"), ("attention.head_count_kv", "num_key_value_heads"),
               ("vocab_size", "vocab_size"), ("attention.key_length", "head_dim"), ("rope.freq_base", "rope_theta"),
               ("attention.layer_norm_rms_epsilon", "rms_norm_eps"))


class GGUFEmbSource(EmbSource):
    kind = "gguf"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = GGUFFile(self.path, flavour="2025")
        try:
            arch = self.file.architecture or ""
            check_tokenizer_kvs(self.file.kv)
            self.family = family_of_gguf(arch, self.file.get)
            if self.family not in EMBEDDING_FAMILIES:
                raise UnknownArchitecture(f"GGUF arch {arch!r} is not a BitNet embedding model")
            self.config = self._config(arch)
            self.pooling = int(self.file.get(f"{arch}.pooling_type", 0))
            self.tensors = self._tensors()
            check_complete(self.family, self.config, {t.hf for t in self.tensors}, self.path)
        except BitnetPackError as exc:
            self.file.close()
            if exc.path is None:
                raise type(exc)(str(exc), path=self.path, tensor=exc.tensor) from None
            raise
        types = sorted({t.stored for t in self.tensors if t.kind == "linear"})
        self.layout = "+".join(t.lower() for t in types) or "none"
        self.notes = [f"family {self.family.name}: {self.family.title}", f"read GGUF arch {arch!r}"]

    def _config(self, arch: str) -> dict:
        config = dict(self.family.identity)
        for key, hf in CONFIG_KEYS:
            value = self.file.get(f"{arch}.{key}")
            if value is not None:
                config[hf] = value
        missing = [hf for _, hf in CONFIG_KEYS[:7] if hf not in config]
        if missing:
            raise FormatError(f"the GGUF lacks the hyperparameters {missing}")
        check_sizes(config, origin="GGUF metadata")  # typed, positive: block_count is bounded by the tensors later
        scaling = {part: self.file.get(f"{arch}.rope.scaling.{part}") for part in ROPE_SCALING_PARTS}
        if not unscaled(scaling):  # the runtime path here has no scaled RoPE: refused, never dropped
            raise FormatError(f"GGUF metadata rope scaling {({k: v for k, v in scaling.items() if v is not None})!r} "
                              "is not supported (only unscaled RoPE)")
        config.setdefault("num_key_value_heads", config["num_attention_heads"])
        config["tie_word_embeddings"] = True
        config["hidden_act" if self.family is not EMB_GEMMA3 else "hidden_activation"] = (
            "silu" if self.family is not EMB_GEMMA3 else "gelu_pytorch_tanh")
        if self.family is EMB_GEMMA3:  # what the runtime hard-codes: 1/sqrt(head_dim), every layer global
            config["query_pre_attn_scalar"] = config.get("head_dim") or config["hidden_size"] // config[
                "num_attention_heads"]
        for kind in ("bos", "eos", "padding", "unknown"):
            value = self.file.get(f"tokenizer.ggml.{kind}_token_id")
            if isinstance(value, int) and value < config["vocab_size"]:  # not qwen3's forced EOS 151643
                config[{"padding": "pad", "unknown": "unk"}.get(kind, kind) + "_token_id"] = value
        config.pop("unk_token_id", None)
        return config

    def _tensors(self) -> list[EmbTensor]:
        tensors = []
        for name, info in self.file.tensors.items():
            hf = self.family.to_hf(name)
            if is_projection(hf) and info.type_name == "I2_S":
                tensors.append(EmbTensor(name, hf, info.shape, "I2_S", lambda n=name: self._ternary(n),
                                         lambda n=name: self._stored(n)))
            elif info.type_name in ("F32", "F16", "BF16"):
                tensors.append(EmbTensor(name, hf, info.shape, info.type_name, lambda n=name: self._float(n)))
            else:
                raise UnknownTensorType(f"{info.type_name} is not I2_S, F16 or F32", tensor=name)
        return tensors

    def _float(self, name: str) -> np.ndarray:
        info = self.file.tensors[name]
        storage = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}[info.type_name]
        return float_tensor(info.type_name, self.file.tensor_bytes(name).view(storage), info.shape, tensor=name,
                            path=self.path)

    def _ternary(self, name: str):
        info = self.file.tensors[name]
        return get_layout("i2_s").decode(self.file.tensor_bytes(name), info.shape)

    def _stored(self, name: str) -> StoredProjection:
        info = self.file.tensors[name]
        return StoredProjection("i2_s", self.file.tensor_bytes(name), tuple(info.shape))

    def gguf_name(self) -> str:
        name = self.file.get("general.name")
        usable = isinstance(name, str) and name.strip() and name.isprintable()
        return name if usable else self.path.stem  # a NUL or control character is not a name

    def tokenizer_kvs(self) -> list[tuple]:
        return [(key, field.value, field.vtype, field.subtype) for key, field in self.file.kv.items()
                if key.startswith("tokenizer.")]

    def close(self) -> None:
        self.file.close()
