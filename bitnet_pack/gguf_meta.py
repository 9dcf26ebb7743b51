"""Hyperparameter metadata: transformers config.json <-> GGUF keys, per target runtime.

    target       general.architecture   extra keys
    bitnet.cpp   bitnet-b1.58            (its loader also accepts bitnet-25)
    llama.cpp    bitnet                  bitnet.hidden_activation = "relu2"

Both loaders default rope.freq_base to 10000, so it is always written (2B4T uses 500000).
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGUFValueType as VT

from .errors import HeaderInvalid, MissingFile, UnknownArchitecture, UsageError

BITNET_CPP_ARCHS = ("bitnet-b1.58", "bitnet-25")
MAINLINE_ARCH = "bitnet"


@dataclass(frozen=True)
class Target:
    name: str  # "bitnet.cpp" or "llama.cpp"
    arch: str
    flavour: str | None  # type-id table: "2025"/"2026" for bitnet.cpp, None for mainline

    @property
    def is_bitnet_cpp(self) -> bool:
        return self.name == "bitnet.cpp"


def make_target(name: str, *, arch: str | None = None, type_ids: str = "2025") -> Target:
    if name == "bitnet.cpp":
        chosen = arch or BITNET_CPP_ARCHS[0]
        if chosen not in BITNET_CPP_ARCHS:
            raise UsageError(f"bitnet.cpp loads arch {' or '.join(BITNET_CPP_ARCHS)}, not {chosen!r}")
        return Target(name, chosen, type_ids)
    if name == "llama.cpp":
        if arch not in (None, MAINLINE_ARCH):
            raise UsageError(f"mainline llama.cpp loads arch {MAINLINE_ARCH!r}, not {arch!r}")
        return Target(name, MAINLINE_ARCH, None)
    raise UsageError(f"unknown target {name!r}: bitnet.cpp or llama.cpp")


def _need(config: dict, key: str) -> object:
    if key not in config:
        raise MissingFile(f"config.json has no {key!r}, which the GGUF loaders require")
    return config[key]


def rope_theta(config: dict) -> float:
    """Top-level rope_theta (2B4T's config), or transformers 5's rope_parameters."""
    if "rope_theta" in config:
        return float(config["rope_theta"])
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0))


def hparam_kvs(config: dict, target: Target) -> list[tuple[str, object, VT]]:
    """The `{arch}.*` keys, in the order bitnet.cpp's converter writes them."""
    arch = target.arch
    hidden, heads = int(_need(config, "hidden_size")), int(_need(config, "num_attention_heads"))
    head_dim = int(config.get("head_dim") or hidden // heads)
    kvs = [
        (f"{arch}.vocab_size", int(_need(config, "vocab_size")), VT.UINT32),
        (f"{arch}.context_length", int(config.get("max_position_embeddings", 4096)), VT.UINT32),
        (f"{arch}.embedding_length", hidden, VT.UINT32),
        (f"{arch}.block_count", int(_need(config, "num_hidden_layers")), VT.UINT32),
        (f"{arch}.feed_forward_length", int(_need(config, "intermediate_size")), VT.UINT32),
        (f"{arch}.rope.dimension_count", head_dim, VT.UINT32),
        (f"{arch}.attention.head_count", heads, VT.UINT32),
        (f"{arch}.attention.head_count_kv", int(config.get("num_key_value_heads") or heads), VT.UINT32),
        (f"{arch}.attention.layer_norm_rms_epsilon", float(config.get("rms_norm_eps", 1e-5)), VT.FLOAT32),
        (f"{arch}.rope.freq_base", rope_theta(config), VT.FLOAT32),
        # both runtimes' converters write this no-op scaling for BitNet
        (f"{arch}.rope.scaling.type", "linear", VT.STRING),
        (f"{arch}.rope.scaling.factor", 1.0, VT.FLOAT32),
    ]
    if not target.is_bitnet_cpp:
        kvs.append((f"{arch}.hidden_activation", str(config.get("hidden_act", "relu2")), VT.STRING))
    return kvs


def config_from_kvs(get, arch: str) -> dict:
    """Rebuild a transformers config.json from GGUF metadata (`get(key, default)`)."""
    if arch not in BITNET_CPP_ARCHS + (MAINLINE_ARCH,):
        raise UnknownArchitecture(f"GGUF architecture {arch!r} is not BitNet b1.58 "
                                  f"({', '.join(BITNET_CPP_ARCHS + (MAINLINE_ARCH,))})")

    def key(name: str, default: object = None) -> object:
        value = get(f"{arch}.{name}", default)
        if value is None:
            raise MissingFile(f"GGUF metadata has no {arch}.{name}")
        return value

    def count(name: str, default: object = None) -> int:  # a crafted file may hold 0, -1 or a string
        value = key(name) if default is None else get(f"{arch}.{name}", default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HeaderInvalid(f"GGUF metadata {arch}.{name} must be a positive integer, got {value!r}")
        return value

    def number(name: str, default: object = None) -> float:
        value = key(name) if default is None else get(f"{arch}.{name}", default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HeaderInvalid(f"GGUF metadata {arch}.{name} must be a number, got {value!r}")
        return _clean_float(value)

    heads = count("attention.head_count")
    hidden = count("embedding_length")
    config = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": get("tokenizer.ggml.bos_token_id", 128000),
        "eos_token_id": get("tokenizer.ggml.eos_token_id", 128001), "hidden_act": get(f"{arch}.hidden_activation", "relu2"),
        "hidden_size": hidden, "intermediate_size": count("feed_forward_length"), "initializer_range": 0.02,
        "max_position_embeddings": count("context_length"), "num_attention_heads": heads,
        "num_hidden_layers": count("block_count"),
        "num_key_value_heads": count("attention.head_count_kv", heads),
        "rms_norm_eps": number("attention.layer_norm_rms_epsilon"),
        "rope_theta": number("rope.freq_base", 10000.0),
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": count("vocab_size", len(get("tokenizer.ggml.tokens", None) or [])),
    }
    head_dim = get(f"{arch}.rope.dimension_count")
    if head_dim is not None and count("rope.dimension_count") != hidden // heads:
        config["head_dim"] = int(head_dim)
    return config


def _clean_float(value: object) -> float:
    """float32 metadata (9.999999747378752e-06) back to the decimal it came from (1e-05)."""
    return float(f"{float(value):.7g}")
