"""An independent torch encoder for the BitNet embedding models, written from the forward pass in
../shared/vectors/emb-qwen3/README.md and emb-gemma3/README.md (not from bitnet_pack's decode):
it reads the transformers checkpoint with safetensors.torch and computes in float32.

    BitLinear      y = (x_q . t) / s * beta, s = 127 / max(|x|, 1e-5) per token,
                   x_q = clamp(round(x s), -128, 127), t = clamp(round(W / beta), -1, 1), beta = mean|W|
    RMSNorm        x / sqrt(mean(x^2) + eps) * g           (Gemma3's own norms: g = 1 + w)
    RoPE           NeoX pairs (i, i + d/2), angle pos * base^(-2i/d)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file


class TorchEncoder:
    def __init__(self, directory: Path):
        self.config = json.loads((directory / "config.json").read_text())
        self.gemma = self.config["model_type"] == "gemma3_text"
        raw = load_file(str(directory / "model.safetensors"))
        self.w = {name.removeprefix("model."): value.float() for name, value in raw.items()}
        c = self.config
        self.heads, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.eps, self.base = c["rms_norm_eps"], c["rope_theta"]

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        g = self.w[name]
        own = self.gemma and not name.endswith("_proj.norm.weight")  # Gemma3RMSNorm multiplies by 1 + w
        g = g + 1.0 if own else g
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * g

    def bitlinear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        x = self.norm(x, prefix + ".norm.weight")
        weight = self.w[prefix + ".weight"]
        beta = weight.double().abs().mean().float().clamp(min=1e-5)
        ternary = (weight / beta).round().clamp(-1, 1)
        scale = 127.0 / x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        x_q = (x * scale).round().clamp(-128, 127)
        return (x_q @ ternary.T) / scale * beta

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        t, half = x.shape[0], self.d // 2
        inv = self.base ** (-torch.arange(half, dtype=torch.float64) * 2 / self.d)
        angle = torch.arange(t, dtype=torch.float64)[:, None] * inv
        cos, sin = angle.cos().float()[:, None, :], angle.sin().float()[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    def layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p, t = f"layers.{i}.", x.shape[0]
        h = self.norm(x, p + "input_layernorm.weight")
        q = self.bitlinear(h, p + "self_attn.q_proj").view(t, self.heads, self.d)
        k = self.bitlinear(h, p + "self_attn.k_proj").view(t, self.kv, self.d)
        v = self.bitlinear(h, p + "self_attn.v_proj").view(t, self.kv, self.d)
        q = self.rope(self.norm(q, p + "self_attn.q_norm.weight"))
        k = self.rope(self.norm(k, p + "self_attn.k_norm.weight"))
        group = self.heads // self.kv
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(self.d)
        scores = scores.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
        a = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(t, -1)
        o = self.bitlinear(a, p + "self_attn.o_proj")
        if self.gemma:
            o = self.norm(o, p + "post_attention_layernorm.weight")
        x = x + o
        h2 = self.norm(x, p + ("pre_feedforward_layernorm.weight" if self.gemma else "post_attention_layernorm.weight"))
        gate, up = self.bitlinear(h2, p + "mlp.gate_proj"), self.bitlinear(h2, p + "mlp.up_proj")
        act = torch.nn.functional.gelu(gate, approximate="tanh") if self.gemma else torch.nn.functional.silu(gate)
        f = self.bitlinear(act * up, p + "mlp.down_proj")
        if self.gemma:
            f = self.norm(f, p + "post_feedforward_layernorm.weight")
        return x + f

    @torch.no_grad()
    def embed(self, ids: list[int]) -> torch.Tensor:
        x = self.w["embed_tokens.weight"][torch.tensor(ids)]
        if self.gemma:
            x = x * math.sqrt(self.config["hidden_size"])
        for i in range(self.config["num_hidden_layers"]):
            x = self.layer(x, i)
        last = self.norm(x, "norm.weight")[-1]  # pooling LAST
        return last / last.norm()
