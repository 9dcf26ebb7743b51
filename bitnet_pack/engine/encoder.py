"""The BitNet embedding models' forward pass (qwen3 / gemma3 backbones), pooled and L2-normalized.

Per layer (x the residual stream [T, H]; every RMSNorm weight is the GGUF's, so Gemma3's
already hold 1 + w; every projection P is preceded by its own RMSNorm `P_norm_in`):

    h  = RMSNorm(x, attn_norm)
    q, k, v = P(RMSNorm(h, P_norm_in)) for P in q, k, v       heads of head_dim (not H / heads)
    q, k = RMSNorm per head (attn_q_norm, attn_k_norm), then NeoX RoPE (base rope_theta)
    gemma3: q *= 1/sqrt(d), attention unscaled; qwen3: scores * 1/sqrt(d)
    a  = causal GQA attention; o = P_o(RMSNorm(a, attn_output_norm_in))
    gemma3: o = RMSNorm(o, post_attention_norm)
    x += o; h2 = RMSNorm(x, ffn_norm)
    m  = act(P_gate(RMSNorm(h2, ..))) * P_up(RMSNorm(h2, ..))     act: SiLU (qwen3), GELU-tanh (gemma3)
    f  = P_down(RMSNorm(m, ffn_down_norm_in)); gemma3: f = RMSNorm(f, post_ffw_norm); x += f

Input x = token_embd[ids] (gemma3: times float32 sqrt(H)); output RMSNorm(x, output_norm),
pooled (LAST: the last token's row; MEAN; CLS: the first row) and L2-normalized. Every
projection is W1.58A8 through the kernel (`ternary_linear`: per-token int8 activations), on
the file's own I2_S bytes when it has them, else on the converter's ternarization of the
latent weights (absmean.py), so an f32/f16 GGUF runs what its I2_S conversion would. Every
float op is `floatops` (RMSNorm, RoPE, attention, SiLU, GELU-tanh: C with a numpy replay on
floatmath's exp): the same bits on every machine.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from ..families.arch import EMB_GEMMA3, PROJECTIONS
from ..formats.absmean import ternarize
from ..formats.ternary import TernaryWeight
from ..pipeline.sources.embedding import EmbSource
from . import floatops
from .kernel import PackedMatrix, ternary_linear
from .model import kernel_layout

if TYPE_CHECKING:
    from .rounding import Plan

GGUF_OF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}


def pack(source: EmbSource, beta_rule: str = "numpy1") -> dict[str, PackedMatrix | np.ndarray]:
    """GGUF name -> PackedMatrix (projections) or float32 array, from the source's own bytes."""
    tensors: dict[str, PackedMatrix | np.ndarray] = {}
    for tensor in source.tensors:
        if tensor.raw is not None:
            stored = tensor.raw()
            tensors[tensor.gguf] = PackedMatrix.from_bytes(stored.layout, stored.data, stored.shape)
            continue
        value = tensor.load()
        if tensor.kind == "linear":
            weight = value if isinstance(value, TernaryWeight) else ternarize(value, beta_rule, tensor=tensor.gguf)
            tensors[tensor.gguf] = PackedMatrix.from_ternary(weight, kernel_layout(weight.shape))
        else:
            tensors[tensor.gguf] = np.asarray(value, np.float32)
    return tensors


def float_plan(source: EmbSource) -> Plan:
    """The roundings the source's float storage declares, by GGUF name: an F16 / BF16 norm or
    embedding (Gemma3's 1 + w in F16, as the converter stores it) rounds a float32 value."""
    from .rounding import FLOAT_ROUNDING, Plan, Rounding

    where = f"{source.layout.upper()} GGUF" if source.kind == "gguf" else "as stored"
    plan = Plan()
    for tensor in source.tensors:
        if tensor.kind != "linear" and tensor.stored in FLOAT_ROUNDING:
            what = "token_embd" if tensor.kind == "embed" else "norms"
            plan.roundings[tensor.gguf] = Rounding(FLOAT_ROUNDING[tensor.stored], False, where, what=what)
    return plan


class Encoder:
    def __init__(self, source: EmbSource, *, beta_rule: str = "numpy1"):
        c = source.config
        self.family, self.pooling = source.family, source.pooling
        self.gemma = source.family is EMB_GEMMA3
        self.layers, self.hidden = int(c["num_hidden_layers"]), int(c["hidden_size"])
        self.heads = int(c["num_attention_heads"])
        self.kv_heads = int(c.get("num_key_value_heads") or self.heads)
        self.head_dim = int(c.get("head_dim") or self.hidden // self.heads)
        self.eps, self.theta = float(c.get("rms_norm_eps", 1e-6)), float(c.get("rope_theta", 10000.0))
        self.vocab = int(c["vocab_size"])
        self.t = pack(source, beta_rule)
        self.plan = float_plan(source)  # what the source's stored float types round (verify / diff)

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return floatops.rms_norm(x, self.t[name], self.eps)

    def _proj(self, layer: int, part: str, x: np.ndarray) -> np.ndarray:
        name = f"blk.{layer}.{GGUF_OF[part]}"
        return ternary_linear(self.t[name + ".weight"], self._norm(x, name + "_norm_in.weight"))

    def hidden_states(self, ids: list[int]) -> np.ndarray:
        """The output-normed rows e [T, H] of one sequence."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.vocab:
            raise UsageError(f"token ids must be a non-empty list in [0, {self.vocab}), got {ids.tolist()[:8]}")
        x = self.t["token_embd.weight"][ids]
        if self.gemma:
            x = x * np.float32(math.sqrt(self.hidden))
        rope = floatops.rope_tables(np.arange(ids.size), self.head_dim, self.theta, False)
        for layer in range(self.layers):
            x = self._layer(layer, x, rope)
        return self._norm(x, "output_norm.weight")

    def _layer(self, layer: int, x: np.ndarray, rope: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        b, t, d = f"blk.{layer}.", x.shape[0], self.head_dim
        h = self._norm(x, b + "attn_norm.weight")
        q = self._proj(layer, PROJECTIONS[0], h).reshape(t, self.heads, d)
        k = self._proj(layer, PROJECTIONS[1], h).reshape(t, self.kv_heads, d)
        v = self._proj(layer, PROJECTIONS[2], h).reshape(t, self.kv_heads, d)
        q = floatops.apply_rope(self._norm(q, b + "attn_q_norm.weight"), *rope)
        k = floatops.apply_rope(self._norm(k, b + "attn_k_norm.weight"), *rope)
        scale = floatops.attention_scale(d)
        if self.gemma:  # the runtime scales Q (f_attention_scale), then attends unscaled
            q, scale = q * scale, np.float32(1.0)
        a = floatops.attention(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), 0, scale)
        o = self._proj(layer, PROJECTIONS[3], a.reshape(t, self.heads * d))
        if self.gemma:
            o = self._norm(o, b + "post_attention_norm.weight")
        x = x + o
        h2 = self._norm(x, b + "ffn_norm.weight")
        gate, up = self._proj(layer, PROJECTIONS[4], h2), self._proj(layer, PROJECTIONS[5], h2)
        m = floatops.gelu_tanh_mul(gate, up) if self.gemma else floatops.activation(gate, up, "silu")
        f = self._proj(layer, PROJECTIONS[6], m)
        if self.gemma:
            f = self._norm(f, b + "post_ffw_norm.weight")
        return x + f

    def pooled(self, ids: list[int]) -> np.ndarray:
        e = self.hidden_states(ids)
        if self.pooling == 3:
            return e[-1].copy()
        if self.pooling == 2:
            return e[0].copy()
        if self.pooling == 1:
            return (e.astype(np.float64).sum(axis=0) / e.shape[0]).astype(np.float32)
        raise UsageError(f"pooling_type {self.pooling} is not mean (1), cls (2) or last (3)")

    def embed(self, ids: list[int]) -> np.ndarray:
        """The pooled row divided by its L2 norm (sentence-transformers' Normalize; the norm's sum
        of squares in float64, rounded to float32 once)."""
        pooled = self.pooled(ids)
        norm = np.float32(np.sqrt(np.sum(pooled.astype(np.float64) ** 2)))
        return pooled / max(norm, np.float32(1e-12))
