"""The tokenizer.* metadata of a GGUF output: rebuilt from tokenizer files for a
transformers source, carried over key by key (with types) for a GGUF source, with
`tokenizer.ggml.pre` renamed where the target spells it differently (Falcon-E's `falcon_e`
in bitnet.cpp is `falcon-h1` in llama.cpp, and each refuses the other's name)."""
from __future__ import annotations

from gguf import GGUFValueType

from ..checkpoints import Checkpoint
from ..containers.gguf import KVField
from ..gguf_meta import Target
from ..tokenizer import T, gguf_tokenizer_metadata
from ..tokenizer_pre import runtime_name

TOKENIZER_PREFIX = "tokenizer."


def tokenizer_kvs(source: Checkpoint, target: Target) -> list[tuple]:
    """(key, value[, vtype, subtype]) tuples for GGUFWriter.add_kv."""
    carried = getattr(source, "tokenizer_fields", None)
    if carried is not None:
        return [(key, _as_target_spells(key, field, target.name)) for key, field in carried.items()]
    return gguf_tokenizer_metadata(source.path, source.config, target=target.name)


def _as_target_spells(key: str, field: KVField, target: str) -> KVField:
    if key != T.PRE or field.vtype != GGUFValueType.STRING:
        return field
    return KVField(runtime_name(field.value, target), field.vtype)
