"""The decode's float operations, in one order on every machine (kernels/floatops.h).

RMSNorm, the RoPE tables and rotation, causal GQA attention (Q.K, softmax, P.V), the MLP
activation (relu2, silu) and the float32 lm_head run in the project's C (one portable unit,
`-ffp-contract=off`, outputs split whole over threads) with sums in the 16-lane order of
floatops.h and exp/sin/cos/pow of kernels/floatmath.h. With the numpy backend
(BITNET_PACK_PUREPYTHON=1 or `kernel.use_backend("numpy")`) the `reference_*` functions
below replay that order in numpy; tests hold the two equal bit for bit. No BLAS, no libm,
no numpy transcendental ufunc: the logits do not depend on the CPU, the OpenBLAS core type,
the backend or the thread count. Elementwise + - * / and sqrt stay in numpy where they are
IEEE-exact (the residual adds, f16 rounding of K/V/Q).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, UsageError
from ..formats import floatmath as fm
from . import kernel as _kernel

ACTIVATIONS = {"relu2": 0, "silu": 1}
SOFTMAX_GGML, P_F16 = 1, 2  # attention flags (floatops.h)
GGML_DOT = {"avx512": 4, "avx2": 8}  # flag and variant: ggml_vec_dot_f16's order (floatops_ggml.c)
SOFTMAX_AVX512 = 16  # with SOFTMAX_GGML: ggml_vec_soft_max_f32 of the AVX-512 build (ggml_v_expf)


def _compiled() -> bool:
    return _kernel.BACKEND != "numpy" and _kernel._ext is not None


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def attention_scale(head_dim: int) -> np.float32:
    """1 / sqrt(d) rounded to float32 (sqrt and division are IEEE-exact)."""
    return np.float32(1.0 / math.sqrt(head_dim))


# ---- dispatch ---------------------------------------------------------------------------


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x [..., K] normalised per row, times weight [K]."""
    x, weight = _f32(x), _f32(weight)
    if not _compiled() or x.size == 0:
        return reference_rms_norm(x, weight, eps)
    rows = x.reshape(-1, x.shape[-1])
    y = np.empty_like(rows)
    _kernel._ext.rms_norm(rows, weight, eps, y)
    return y.reshape(x.shape)


def rope_tables(positions: np.ndarray, head_dim: int, theta: float, ggml: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, head_dim/2] float32 for the NeoX pairs (i, i + head_dim/2)."""
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if not _compiled():
        return reference_rope_tables(positions, head_dim, theta, ggml)
    cos = np.empty((positions.size, head_dim // 2), np.float32)
    sin = np.empty_like(cos)
    _kernel._ext.rope_tables(positions, head_dim, float(theta), int(ggml), cos, sin)
    return cos, sin


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [T, heads, d] rotated (a new array): (a, b) -> (a*cos - b*sin, b*cos + a*sin)."""
    if not _compiled():
        return reference_apply_rope(_f32(x), cos, sin)
    out = np.array(x, dtype=np.float32, order="C")
    _kernel._ext.rope_apply(out, _f32(cos), _f32(sin))
    return out


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start: int, scale: np.float32,
              flags: int = 0) -> np.ndarray:
    """Causal GQA attention of q [T, H, d] at positions start.. over the cache's keys and
    values [KV, capacity, d] (positions < start + T filled) -> [T, H, d]."""
    q, keys, values = _f32(q), _f32(keys), _f32(values)
    t, heads, d = q.shape
    if keys.shape != values.shape or keys.shape[2] != d or heads % keys.shape[0] or start + t > keys.shape[1]:
        raise ShapeError(f"attention: q {list(q.shape)}, keys {list(keys.shape)}, values {list(values.shape)}, "
                         f"start {start}")
    if not _compiled():
        return reference_attention(q, keys, values, start, scale, flags)
    out = np.empty_like(q)
    _kernel._ext.attention(q, keys, values, start, scale, flags, out)
    return out


def activation(gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
    """relu2: relu(gate)^2 * up; silu: gate * sigmoid(gate) * up (float32)."""
    if kind not in ACTIVATIONS:
        raise UsageError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {kind!r}")
    gate, up = _f32(gate), _f32(up)
    if gate.shape != up.shape:
        raise ShapeError(f"gate {list(gate.shape)} and up {list(up.shape)} must have one shape")
    if not _compiled() or gate.size == 0:
        return reference_activation(gate, up, kind)
    out = np.empty_like(gate)
    _kernel._ext.activation(gate.reshape(-1), up.reshape(-1), ACTIVATIONS[kind], out.reshape(-1))
    return out


ACT_GELU_TANH = 2  # kernels/floatops.h: the embedding models' Gemma3 MLP (embedding_*), not in ACTIVATIONS (LMs)


def gelu_tanh_mul(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """GELU-tanh(gate) * up (float32), as floatmath.gelu_tanh defines it."""
    gate, up = _f32(gate), _f32(up)
    if not _compiled() or gate.size == 0:
        return fm.gelu_tanh(gate) * up
    out = np.empty_like(gate)
    _kernel._ext.activation(gate.reshape(-1), up.reshape(-1), ACT_GELU_TANH, out.reshape(-1))
    return out


def f32_matmul(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x [N, K] times float32 weights [V, K] -> [N, V] (the lm_head when not 16-bit)."""
    weights, x = _f32(weights), _f32(x)
    if not _compiled():
        return reference_f32_matmul(weights, x)
    y = np.empty((x.shape[0], weights.shape[0]), np.float32)
    _kernel._ext.f32_matmul(weights, x, y)
    return y


def ggml_f16_matmul(bits: np.ndarray, x: np.ndarray, variant: str) -> np.ndarray:
    """x [N, K] (f16 values) times f16 weights [V, K] (uint16 bits) -> [N, V] in
    ggml_vec_dot_f16's order of the `variant` build ("avx512" or "avx2")."""
    bits, x = np.ascontiguousarray(bits, np.uint16), _f32(x)
    if not _compiled():
        return reference_ggml_f16_matmul(bits, x, variant)
    y = np.empty((x.shape[0], bits.shape[0]), np.float32)
    _kernel._ext.ggml_f16_matmul(bits, x, GGML_DOT[variant], y)
    return y


def set_parallel_min(work: int) -> None:
    """Float ops and half_matmul with less work (multiply-adds) stay on one thread; 0 splits
    everything (for tests: the bits must not change). Default 2**20."""
    if _kernel._ext is not None:
        _kernel._ext.float_parallel_min(int(work))


# ---- the numpy reference ----------------------------------------------------------------


def reference_rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    squares = (x * x).astype(np.float64)
    mean = (fm.lane_sum(squares) / x.shape[-1]).astype(np.float32)[..., None]
    inv = np.float32(1.0) / np.sqrt(mean + np.float32(eps))
    return (x * inv) * weight


def reference_rope_tables(positions: np.ndarray, head_dim: int, theta: float,
                          ggml: bool) -> tuple[np.ndarray, np.ndarray]:
    half = head_dim // 2
    if ggml:
        exponent = np.float32(-2.0) / np.float32(head_dim)
        step = fm.pow_d(theta, np.array([exponent], np.float64)).astype(np.float32)[0]
        angles = np.empty((len(positions), half), np.float32)
        angles[:, 0] = positions.astype(np.float32)
        for i in range(1, half):
            angles[:, i] = angles[:, i - 1] * step
    else:
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        inv_freq = np.float32(1.0) / fm.pow_d(theta, exponents.astype(np.float64)).astype(np.float32)
        angles = positions.astype(np.float32)[:, None] * inv_freq
    sin, cos = fm.sincos_d(angles.astype(np.float64))
    return cos.astype(np.float32), sin.astype(np.float32)


def reference_apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def _avx512_block_sum(e: np.ndarray) -> np.ndarray:
    """ggml's AVX-512 softmax sum: the 32-padded cells in blocks of 16 folded by halves in
    float32, the blocks added in double."""
    cells = -(-e.shape[-1] // 32) * 32
    padded = np.zeros(e.shape[:-1] + (cells,), np.float32)
    padded[..., : e.shape[-1]] = e
    total = np.zeros(e.shape[:-1], np.float64)
    for start in range(0, cells, fm.LANES):
        lanes = padded[..., start: start + fm.LANES]
        for half in (8, 4, 2, 1):
            lanes = lanes[..., :half] + lanes[..., half: 2 * half]
        total = total + lanes[..., 0].astype(np.float64)
    return total


def reference_softmax(scores: np.ndarray, flags: int) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    avx512 = flags & SOFTMAX_AVX512 and flags & SOFTMAX_GGML
    e = fm.ggml_expf_avx512(shifted) if avx512 else fm.expf(shifted)
    if avx512:
        probs = e * (1.0 / _avx512_block_sum(e)).astype(np.float32)[..., None]
    elif flags & SOFTMAX_GGML:
        probs = e * (1.0 / fm.lane_sum(e.astype(np.float64))).astype(np.float32)[..., None]
    else:
        probs = e / fm.lane_sum(e)[..., None]
    return fm.round_f16(probs) if flags & P_F16 else probs


def reference_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start: int,
                        scale: np.float32, flags: int) -> np.ndarray:
    t, heads, d = q.shape
    kv_of_head = np.arange(heads) // (heads // keys.shape[0])
    ggml = next((name for name, bit in GGML_DOT.items() if flags & bit), None)
    out = np.empty_like(q)
    for i in range(t):
        n = start + i + 1
        k, v = keys[kv_of_head, :n], values[kv_of_head, :n]  # [H, n, d]
        if ggml:
            scores = fm.ggml_dot(q[i][:, None, :], k, d, ggml) * np.float32(scale)
        else:
            scores = fm.lane_dot(q[i][:, None, :], k) * np.float32(scale)
        probs = reference_softmax(scores, flags)  # [H, n]
        if ggml:  # llama.cpp runs P.V over the KV cells padded to 32
            out[i] = fm.ggml_dot(probs[:, None, :], v.transpose(0, 2, 1), -(-n // 32) * 32, ggml)
        else:
            out[i] = fm.lane_sum(probs[:, None, :] * v.transpose(0, 2, 1))
    return out


def reference_activation(gate: np.ndarray, up: np.ndarray, kind: str) -> np.ndarray:
    if kind == "silu":
        return (gate / (np.float32(1.0) + fm.expf(-gate))) * up
    r = np.where(gate < 0, np.float32(0.0), gate)
    return (r * r) * up


def reference_ggml_f16_matmul(bits: np.ndarray, x: np.ndarray, variant: str) -> np.ndarray:
    weights = bits.view(np.float16)
    return np.stack([fm.ggml_dot(row, weights.astype(np.float32), bits.shape[1], variant) for row in x]) \
        if x.shape[0] else np.zeros((0, bits.shape[0]), np.float32)


def reference_f32_matmul(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return fm.lane_matmul(lambda start, stop: weights[:, start:stop], weights.shape[0], x)
