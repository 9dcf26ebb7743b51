"""One architecture description per BitNet b1.58 family: what a model of it must contain, how
its tensors are named on each side, and which GGUF arch each runtime loads.

    family    format                  config.json                       act    sub-norms  output
    2b4t      C  2B4T                 BitNetForCausalLM, bitnet         relu2  attn/ffn_sub_norm    tied
    1bitllm   A  latent float         BitnetForCausalLM, llama          silu   inner_attn_ln/       tied
                                                                               ffn_layernorm
    llama     B  packed, 1/beta scale LlamaForCausalLM + bitnet qc      silu   none       lm_head (untied)
    emb-qwen3   latent bf16           Qwen3Model, qwen3                 silu   per-projection none (pooled)
    emb-gemma3  latent bf16           Gemma3ForCausalLM, gemma3_text    gelu   per-projection none (pooled)

    GGUF arch     bitnet.cpp              mainline llama.cpp
    2b4t          bitnet-b1.58 (-25)      bitnet + hidden_activation relu2
    1bitllm       bitnet                  bitnet
    llama         llama                   llama
    emb-qwen3     qwen3 (fork with *_norm_in)   refused: no per-projection norms
    emb-gemma3    gemma3 (fork with *_norm_in)  refused

RoPE: every family rotates halves (transformers' rotate_half, ggml NEOX) on the weights as
transformers stores them. The `llama` GGUF arch runs NORM RoPE (adjacent pairs) instead, so
both runtimes' converters store q and k rows permuted (`gguf_rope` "norm"; k with the kv head
count); sources undo it on read and sinks redo it on write, so everything in between, the
model included, sees transformers' row order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import UnknownArchitecture
from ..formats.ternary import TernaryWeight

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_PROJECTION = re.compile(r"^model\.layers\.\d+\.(?:" + "|".join(re.escape(p) for p in PROJECTIONS) + r")\.weight$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Part:
    """One tensor: transformers name (per layer: after `model.layers.{i}.`), GGUF name (after
    `blk.{i}.`), and its shape in named dimensions (see `Dims`)."""

    hf: str
    gguf: str
    shape: tuple[str, ...]


GLOBALS = (Part("model.embed_tokens.weight", "token_embd.weight", ("vocab", "hidden")),
           Part("model.norm.weight", "output_norm.weight", ("hidden",)))
OUTPUT = Part("lm_head.weight", "output.weight", ("vocab", "hidden"))
LINEARS = (
    Part("self_attn.q_proj.weight", "attn_q.weight", ("q", "hidden")),
    Part("self_attn.k_proj.weight", "attn_k.weight", ("kv", "hidden")),
    Part("self_attn.v_proj.weight", "attn_v.weight", ("kv", "hidden")),
    Part("self_attn.o_proj.weight", "attn_output.weight", ("hidden", "q")),
    Part("mlp.gate_proj.weight", "ffn_gate.weight", ("ffn", "hidden")),
    Part("mlp.up_proj.weight", "ffn_up.weight", ("ffn", "hidden")),
    Part("mlp.down_proj.weight", "ffn_down.weight", ("hidden", "ffn")),
)
BLOCK_NORMS = (Part("input_layernorm.weight", "attn_norm.weight", ("hidden",)),
               Part("post_attention_layernorm.weight", "ffn_norm.weight", ("hidden",)))


@dataclass(frozen=True)
class Dims:
    """The sizes a family's shapes are written in, read from config.json."""

    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config: dict) -> Dims:
        heads = int(config["num_attention_heads"])
        return cls(int(config["hidden_size"]), int(config["intermediate_size"]), int(config["num_hidden_layers"]),
                   heads, int(config.get("num_key_value_heads") or heads),
                   int(config.get("head_dim") or int(config["hidden_size"]) // heads), int(config["vocab_size"]))

    def size(self, name: str) -> int:
        return {"hidden": self.hidden, "ffn": self.ffn, "vocab": self.vocab, "q": self.heads * self.head_dim,
                "kv": self.kv_heads * self.head_dim, "head_dim": self.head_dim}[name]


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    hidden_act: str                  # "relu2" | "silu"
    sub_norms: tuple[Part, ...]      # (attention, ffn) sub-norms, or none
    tied: bool                       # tie_word_embeddings when config.json does not say
    gguf_rope: str                   # the GGUF arch's RoPE: "neox" (halves, as transformers) or
                                     # "norm" (adjacent pairs: q/k rows stored permuted)
    packed_scale: str                # packed weight_scale holds "beta" (AutoBitLinear) or "inverse" (BitLinear)
    identity: dict                   # architectures / model_type (and extras) of config.json
    gguf_archs: dict                 # target -> GGUF arch names it loads; the first is written
    float_dtype: str | None = "BF16"  # dtype of norms/embeddings in its checkpoints; None: as read
    gguf_output: bool = False        # its GGUF archs have an `output` tensor (bitnet ones use token_embd)
    parts: tuple[Part, ...] | None = None  # a layer's tensors when they are not the LM layout (embedding models)
    encoder: str | None = None       # an embedding model's forward pass ("qwen3" / "gemma3", see `emb`)
    hf_prefix: str = "model."        # prefix of its transformers names as its checkpoints spell them

    # -- tensors ---------------------------------------------------------------------------
    def layer_parts(self) -> tuple[Part, ...]:
        return self.parts if self.parts is not None else BLOCK_NORMS + LINEARS + self.sub_norms

    def is_tied(self, config: dict) -> bool:
        return bool(config.get("tie_word_embeddings", self.tied))

    def tensor_shapes(self, config: dict) -> dict[str, tuple[int, ...]]:
        """transformers name -> shape of every tensor a model of this family and config holds."""
        dims = Dims.of(config)
        parts = list(GLOBALS) + ([] if self.is_tied(config) else [OUTPUT])
        shapes = {p.hf: tuple(dims.size(d) for d in p.shape) for p in parts}
        for layer in range(dims.layers):
            for part in self.layer_parts():
                shapes[f"model.layers.{layer}.{part.hf}"] = tuple(dims.size(d) for d in part.shape)
        return shapes

    def sub_norm_names(self) -> tuple[str, str] | None:
        """(attention, ffn) sub-norm names inside a layer, without `.weight`."""
        if not self.sub_norms:
            return None
        return tuple(p.hf.removesuffix(".weight") for p in self.sub_norms)  # type: ignore[return-value]

    def to_gguf(self, name: str) -> str:
        found = self._rename(name, "hf", "gguf", _HF_LAYER, "blk.{}.")
        if found is None:
            raise UnknownArchitecture(f"tensor {name!r} has no GGUF name in the {self.title} architecture")
        return found

    def to_hf(self, name: str) -> str:
        found = self._rename(name, "gguf", "hf", _GGUF_LAYER, "model.layers.{}.")
        if found is None:
            raise UnknownArchitecture(f"GGUF tensor {name!r} is not part of the {self.title} architecture")
        return found

    def _rename(self, name: str, side: str, other: str, layer: re.Pattern, prefix: str) -> str | None:
        """`name` on `side` ("hf" / "gguf") as the `other` side names it; None if unknown."""
        for part in GLOBALS + (OUTPUT,):
            if name == getattr(part, side):
                return getattr(part, other)
        match = layer.match(name)
        for part in self.layer_parts() if match else ():
            if match.group(2) == getattr(part, side):
                return prefix.format(match.group(1)) + getattr(part, other)
        return None

    # -- GGUF row order --------------------------------------------------------------------
    def permuted_heads(self, name: str, config: dict) -> int | None:
        """For a q/k projection (transformers name) that GGUF stores permuted: the head count
        its rows are permuted with (kv heads for k, as both converters do); else None."""
        if self.gguf_rope != "norm" or not name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            return None
        dims = Dims.of(config)
        return dims.heads if name.endswith("q_proj.weight") else dims.kv_heads

    def gguf_weight(self, name: str, weight: TernaryWeight, config: dict, *, to_gguf: bool) -> TernaryWeight:
        """`weight` (a TernaryWeight) with its rows in GGUF order (`to_gguf`) or back in
        transformers order; the same object when the family stores `name` unpermuted."""
        heads = self.permuted_heads(name, config)
        if heads is None:
            return weight
        return TernaryWeight(permute_rows(weight.codes, heads, to_gguf=to_gguf), weight.beta)

    def gguf_arch(self, target: str) -> str:
        return self.gguf_archs[target][0]


SUB_NORMS_2B4T = (Part("self_attn.attn_sub_norm.weight", "attn_sub_norm.weight", ("hidden",)),
                  Part("mlp.ffn_sub_norm.weight", "ffn_sub_norm.weight", ("ffn",)))
SUB_NORMS_1BITLLM = (Part("self_attn.inner_attn_ln.weight", "attn_sub_norm.weight", ("hidden",)),
                     Part("mlp.ffn_layernorm.weight", "ffn_sub_norm.weight", ("ffn",)))

BITNET_2B4T = Family(
    "2b4t", "BitNet b1.58 2B4T", "relu2", SUB_NORMS_2B4T, True, "neox", "beta",
    {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet"},
    {"bitnet.cpp": ("bitnet-b1.58", "bitnet-25"), "llama.cpp": ("bitnet",)})
ONEBITLLM = Family(
    "1bitllm", "1bitLLM BitNet b1.58", "silu", SUB_NORMS_1BITLLM, True, "neox", "beta",
    {"architectures": ["BitnetForCausalLM"], "model_type": "llama", "input_bits": 8, "weight_bits": 1},
    {"bitnet.cpp": ("bitnet",), "llama.cpp": ("bitnet",)}, None)  # fp32 / fp16 latent checkpoints
LLAMA_BITNET = Family(
    "llama", "Llama-style BitNet (Llama3-8B-1.58, Falcon3-1.58bit, Falcon-E)", "silu", (), False, "norm", "inverse",
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "is_bitnet_config": True,
     "quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": ["lm_head"]}},
    {"bitnet.cpp": ("llama",), "llama.cpp": ("llama",)}, gguf_output=True)

# BitNet embedding models (bitnet.cpp's convert-bitnet-embedding-to-gguf.py): every projection
# has its own input RMSNorm (`<proj>.norm`, GGUF `*_norm_in`), q/k have per-head norms, and
# Gemma3 adds post-attention / pre- and post-feedforward norms. No lm_head; pooling LAST.
NORMS_IN = tuple(Part(p.hf.removesuffix(".weight") + ".norm.weight", p.gguf.removesuffix(".weight") + "_norm_in.weight",
                      (p.shape[1],)) for p in LINEARS)
HEAD_NORMS = (Part("self_attn.q_norm.weight", "attn_q_norm.weight", ("head_dim",)),
              Part("self_attn.k_norm.weight", "attn_k_norm.weight", ("head_dim",)))
GEMMA3_NORMS = (Part("input_layernorm.weight", "attn_norm.weight", ("hidden",)),
                Part("post_attention_layernorm.weight", "post_attention_norm.weight", ("hidden",)),
                Part("pre_feedforward_layernorm.weight", "ffn_norm.weight", ("hidden",)),
                Part("post_feedforward_layernorm.weight", "post_ffw_norm.weight", ("hidden",)))
EMB_QWEN3 = Family(
    "emb-qwen3", "BitNet embedding, Qwen3 backbone (bitnet-embedding-0.6B)", "silu", (), True, "neox", "beta",
    {"architectures": ["Qwen3Model"], "model_type": "qwen3"}, {"bitnet.cpp": ("qwen3",)}, None,
    parts=BLOCK_NORMS + HEAD_NORMS + LINEARS + NORMS_IN, encoder="qwen3", hf_prefix="")
EMB_GEMMA3 = Family(
    "emb-gemma3", "BitNet embedding, Gemma3 backbone (bitnet-embedding-270M)", "gelu_tanh", (), True, "neox",
    "beta", {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}, {"bitnet.cpp": ("gemma3",)},
    None, parts=GEMMA3_NORMS + HEAD_NORMS + LINEARS + NORMS_IN, encoder="gemma3")
EMBEDDING_FAMILIES = (EMB_QWEN3, EMB_GEMMA3)
FAMILIES = (BITNET_2B4T, ONEBITLLM, LLAMA_BITNET, *EMBEDDING_FAMILIES)


def is_projection(name: str) -> bool:
    """A ternary linear (q, k, v, o, gate, up, down) in every family."""
    return _PROJECTION.match(name) is not None


def family_of_config(config: dict, default: Family | None = None) -> Family:
    """The family a config.json describes, or UnknownArchitecture naming what it says;
    `default` for a config that names neither model_type nor architectures."""
    listed, model_type, qc = (config.get(k) for k in ("architectures", "model_type", "quantization_config"))
    if listed is not None and (not isinstance(listed, list) or not all(isinstance(a, str) for a in listed)):
        raise UnknownArchitecture(f"architectures must be a list of names, got {listed!r}")
    if model_type is not None and not isinstance(model_type, str):
        raise UnknownArchitecture(f"model_type must be a name, got {model_type!r}")
    if qc is not None and not isinstance(qc, dict):
        raise UnknownArchitecture(f"quantization_config must be an object, got {qc!r}")
    archs = set(listed or [])
    if default is not None and not archs and model_type is None:
        return default
    if ("BitNetForCausalLM" in archs and model_type in ("bitnet", None)) or \
            (model_type == "bitnet" and not archs - {"BitNetForCausalLM"}):
        return BITNET_2B4T
    if "BitnetForCausalLM" in archs and model_type in ("llama", None):
        return ONEBITLLM
    for family in EMBEDDING_FAMILIES:  # the converter goes by model_type alone
        if model_type == family.identity["model_type"]:
            return family
    if "LlamaForCausalLM" in archs and model_type in ("llama", None) and isinstance(qc, dict) \
            and qc.get("quant_method") == "bitnet":
        return LLAMA_BITNET
    said = f"model_type {model_type!r}, architectures {sorted(archs) or 'none'}"
    raise UnknownArchitecture(f"{said} is not a BitNet b1.58 family (BitNetForCausalLM 2B4T, BitnetForCausalLM "
                              "1bitLLM, LlamaForCausalLM with quantization_config quant_method 'bitnet', or the "
                              "BitNet embedding models' qwen3 / gemma3_text)")


def family_of_gguf(arch: str, get) -> Family:
    """The family of a GGUF file from its arch (and, for `bitnet`, the activation key)."""
    if arch in BITNET_2B4T.gguf_archs["bitnet.cpp"]:
        return BITNET_2B4T
    if arch == "bitnet":  # 1bitLLM in both runtimes; 2B4T for mainline when we wrote relu2
        return BITNET_2B4T if get("bitnet.hidden_activation") == "relu2" else ONEBITLLM
    if arch == "llama":
        return LLAMA_BITNET
    for family in EMBEDDING_FAMILIES:
        if arch in family.gguf_archs["bitnet.cpp"]:
            return family
    known = sorted({a for f in FAMILIES for names in f.gguf_archs.values() for a in names})
    raise UnknownArchitecture(f"GGUF architecture {arch!r} is not BitNet b1.58 ({', '.join(known)})")


def out_features(config: dict, name: str) -> int:
    """Rows of projection `name` as config.json sizes it (a packed [out/4, in] tensor loses out % 4)."""
    part = next(p for p in LINEARS if name.endswith("." + p.hf))
    return Dims.of(config).size(part.shape[0])


def permute_rows(rows: np.ndarray, heads: int, *, to_gguf: bool) -> np.ndarray:
    """llama.cpp's q/k permute, [heads, 2, d/2, in] -> [heads, d/2, 2, in] (each head's two
    halves become adjacent pairs, for NORM RoPE), or its inverse."""
    count = rows.shape[0]
    split = (heads, 2, count // heads // 2) if to_gguf else (heads, count // heads // 2, 2)
    return np.ascontiguousarray(rows.reshape(*split, -1).swapaxes(1, 2).reshape(rows.shape))
