"""Hyperparameter metadata: transformers config.json <-> GGUF keys, per family and target.

    family   target       general.architecture   extra keys
    2b4t     bitnet.cpp   bitnet-b1.58            (its loader also accepts bitnet-25)
    2b4t     llama.cpp    bitnet                  bitnet.hidden_activation = "relu2"
    1bitllm  both         bitnet
    llama    both         llama                   no rope.scaling (as both converters write it)

Both loaders default rope.freq_base to 10000, so it is always written (2B4T uses 500000).
"""
from __future__ import annotations

from dataclasses import dataclass

from gguf import GGUFValueType as VT

from ..errors import HeaderInvalid, MissingFile, UsageError
from .arch import BITNET_2B4T, LLAMA_BITNET, Family, family_of_gguf

BITNET_CPP_ARCHS = BITNET_2B4T.gguf_archs["bitnet.cpp"]
MAINLINE_ARCH = "bitnet"
TARGETS = ("bitnet.cpp", "llama.cpp")


@dataclass(frozen=True)
class Target:
    name: str  # "bitnet.cpp" or "llama.cpp"
    arch: str
    flavour: str | None  # type-id table: "2025"/"2026" for bitnet.cpp, None for mainline

    @property
    def is_bitnet_cpp(self) -> bool:
        return self.name == "bitnet.cpp"


def make_target(name: str, *, arch: str | None = None, type_ids: str = "2025",
                family: Family = BITNET_2B4T) -> Target:
    """The runtime `name` and the GGUF arch it loads for `family` (`arch` picks among them)."""
    if name not in TARGETS:
        raise UsageError(f"unknown target {name!r}: bitnet.cpp or llama.cpp")
    allowed = family.gguf_archs[name]
    chosen = arch or allowed[0]
    if chosen not in allowed:
        raise UsageError(f"{name} loads a {family.title} model as arch {' or '.join(allowed)}, not {chosen!r}")
    return Target(name, chosen, type_ids if name == "bitnet.cpp" else None)


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


def hparam_kvs(config: dict, target: Target, family: Family = BITNET_2B4T) -> list[tuple[str, object, VT]]:
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
    ]
    if family is not LLAMA_BITNET:  # both runtimes' converters write this no-op scaling for BitNet
        kvs += [(f"{arch}.rope.scaling.type", "linear", VT.STRING), (f"{arch}.rope.scaling.factor", 1.0, VT.FLOAT32)]
    if family is BITNET_2B4T and not target.is_bitnet_cpp:
        kvs.append((f"{arch}.hidden_activation", str(config.get("hidden_act", "relu2")), VT.STRING))
    return kvs


# llama.cpp's types of the tokenizer keys (its loader refuses others): (vtype, element type)
TOKENIZER_TYPES = {
    "tokenizer.ggml.model": (VT.STRING, None), "tokenizer.ggml.pre": (VT.STRING, None),
    "tokenizer.ggml.tokens": (VT.ARRAY, VT.STRING), "tokenizer.ggml.merges": (VT.ARRAY, VT.STRING),
    "tokenizer.ggml.scores": (VT.ARRAY, VT.FLOAT32), "tokenizer.ggml.token_type": (VT.ARRAY, VT.INT32),
    "tokenizer.ggml.add_bos_token": (VT.BOOL, None), "tokenizer.ggml.add_eos_token": (VT.BOOL, None),
    "tokenizer.ggml.add_space_prefix": (VT.BOOL, None), "tokenizer.chat_template": (VT.STRING, None),
}
_ID_TYPES = (VT.UINT32, VT.INT32)  # the *_token_id keys: uint32 (some writers use int32)


def check_tokenizer_kvs(kv: dict, path: object = None) -> None:
    """Each known tokenizer key has the type llama.cpp reads it as: a wrongly typed one is
    refused here rather than crash a reader or be copied into an output."""
    for key, field in kv.items():
        if not key.startswith("tokenizer."):
            continue
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            wanted = [(t, None) for t in _ID_TYPES]
        elif key in TOKENIZER_TYPES:
            wanted = [TOKENIZER_TYPES[key]]
        else:
            continue
        if (field.vtype, field.subtype if field.vtype == VT.ARRAY else None) not in wanted:
            have = field.vtype.name + (f" of {field.subtype.name}" if field.vtype == VT.ARRAY else "")
            want = " or ".join(t.name + (f" of {sub.name}" if sub is not None else "") for t, sub in wanted)
            raise HeaderInvalid(f"GGUF metadata {key} is {have}, expected {want}", path=path)


def config_from_kvs(get, arch: str, *, has_output: bool = False) -> dict:
    """Rebuild a transformers config.json from GGUF metadata (`get(key, default)`), in the
    convention of the file's family; `has_output`: the file holds an `output.weight`."""
    family = family_of_gguf(arch, get)

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
        **family.identity, "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": get("tokenizer.ggml.bos_token_id", 128000),
        "eos_token_id": get("tokenizer.ggml.eos_token_id", 128001),
        "hidden_act": get(f"{arch}.hidden_activation", family.hidden_act),
        "hidden_size": hidden, "intermediate_size": count("feed_forward_length"), "initializer_range": 0.02,
        "max_position_embeddings": count("context_length"), "num_attention_heads": heads,
        "num_hidden_layers": count("block_count"),
        "num_key_value_heads": count("attention.head_count_kv", heads),
        "rms_norm_eps": number("attention.layer_norm_rms_epsilon"),
        "rope_theta": number("rope.freq_base", 10000.0),
        "tie_word_embeddings": not has_output,
        "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": count("vocab_size", len(get("tokenizer.ggml.tokens", None) or [])),
    }
    scaling = {part: get(f"{arch}.rope.scaling.{part}") for part in ROPE_SCALING_PARTS}
    if not unscaled(scaling):
        config["rope_scaling"] = {k: v for k, v in scaling.items() if v is not None}  # validation refuses it
    head_dim = get(f"{arch}.rope.dimension_count")
    if head_dim is not None and count("rope.dimension_count") != hidden // heads:
        config["head_dim"] = int(head_dim)
    return config


ROPE_SCALING_PARTS = ("type", "factor", "original_context_length", "attn_factor", "yarn_log_multiplier",
                      "yarn_ext_factor", "yarn_beta_fast", "yarn_beta_slow")


def unscaled(scaling: dict) -> bool:
    """No scaling at all, or the no-op both converters write for BitNet (linear, factor 1)."""
    factor = scaling["factor"]
    others = [k for k, v in scaling.items() if v is not None and k not in ("type", "factor")]
    return (scaling["type"] in (None, "none", "linear") and not others
            and (factor is None or (not isinstance(factor, bool) and factor == 1.0)))


def _clean_float(value: object) -> float:
    """float32 metadata (9.999999747378752e-06) back to the decimal it came from (1e-05)."""
    return float(f"{float(value):.7g}")
