"""BitNet b1.58 forward pass with a KV cache, for greedy decoding and `verify`.

    h   = embed[ids]
    per layer:
      a = RMSNorm(h) -> q, k, v (ternary) -> NeoX RoPE(q, k) -> GQA causal attention
      h = h + o_proj(attn_sub_norm(a))
      f = RMSNorm(h) -> act(gate) * up -> ffn_sub_norm      (act: relu^2, or silu: hidden_act)
      h = h + down_proj(f)
    logits = RMSNorm(h) @ embed^T          (tied lm_head, kernel.half_matmul)

The family (arch.py) decides act (relu^2 for 2B4T, SiLU otherwise), whether the sub-norms
exist (not in Llama-style BitNet) and whether lm_head is its own tensor. Weights are always in
transformers' row order (GGUF sources undo llama's q/k permute), so RoPE is NeoX for all.

Every projection is `kernel.ternary_linear` on a `PackedMatrix`: per-token absmax int8
activations, exact integer sums, y = acc / s * beta (the W1.58A8 semantics transformers and
bitnet.cpp share). Every float op (RMSNorm, RoPE, attention, activation, a float32 lm_head)
is `floatops`: the project's C in one specified order, with its own exp/sin/cos/pow
(kernels/floatops.h, floatmath.h), replayed bit for bit by numpy in pure mode; no BLAS, no
libm. So the logits are the same bits on every x86-64, backend, thread count and
OPENBLAS_CORETYPE (tests/test_determinism.py). Two numerics (`Numerics`) decide the rest:

* `reference`: fp32 throughout, as transformers runs the model in fp32. RoPE tables are
  transformers' (inv_freq = 1 / theta**(arange(0, d, 2) / d), freqs = pos * inv_freq, all
  fp32; pow and cos/sin computed in double by floatmath.h and rounded once, which matches
  torch on all but ~1 % of cos/sin entries, by 1 ulp).
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
      fp32 (`ggml_rope_cache_init`), cos/sin from the C library's cosf/sinf and the rotation
      with gcc's fused multiply-adds (ggml_rope.py; without them a 64-token prompt diverges);
    - a quantized embedding / output matrix (Q8_0, Q6_K, Q5_K, Q4_K) is looked up through
      ggml's dequantizer and multiplied with activations quantized to Q8_K / Q8_0 (quant_dot.py);
    - the embedding is whatever the file holds (F16 for I2_S files): the loader passes it.
  The embedding (and an untied lm_head) is kept as the 16-bit values the checkpoint stores
(`HalfTensor`: bf16 from transformers files, f16 from GGUF F16; found by checking the float32
values round-trip exactly, else it stays float32 and floatops.f32_matmul runs). The lookup reads
those values; the logits are `kernel.half_matmul`, whose fp32 summation order is fixed
(kernels/half_isa.h: 16 strided lanes, then a halving fold) and the same on every backend.
Checked against a build of BitNet 404980e with that fork (x86-64, gcc 12): every
  intermediate tensor of tiny-a's two prompts x 16 steps within 2e-5, logits within 1e-4.
  Dropping the one-row rounding flips a token of tiny-a's 12-token prompt; transformers'
  RoPE tables instead of ggml's move the top-2 margins by up to 0.14; the softmax detail is
  below 1e-6. Not reproduced: the activation scale 127/max is computed in double there (it
  equals the fp32 quotient but for double rounding), and fp32 sums run in other orders
  (floatops' 16-lane order, not ggml's).
RMSNorm is the same in both: mean(x*x) summed in float64 (16 lanes) and rounded to fp32 (ggml
sums in double; torch's fp32 cascade lands within an ulp), then x * (1/sqrt(mean + eps)) * weight.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, MissingTensor, ShapeError, UnexpectedTensor, UsageError
from ..families.arch import BITNET_2B4T, PROJECTIONS, family_of_config
from ..families.validate import check_hyperparameters
from ..formats import fastpath
from ..formats.floatmath import round_f16
from ..formats.layouts import get_layout
from ..formats.ternary import TernaryWeight
from ..pipeline.sources import StoredProjection, Tensor
from . import floatops, ggml_rope
from .kernel import PackedMatrix, exact_half_bits, half_matmul, half_to_float32, ternary_linear
from .quant_dot import QuantTensor, quant_tensor

BLOCK_NORMS = ("input_layernorm", "post_attention_layernorm")
ACTIVATIONS = floatops.ACTIVATIONS  # what `activation` computes; a family's own is checked on convert



@dataclass(frozen=True)
class Numerics:
    name: str
    kv_f16: bool = False           # K, V rounded to fp16 in the cache
    q_f16: bool = False            # Q rounded to fp16 before Q.K
    single_row_f16: bool = False   # a one-token P @ V and a one-row lm_head round P / h to fp16
    ggml_softmax: bool = False     # double-precision sum, multiply by 1/sum
    ggml_rope: bool = False        # iterated powf angles instead of pos * inv_freq
    libm_rope: bool = False        # and ggml's cosf/sinf and fused rotation (ggml_rope.py)
    ggml_dot: str = ""             # one-token Q.K, P.V and f16 lm_head in ggml_vec_dot_f16's order
                                   # of that build ("avx512" / "avx2", floatops_ggml.c); avx512 also
                                   # runs the softmax with that build's ggml_v_expf and block sums
    layout_activations: bool = False  # a layout whose runtime quantizes activations its own way
                                      # for this mode multiplies that way (Layout.runtime_linear)


_BITNET_CPP = dict(kv_f16=True, q_f16=True, single_row_f16=True, ggml_softmax=True, ggml_rope=True, libm_rope=True)
NUMERICS = {
    "reference": Numerics("reference"),
    "bitnet.cpp": Numerics("bitnet.cpp", **_BITNET_CPP, ggml_dot="avx512"),  # an AVX-512 build (-march=native)
    "bitnet.cpp-avx2": Numerics("bitnet.cpp-avx2", **_BITNET_CPP, ggml_dot="avx2"),
    # ik_llama.cpp: its layouts' own activation blocks (their runtime_linear) and the f16 KV cache
    "ik_llama.cpp": Numerics("ik_llama.cpp", kv_f16=True, ggml_rope=True, layout_activations=True),
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
        if name in ("model.embed_tokens.weight", "lm_head.weight") and quant_tensor(value) is not None:
            return quant_tensor(value)  # Q8_0 / Q6_K / Q5_K / Q4_K blocks, multiplied as ggml does
        value = value.f32()
    return np.asarray(value, dtype=np.float32)


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

    def f16_bits(self) -> np.ndarray | None:
        """The values as f16 bits (a GGUF F16 tensor whose values all happen to be bf16 is
        held as bf16), or None if f16 cannot hold them all."""
        if not hasattr(self, "_f16"):
            self._f16 = self.bits if self.kind == "f16" else _exact_f16_bits(self.bits, self.kind)
        return self._f16

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return half_to_float32(self.bits[ids], self.kind)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """x [T, K] -> [T, V]; a row's result does not depend on T (fixed order per row), nor
        on which other rows of the matrix are multiplied with it: a block of rows at a time."""
        return by_row_blocks(self.bits, lambda block: half_matmul(block, self.kind, x), x.shape[0])


def by_row_blocks(weights: np.ndarray, multiply, n: int, max_bytes: int = fastpath.CHUNK_BYTES) -> np.ndarray:
    """[n, V] results of `multiply(rows of weights)` a block of rows at a time: a mapped matrix
    is never resident whole (each block's pages leave this process once it is done)."""
    out = np.empty((n, weights.shape[0]), np.float32)
    step = max(1, max_bytes // max(1, weights[:1].nbytes))
    for start in range(0, weights.shape[0], step):
        block = weights[start:start + step]
        out[:, start:start + block.shape[0]] = multiply(block).reshape(n, -1)
        fastpath.drop_mapped_pages(block)
    return out


def _exact_f16_bits(bits: np.ndarray, kind: str) -> np.ndarray | None:
    """The f16 bits of 16-bit values, a block of rows at a time, or None if f16 cannot hold them."""
    out = np.empty(bits.shape, np.uint16)
    step = max(1, fastpath.CHUNK_BYTES // max(1, bits[:1].nbytes))
    for start in range(0, bits.shape[0], step):
        values = half_to_float32(bits[start:start + step], kind)
        with np.errstate(over="ignore"):
            f16 = values.astype(np.float16)
        if not np.array_equal(f16.astype(np.float32).view(np.uint32), values.view(np.uint32)):
            return None
        out[start:start + step] = f16.view(np.uint16)
        fastpath.drop_mapped_pages(bits[start:start + step])
    return out


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
            if name in self.tensors and not isinstance(self.tensors[name], (HalfTensor, QuantTensor)):
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
        if self.numerics.libm_rope:
            rope = ggml_rope.rope_tables(positions, self.config.head_dim, self.config.rope_theta)
        else:
            rope = floatops.rope_tables(positions, self.config.head_dim, self.config.rope_theta, self.numerics.ggml_rope)
        h = self.embedding.rows(ids) if isinstance(self.embedding, (HalfTensor, QuantTensor)) else self.embedding[ids]
        for layer in range(self.config.num_layers):
            h = self._layer(layer, h, rope)
            self._release_layer(layer)
        self.cache.length += ids.size
        self._last_hidden = h[-1:]
        logits = self._head(h if all_logits else h[-1:])
        return logits if all_logits else logits[0]

    def _head(self, h: np.ndarray) -> np.ndarray:
        """The final norm and the lm_head over hidden states h [T, hidden] (one row: rounded
        as ggml rounds a one-row lm_head input, in bitnet.cpp numerics)."""
        h = floatops.rms_norm(h, self.tensors["model.norm.weight"], self.config.rms_norm_eps)
        if self.numerics.single_row_f16 and h.shape[0] == 1 and not isinstance(self.lm_head, QuantTensor):
            h = round_f16(h)  # vec_dot_f16's f16 activations (a quantized head quantizes them itself)
        return self._logits(h)

    def prompt_and_prefill(self, ids: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`prompt_logits(ids)` and `prefill(ids)` from one pass over the layers: the prefill's
        row is the last position's hidden state through the one-row head, as `prefill` computes
        it (the layers run the same batch either way); the cache is left as `prefill` leaves it."""
        rows = self.prompt_logits(ids)
        return rows, self._head(self._last_hidden)[0]

    def _logits(self, h: np.ndarray) -> np.ndarray:
        head, ggml = self.lm_head, self.numerics.ggml_dot
        if isinstance(head, QuantTensor):  # ggml: activations to Q8_K / Q8_0, integer dot products
            return head.ggml_matmul(h) if ggml else floatops.f32_matmul(head.values(), h)
        if ggml and h.shape[0] == 1 and isinstance(head, HalfTensor) and head.f16_bits() is not None:
            # one row: vec_dot_f16, as ggml
            return by_row_blocks(head.f16_bits(), lambda block: floatops.ggml_f16_matmul(block, h, ggml), 1)
        if isinstance(self.lm_head, HalfTensor):
            return self.lm_head.matmul(h)
        # a row's logits never depend on the other rows
        return by_row_blocks(self.lm_head, lambda block: floatops.f32_matmul(block, h), h.shape[0])

    def _layer(self, layer: int, h: np.ndarray, rope: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        c, w = self.config, self._layer_tensors(layer)
        x = floatops.rms_norm(h, w["input_layernorm"], c.rms_norm_eps)
        attn = self._attention(layer, x, rope, w)
        h = h + self._linear(w["self_attn.o_proj"], self._sub_norm(attn, w, 0))
        x = floatops.rms_norm(h, w["post_attention_layernorm"], c.rms_norm_eps)
        ffn = floatops.activation(self._linear(w["mlp.gate_proj"], x), self._linear(w["mlp.up_proj"], x), c.hidden_act)
        return h + self._linear(w["mlp.down_proj"], self._sub_norm(ffn, w, 1))

    def _linear(self, matrix: PackedMatrix, x: np.ndarray) -> np.ndarray:
        own = get_layout(matrix.layout).runtime_linear(self.numerics.name) if self.numerics.layout_activations \
            else None
        return ternary_linear(matrix, x) if own is None else own(matrix, x)

    def _sub_norm(self, x: np.ndarray, w: dict, which: int) -> np.ndarray:
        """The family's attention (0) or FFN (1) sub-norm; identity where it has none."""
        names = self.config.sub_norms
        return x if names is None else floatops.rms_norm(x, w[names[which]], self.config.rms_norm_eps)

    def _attention(self, layer: int, x: np.ndarray, rope: tuple[np.ndarray, np.ndarray], w: dict) -> np.ndarray:
        c, num = self.config, self.numerics
        t, d = x.shape[0], c.head_dim
        rotate = ggml_rope.apply_rope if num.libm_rope else floatops.apply_rope
        q = rotate(self._linear(w["self_attn.q_proj"], x).reshape(t, c.num_heads, d), *rope)
        k = rotate(self._linear(w["self_attn.k_proj"], x).reshape(t, c.num_kv_heads, d), *rope)
        v = self._linear(w["self_attn.v_proj"], x).reshape(t, c.num_kv_heads, d)
        if num.kv_f16:
            k, v = round_f16(k), round_f16(v)
        if num.q_f16:
            q = round_f16(q)
        start = self.cache.length
        self.cache.store(layer, k.transpose(1, 0, 2), v.transpose(1, 0, 2))
        flags = (floatops.SOFTMAX_GGML if num.ggml_softmax else 0) | (floatops.SOFTMAX_AVX512 if num.ggml_dot == "avx512" else 0)
        if t == 1:  # a one-token step: ggml's vec_dot_f16 path, P rounded to f16
            flags |= (floatops.P_F16 if num.single_row_f16 else 0) | floatops.GGML_DOT.get(num.ggml_dot, 0)
        out = floatops.attention(q, self.cache.keys[layer], self.cache.values[layer], start,
                                 floatops.attention_scale(d), flags)
        return out.reshape(t, c.num_heads * d)

    def _release_layer(self, layer: int) -> None:
        """Drop the mapped file pages of a layer's projections once it has run: the model holds
        one layer's stored bytes at a time, not the file (they stay in the page cache)."""
        for part in PROJECTIONS:
            fastpath.drop_mapped_pages(self.tensors[f"model.layers.{layer}.{part}.weight"].data)

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
