"""The tokenizer.* metadata of a GGUF output: rebuilt from tokenizer files for a
transformers source, carried over key by key (with types) for a GGUF source, with
`tokenizer.ggml.pre` renamed where the target spells it differently (Falcon-E's `falcon_e`
in bitnet.cpp is `falcon-h1` in llama.cpp, and each refuses the other's name). A gpt2
vocabulary without `tokenizer.ggml.pre` (bitnet.cpp's 2B4T converter writes none, so its
loaders split with the "default" regexes) gets `llama-bpe`, as a conversion from the
checkpoint writes and as `tokenizer.json` is rebuilt from such a file."""
from __future__ import annotations

from gguf import GGUFValueType

from ...containers.gguf import KVField
from ...families.gguf_meta import Target
from ...families.tokenizers.metadata import T, gguf_tokenizer_metadata
from ...families.tokenizers.pre import runtime_name
from ..sources import Checkpoint

TOKENIZER_PREFIX = "tokenizer."


def tokenizer_kvs(source: Checkpoint, target: Target) -> list[tuple]:
    """(key, value[, vtype, subtype]) tuples for GGUFWriter.add_kv."""
    carried = getattr(source, "tokenizer_fields", None)
    if carried is None:
        return gguf_tokenizer_metadata(source.path, source.config, target=target.name)
    out = []
    for key, field in carried.items():
        out.append((key, _as_target_spells(key, field, target.name)))
        if key == T.MODEL and field.value == "gpt2" and T.PRE not in carried:
            out.append((T.PRE, KVField(runtime_name("llama3", target.name), GGUFValueType.STRING)))
    return out


def _as_target_spells(key: str, field: KVField, target: str) -> KVField:
    if key != T.PRE or field.vtype != GGUFValueType.STRING:
        return field
    return KVField(runtime_name(field.value, target), field.vtype)
