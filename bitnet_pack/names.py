"""transformers <-> GGUF tensor names: the tables live in each family's description
(`arch.Family.to_gguf` / `to_hf`); these default to the 2B4T family.

    model.embed_tokens.weight                      token_embd.weight
    model.norm.weight                              output_norm.weight
    lm_head.weight                                 output.weight        (untied families only)
    model.layers.{i}.input_layernorm.weight        blk.{i}.attn_norm.weight
    model.layers.{i}.self_attn.q_proj.weight       blk.{i}.attn_q.weight      (k, v alike)
    model.layers.{i}.self_attn.o_proj.weight       blk.{i}.attn_output.weight
    model.layers.{i}.post_attention_layernorm.weight blk.{i}.ffn_norm.weight
    model.layers.{i}.mlp.gate_proj.weight          blk.{i}.ffn_gate.weight    (up, down alike)
    sub-norms (2B4T attn_sub_norm / ffn_sub_norm, 1bitLLM inner_attn_ln / ffn_layernorm)
                                                   blk.{i}.attn_sub_norm / ffn_sub_norm
"""
from __future__ import annotations

from .arch import BITNET_2B4T, Family


def to_gguf(name: str, family: Family = BITNET_2B4T) -> str:
    """The GGUF name of a transformers tensor; UnknownArchitecture for names with no place."""
    return family.to_gguf(name)


def to_hf(name: str, family: Family = BITNET_2B4T) -> str:
    """The transformers name of a GGUF tensor (inverse of `to_gguf`)."""
    return family.to_hf(name)
