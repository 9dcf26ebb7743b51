"""BitNet b1.58 forward pass with a KV cache, for greedy decoding and `verify`.

    h   = embed[ids]
    per layer:
      a = RMSNorm(h) -> q, k, v (ternary) -> NeoX RoPE(q, k) -> GQA causal attention
      h = h + o_proj(attn_sub_norm(a))
      f = RMSNorm(h) -> act(gate) * up -> ffn_sub_norm
      h = h + down_proj(f)
    logits = RMSNorm(h) @ embed^T          (tied lm_head, kernel.half_matmul)

The family (arch.py) decides act (relu^2 for 2B4T, SiLU otherwise), whether the sub-norms
exist (not in Llama-style BitNet) and whether lm_head is its own tensor. Weights are always in
transformers' row order (GGUF sources undo llama's q/k permute), so RoPE is NeoX for all.

Every projection is `kernel.ternary_linear` on a `PackedMatrix`: per-token absmax int8
activations, exact integer sums, y = acc / s * beta (the W1.58A8 semantics transformers and
bitnet.cpp share). Two numerics (`Numerics`) decide everything else:

* `reference`: fp32 throughout, as transformers runs the model in fp32. RoPE tables are
  transformers' (inv_freq = 1 / theta**(arange(0, d, 2) / d), freqs = pos * inv_freq, all
  fp32; pow and cos/sin rounded once from float64, which matches torch on all but ~1 % of
  cos/sin entries, by 1 ulp).
* `bitnet.cpp`: what the fork's `build_bitnet_158` graph (llama.cpp 40ed0f2, ggml.c and
  llamafile/sgemm.cpp) computes on x86 with its default f16 KV cache:
    - K and V are rounded to fp16 when stored in the cache (`ggml_cpy` into the f16 cache);
    - an f16 x f32 matmul (Q.K, P @ V, the lm_head over the F16 embedding) converts the
      f32 side to fp16 and runs `vec_dot_f16` (fp32 sums), unless llamafile's tinyBLAS
      takes it (GGML_LLAMAFILE is ON by default), which reads the f32 side as is but only
      when it is contiguous and has >= 2 columns ("only enable sgemm for prompt
      processing"). So: Q is always rounded (a prompt's permuted Q is not contiguous, a
      step's has one column); P is rounded in one-token steps only; the lm_head input is
      rounded when one row of logits is computed (the prompt's last, every step);
    - softmax: fp32 exp, sum in double, times fp32(1/sum) (`ggml_vec_soft_max_f32`);
    - RoPE angles: theta_i = pos * powf(base, -2/d)^i, multiplied up one i at a time in
      fp32 (`ggml_rope_cache_init`);
    - the embedding is whatever the file holds (F16 for I2_S files): the loader passes it.
  The embedding (and an untied lm_head) is kept as the 16-bit values the checkpoint stores
(`HalfTensor`: bf16 from transformers files, f16 from GGUF F16; found by checking the float32
values round-trip exactly, else it stays float32 and numpy's matmul runs). The lookup reads
those values; the logits are `kernel.half_matmul`, whose fp32 summation order is fixed
(kernels/half_isa.h: 16 strided lanes, then a halving fold) and the same on every backend.
Checked against a build of BitNet 404980e with that fork (x86-64, gcc 12): every
  intermediate tensor of tiny-a's two prompts x 16 steps within 2e-5, logits within 1e-4.
  Dropping the one-row rounding flips a token of tiny-a's 12-token prompt; transformers'
  RoPE tables instead of ggml's move the top-2 margins by up to 0.14; the softmax detail is
  below 1e-6. Not reproduced: the activation scale 127/max is computed in double there (it
  equals the fp32 quotient but for double rounding), and fp32 sums run in other orders.
RMSNorm is the same in both: mean(x*x) summed in float64 and rounded to fp32 (ggml sums in
double; torch's fp32 cascade lands within an ulp), then x * (1/sqrt(mean + eps)) * weight.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .arch import BITNET_2B4T, PROJECTIONS, family_of_config
from .errors import FormatError, MissingTensor, ShapeError, UnexpectedTensor, UsageError
from .checkpoints import StoredProjection, Tensor
from .kernel import PackedMatrix, exact_half_bits, half_matmul, half_to_float32, ternary_linear
from .ternary import TernaryWeight
from .validate import check_hyperparameters

BLOCK_NORMS = ("input_layernorm", "post_attention_layernorm")
ACTIVATIONS = ("relu2", "silu")  # what `activation` computes; a family's own is checked on convert



@dataclass(frozen=True)
class Numerics:
    name: str
    kv_f16: bool = False           # K, V rounded to fp16 in the cache
    q_f16: bool = False            # Q rounded to fp16 before Q.K
    single_row_f16: bool = False   # a one-token P @ V and a one-row lm_head round P / h to fp16
    ggml_softmax: bool = False     # double-precision sum, multiply by 1/sum
    ggml_rope: bool = False        # iterated powf angles instead of pos * inv_freq


NUMERICS = {
    "reference": Numerics("reference"),
    "bitnet.cpp": Numerics("bitnet.cpp", kv_f16=True, q_f16=True, single_row_f16=True, ggml_softmax=True,
                           ggml_rope=True),
}


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    tie_word_embeddings: bool
    hidden_act: str = "relu2"  # "relu2" (2B4T) or "silu" (1bitLLM, Llama-style)
    sub_norms: tuple[str, str] | None = ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")  # None: no sub-norms
    shapes: Mapping | None = None  # every tensor's shape, from the family's description (arch.py)

    @classmethod
    def from_hf(cls, config: Mapping) -> ModelConfig:
        """Read a transformers config.json dict of any BitNet family (see `arch`)."""
        family = family_of_config(dict(config), default=BITNET_2B4T)
        check_hyperparameters(config, family, activations=ACTIVATIONS)  # sizes, rope_theta, eps (validate.py)
        theta = config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta"))
        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "vocab_size") if k not in config]
        if missing or theta is None:
            raise FormatError(f"config.json lacks {missing or ['rope_theta']}")
        heads = int(config["num_attention_heads"])
        return cls(
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads", heads)),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            rope_theta=float(theta),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=family.is_tied(dict(config)),
            hidden_act=config.get("hidden_act", family.hidden_act),
            sub_norms=family.sub_norm_names(),
            shapes=family.tensor_shapes(dict(config)),
        )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """HF name -> shape of every tensor the model needs (the family's description)."""
        return dict(self.shapes or {})


def kernel_layout(shape: tuple[int, int]) -> str:
    """The layout a projection is packed in for the kernel: i2_s needs in_features % 128 == 0."""
    return "i2_s" if shape[1] % 128 == 0 else "hf"


def _prepare(config: ModelConfig, weights: Mapping[str, object]) -> dict[str, PackedMatrix | np.ndarray | HalfTensor]:
    """Check names, kinds and shapes; projections become PackedMatrix (stored bytes as they
    are, ternary weights packed once); floats become float32 arrays."""
    shapes = config.tensor_shapes()
    for name in weights:
        if name not in shapes:
            raise UnexpectedTensor("not a tensor of this BitNet config", tensor=name)
    tensors: dict[str, PackedMatrix | np.ndarray] = {}
    for name, shape in shapes.items():
        if name not in weights:
            raise MissingTensor(f"required tensor of shape {list(shape)} is absent", tensor=name)
        value = weights[name]
        is_projection = name.rsplit(".", 2)[-2].endswith("_proj")
        if is_projection and isinstance(value, TernaryWeight):
            value = PackedMatrix.from_ternary(value, kernel_layout(value.shape))
        elif is_projection and isinstance(value, StoredProjection):  # the file's own bytes, no decode
            value = PackedMatrix.from_bytes(value.layout, value.data, value.shape, value.beta, tiling=value.tiling)
        elif is_projection and not isinstance(value, PackedMatrix):
            raise FormatError(f"a projection must be a TernaryWeight, StoredProjection or PackedMatrix, got "
                              f"{type(value).__name__}", tensor=name)
        elif not is_projection:
            value = _float_tensor(name, value)
        if tuple(value.shape) != shape:
            raise ShapeError(f"shape {list(value.shape)} != {list(shape)} from config.json", tensor=name)
        tensors[name] = value
    return tensors


HALF_STORED = {"BF16": "bf16", "F16": "f16"}


def _float_tensor(name: str, value: object) -> np.ndarray | HalfTensor:
    """A float32 array; a stored 16-bit embedding or lm_head (a `Tensor` from
    `read_weights(stored=True)`) stays its file's bits, as a HalfTensor."""
    if isinstance(value, Tensor):
        if name in ("model.embed_tokens.weight", "lm_head.weight") and value.dtype in HALF_STORED:
            return HalfTensor(HALF_STORED[value.dtype], np.asarray(value.data).view(np.uint16))
        value = value.f32()
    return np.asarray(value, dtype=np.float32)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    mean = (np.square(x).astype(np.float64).sum(axis=-1, keepdims=True) / x.shape[-1]).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN/Inf rows are refused by name downstream
        inv = np.float32(1.0) / np.sqrt(mean + np.float32(eps))
    return (x * inv) * weight


def rope_tables(positions: np.ndarray, head_dim: int, theta: float, ggml: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, head_dim/2] in fp32 for the NeoX pairs (i, i + head_dim/2)."""
    with np.errstate(all="ignore"):  # a theta of 0 or Inf gives NaN angles, refused downstream by name
        return _rope_tables(positions, head_dim, theta, ggml)


def _rope_tables(positions: np.ndarray, head_dim: int, theta: float, ggml: bool) -> tuple[np.ndarray, np.ndarray]:
    half = head_dim // 2
    if ggml:
        step = np.float32(np.float64(theta) ** (np.float64(-2.0) / head_dim))
        angles = np.empty((len(positions), half), np.float32)
        angles[:, 0] = positions
        for i in range(1, half):
            angles[:, i] = angles[:, i - 1] * step
    else:
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        inv_freq = np.float32(1.0) / (np.float64(theta) ** exponents.astype(np.float64)).astype(np.float32)
        angles = positions.astype(np.float32)[:, None] * inv_freq
    wide = angles.astype(np.float64)
    return np.cos(wide).astype(np.float32), np.sin(wide).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [T, heads, d]: (a, b) -> (a*cos - b*sin, b*cos + a*sin) for a = x[:d/2], b = x[d/2:]."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def softmax(scores: np.ndarray, ggml: bool) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    if ggml:
        return e * (1.0 / e.astype(np.float64).sum(axis=-1, keepdims=True)).astype(np.float32)
    return e / e.sum(axis=-1, keepdims=True)


def activation(gate: np.ndarray, hidden_act: str) -> np.ndarray:
    """relu(x)^2 (2B4T) or SiLU x / (1 + exp(-x)) in fp32 (as ggml's and torch's float paths)."""
    if hidden_act == "relu2":
        return np.square(np.maximum(gate, np.float32(0.0)))
    with np.errstate(over="ignore"):  # exp(-x) -> inf for x < -88: x / inf = -0, the limit
        return gate / (np.float32(1.0) + np.exp(-gate))


def to_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


class HalfTensor:
    """A float tensor held as its bf16 / f16 bits (uint16, `bits`); `np.asarray(t)` gives the
    float32 values (so `verify.compare_weights` sees the same floats as before)."""

    def __init__(self, kind: str, bits: np.ndarray):
        self.kind, self.bits = kind, bits
        self.shape = bits.shape

    @classmethod
    def from_float32(cls, values: np.ndarray) -> HalfTensor | np.ndarray:
        """The 16-bit form if it holds every value exactly, else `values` unchanged."""
        found = exact_half_bits(values)
        return values if found is None else cls(*found)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = half_to_float32(self.bits, self.kind)
        return values if dtype is None else values.astype(dtype, copy=False)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return half_to_float32(self.bits[ids], self.kind)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """x [T, K] -> [T, V]; a row's result does not depend on T (fixed order per row)."""
        return half_matmul(self.bits, self.kind, x)


class KVCache:
    """Per layer K and V [kv_heads, positions, head_dim], grown by doubling."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int):
        self.length = 0
        self.keys = [np.zeros((kv_heads, 0, head_dim), np.float32) for _ in range(layers)]
        self.values = [np.zeros((kv_heads, 0, head_dim), np.float32) for _ in range(layers)]

    def store(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append k, v [kv_heads, T, d] at self.length; return all keys and values so far."""
        end = self.length + k.shape[1]
        if end > self.keys[layer].shape[1]:
            grown = (k.shape[0], max(end, 2 * self.keys[layer].shape[1], 16), k.shape[2])
            for store in (self.keys, self.values):
                bigger = np.zeros(grown, np.float32)
                bigger[:, : self.length] = store[layer][:, : self.length]
                store[layer] = bigger
        self.keys[layer][:, self.length:end] = k
        self.values[layer][:, self.length:end] = v
        return self.keys[layer][:, :end], self.values[layer][:, :end]


class BitNetModel:
    """A BitNet b1.58 causal LM held as packed projections plus float32 norms/embedding."""

    def __init__(self, config: Mapping, weights: Mapping[str, object], *, numerics: str = "reference"):
        if numerics not in NUMERICS:
            raise UsageError(f"unknown numerics {numerics!r}; known: {', '.join(NUMERICS)}")
        self.config = ModelConfig.from_hf(config)
        self.numerics = NUMERICS[numerics]
        self.tensors = _prepare(self.config, weights)
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in self.tensors and not isinstance(self.tensors[name], HalfTensor):
                self.tensors[name] = HalfTensor.from_float32(self.tensors[name])
        self.embedding = self.tensors["model.embed_tokens.weight"]
        self.lm_head = self.tensors.get("lm_head.weight", self.embedding)
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim)

    def forward(self, ids: list[int] | np.ndarray, *, all_logits: bool = False) -> np.ndarray:
        """Feed `ids` after what the cache holds; logits [T, vocab] or, by default, the last row."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise UsageError(f"token ids must be a non-empty list in [0, {self.config.vocab_size}), got {ids.tolist()[:8]}")
        positions = np.arange(self.cache.length, self.cache.length + ids.size)
        h = self.embedding.rows(ids) if isinstance(self.embedding, HalfTensor) else self.embedding[ids]
        for layer in range(self.config.num_layers):
            h = self._layer(layer, h, positions)
        self.cache.length += ids.size
        h = rms_norm(h if all_logits else h[-1:], self.tensors["model.norm.weight"], self.config.rms_norm_eps)
        if self.numerics.single_row_f16 and h.shape[0] == 1:
            h = to_f16(h)
        logits = self._logits(h)
        return logits if all_logits else logits[0]

    def _logits(self, h: np.ndarray) -> np.ndarray:
        if isinstance(self.lm_head, HalfTensor):
            return self.lm_head.matmul(h)
        return np.stack([self.lm_head @ row for row in h])  # row by row: a row's logits never
                                                            # depend on how many rows are asked

    def _layer(self, layer: int, h: np.ndarray, positions: np.ndarray) -> np.ndarray:
        c, w = self.config, self._layer_tensors(layer)
        x = rms_norm(h, w["input_layernorm"], c.rms_norm_eps)
        attn = self._attention(layer, x, positions, w)
        h = h + ternary_linear(w["self_attn.o_proj"], self._sub_norm(attn, w, 0))
        x = rms_norm(h, w["post_attention_layernorm"], c.rms_norm_eps)
        ffn = activation(ternary_linear(w["mlp.gate_proj"], x), c.hidden_act) * ternary_linear(w["mlp.up_proj"], x)
        return h + ternary_linear(w["mlp.down_proj"], self._sub_norm(ffn, w, 1))

    def _sub_norm(self, x: np.ndarray, w: dict, which: int) -> np.ndarray:
        """The family's attention (0) or FFN (1) sub-norm; identity where it has none."""
        names = self.config.sub_norms
        return x if names is None else rms_norm(x, w[names[which]], self.config.rms_norm_eps)

    def _attention(self, layer: int, x: np.ndarray, positions: np.ndarray, w: dict) -> np.ndarray:
        c, num = self.config, self.numerics
        t, d = len(positions), c.head_dim
        cos, sin = rope_tables(positions, d, c.rope_theta, num.ggml_rope)
        q = apply_rope(ternary_linear(w["self_attn.q_proj"], x).reshape(t, c.num_heads, d), cos, sin)
        k = apply_rope(ternary_linear(w["self_attn.k_proj"], x).reshape(t, c.num_kv_heads, d), cos, sin)
        v = ternary_linear(w["self_attn.v_proj"], x).reshape(t, c.num_kv_heads, d)
        if num.kv_f16:
            k, v = to_f16(k), to_f16(v)
        if num.q_f16:
            q = to_f16(q)
        keys, values = self.cache.store(layer, k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        group = c.num_heads // c.num_kv_heads
        q = q.transpose(1, 0, 2).reshape(c.num_kv_heads, group * t, d)  # head h -> kv head h // group
        scores = (q @ keys.transpose(0, 2, 1)) * np.float32(d ** -0.5)
        causal = np.arange(keys.shape[1])[None, :] > np.tile(positions, group)[:, None]
        scores = np.where(causal, np.float32(-np.inf), scores)
        probs = softmax(scores, num.ggml_softmax)
        if num.single_row_f16 and t == 1:
            probs = to_f16(probs)
        out = probs @ values  # [kv_heads, group * t, d]
        return out.reshape(c.num_heads, t, d).transpose(1, 0, 2).reshape(t, c.num_heads * d)

    def _layer_tensors(self, layer: int) -> dict:
        prefix = f"model.layers.{layer}."
        parts = PROJECTIONS + BLOCK_NORMS + (self.config.sub_norms or ())
        return {part: self.tensors[f"{prefix}{part}.weight"] for part in parts}

    def prefill(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Empty the cache, run the whole prompt as one batch; logits of its last position."""
        self.reset()
        return self.forward(ids)

    def prompt_logits(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Empty the cache, run the prompt as one batch; logits of every position [T, vocab]."""
        self.reset()
        return self.forward(ids, all_logits=True)

    def step(self, token: int) -> np.ndarray:
        """Feed one token after the cache; its logits."""
        return self.forward([token])

    def generate_ids(self, prompt_ids: list[int], n_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy decode: (n_tokens ids, their logits [n_tokens, vocab]); ties go to the lower id."""
        if n_tokens < 1:
            raise UsageError(f"n_tokens must be >= 1, got {n_tokens}")
        rows = [self.prefill(prompt_ids)]
        ids = [int(np.argmax(rows[0]))]
        while len(ids) < n_tokens:
            rows.append(self.step(ids[-1]))
            ids.append(int(np.argmax(rows[-1])))
        return ids, np.stack(rows)
