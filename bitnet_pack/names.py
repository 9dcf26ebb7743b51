"""transformers <-> GGUF tensor names for the BitNet b1.58 architecture (both runtimes).

    model.embed_tokens.weight                      token_embd.weight
    model.norm.weight                              output_norm.weight
    model.layers.{i}.input_layernorm.weight        blk.{i}.attn_norm.weight
    model.layers.{i}.self_attn.q_proj.weight       blk.{i}.attn_q.weight      (k, v alike)
    model.layers.{i}.self_attn.o_proj.weight       blk.{i}.attn_output.weight
    model.layers.{i}.self_attn.attn_sub_norm.weight blk.{i}.attn_sub_norm.weight
    model.layers.{i}.post_attention_layernorm.weight blk.{i}.ffn_norm.weight
    model.layers.{i}.mlp.gate_proj.weight          blk.{i}.ffn_gate.weight    (up, down alike)
    model.layers.{i}.mlp.ffn_sub_norm.weight       blk.{i}.ffn_sub_norm.weight

Tied embeddings: no lm_head / output.weight is written (both loaders use token_embd).
"""
from __future__ import annotations

import re

from .errors import UnknownArchitecture

_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.attn_sub_norm.weight": "attn_sub_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.ffn_sub_norm.weight": "ffn_sub_norm.weight",
}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_GLOBAL_BACK = {v: k for k, v in _GLOBAL.items()}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def to_gguf(name: str) -> str:
    """The GGUF name of a transformers tensor; UnknownArchitecture for names with no place."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    match = _HF_LAYER.match(name)
    if match and match.group(2) in _LAYER:
        return f"blk.{match.group(1)}.{_LAYER[match.group(2)]}"
    raise UnknownArchitecture(f"tensor {name!r} has no GGUF name in the BitNet b1.58 architecture")


def to_hf(name: str) -> str:
    """The transformers name of a GGUF tensor (inverse of `to_gguf`)."""
    if name in _GLOBAL_BACK:
        return _GLOBAL_BACK[name]
    match = _GGUF_LAYER.match(name)
    if match and match.group(2) in _LAYER_BACK:
        return f"model.layers.{match.group(1)}.{_LAYER_BACK[match.group(2)]}"
    raise UnknownArchitecture(f"GGUF tensor {name!r} is not part of the BitNet b1.58 architecture")
