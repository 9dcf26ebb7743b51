"""The tokenizer.* metadata of a GGUF output: rebuilt from tokenizer files for a
transformers source, carried over key by key (with types) for a GGUF source."""
from __future__ import annotations

from ..checkpoints import Checkpoint
from ..gguf_meta import Target
from ..tokenizer import gguf_tokenizer_metadata

TOKENIZER_PREFIX = "tokenizer."


def tokenizer_kvs(source: Checkpoint, target: Target) -> list[tuple]:
    """(key, value[, vtype, subtype]) tuples for GGUFWriter.add_kv."""
    carried = getattr(source, "tokenizer_fields", None)
    if carried is not None:
        return [(key, field) for key, field in carried.items()]
    return gguf_tokenizer_metadata(source.path, source.config, target=target.name)
