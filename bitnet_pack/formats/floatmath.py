"""The numpy replay of kernels/floatmath.h (exp, log, pow, sin, cos, f16 rounding) and of
the lane sum of kernels/floatops.h, step for step, so that it gives the C code's bits.

Only IEEE-exact numpy operations are used: + - * / and sqrt on float32 / float64 arrays,
comparisons, and bit reinterpretation. numpy's own exp/sin/cos/power (and glibc's, which
numpy's float64 ufuncs call) have per-ISA variants whose last bits differ between machines.
"""
from __future__ import annotations

import numpy as np

RINT_MAGIC = np.float64(float.fromhex("0x1.8p52"))
LN2 = np.float64(float.fromhex("0x1.62e42fefa39efp-1"))
LN2_HI = np.float64(float.fromhex("0x1.62e42fee00000p-1"))
LN2_LO = np.float64(float.fromhex("0x1.a39ef35793c76p-33"))
INV_LN2 = np.float64(float.fromhex("0x1.71547652b82fep+0"))
SQRT2 = np.float64(float.fromhex("0x1.6a09e667f3bcdp+0"))
TWO_OVER_PI = np.float64(float.fromhex("0x1.45f306dc9c883p-1"))
PIO2 = [np.float64(float.fromhex(h)) for h in ("0x1.921fb54400000p+0", "0x1.0b4611a600000p-34",
                                                 "0x1.3198a2e037073p-69")]


def _coefficients(*hexes: str) -> list[np.float64]:
    return [np.float64(float.fromhex(h)) for h in hexes]


EXP_COEF = _coefficients(  # 1/n!, n = 0..13
    "0x1p+0", "0x1p+0", "0x1p-1", "0x1.5555555555555p-3", "0x1.5555555555555p-5", "0x1.1111111111111p-7",
    "0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-13", "0x1.a01a01a01a01ap-16", "0x1.71de3a556c734p-19",
    "0x1.27e4fb7789f5cp-22", "0x1.ae64567f544e4p-26", "0x1.1eed8eff8d898p-29", "0x1.6124613a86d09p-33")
LOG_COEF = _coefficients(  # 1/(2i+1), i = 0..10
    "0x1p+0", "0x1.5555555555555p-2", "0x1.999999999999ap-3", "0x1.2492492492492p-3", "0x1.c71c71c71c71cp-4",
    "0x1.745d1745d1746p-4", "0x1.3b13b13b13b14p-4", "0x1.1111111111111p-4", "0x1.e1e1e1e1e1e1ep-5",
    "0x1.af286bca1af28p-5", "0x1.8618618618618p-5")
SIN_COEF = _coefficients(  # (-1)^i/(2i+1)!, i = 0..8
    "0x1p+0", "-0x1.5555555555555p-3", "0x1.1111111111111p-7", "-0x1.a01a01a01a01ap-13",
    "0x1.71de3a556c734p-19", "-0x1.ae64567f544e4p-26", "0x1.6124613a86d09p-33", "-0x1.ae7f3e733b81fp-41",
    "0x1.952c77030ad4ap-49")
COS_COEF = _coefficients(  # (-1)^i/(2i)!, i = 0..9
    "0x1p+0", "-0x1p-1", "0x1.5555555555555p-5", "-0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-16",
    "-0x1.27e4fb7789f5cp-22", "0x1.1eed8eff8d898p-29", "-0x1.93974a8c07c9dp-37", "0x1.ae7f3e733b81fp-45",
    "-0x1.6827863b97d97p-53")
LANES = 16


def rint(x: np.ndarray) -> np.ndarray:
    return (x + RINT_MAGIC) - RINT_MAGIC


def horner(coef: list[np.float64], x: np.ndarray) -> np.ndarray:
    acc = np.full_like(x, coef[-1])
    for c in reversed(coef[:-1]):
        acc = acc * x + c
    return acc


def exp_d(x: np.ndarray) -> np.ndarray:
    """exp in float64 (floatmath.h bp_exp_d); NaN stays NaN."""
    x = np.asarray(x, np.float64)
    x = np.where(x < -200.0, -200.0, np.where(x > 100.0, 100.0, x))
    k = rint(x * INV_LN2)
    r = (x - k * LN2_HI) - k * LN2_LO
    n = np.where(np.isnan(k), 0, k).astype(np.int64)
    scale = ((n + 1023) << 52).astype(np.uint64).view(np.float64)
    return horner(EXP_COEF, r) * scale


def expf(x: np.ndarray) -> np.ndarray:
    """float32 exp: the float64 one rounded once (above ~88.72 to Inf)."""
    with np.errstate(over="ignore"):
        return exp_d(np.asarray(x, np.float32).astype(np.float64)).astype(np.float32)


def log_d(x: np.ndarray) -> np.ndarray:
    """log in float64 of positive normal x (floatmath.h bp_log_d)."""
    bits = np.asarray(x, np.float64).view(np.uint64)
    e = (bits >> np.uint64(52)).astype(np.int64) - 1023
    m = ((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000)).view(np.float64)
    big = m >= SQRT2
    m = np.where(big, m * 0.5, m)
    e = e + big
    s = (m - 1.0) / (m + 1.0)
    return e.astype(np.float64) * LN2 + 2.0 * s * horner(LOG_COEF, s * s)


def pow_d(base: float, y: np.ndarray) -> np.ndarray:
    """base ** y in float64 for base > 0: exp(y * log(base))."""
    return exp_d(np.asarray(y, np.float64) * log_d(np.asarray([base], np.float64))[0])


def sincos_d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) in float64 (floatmath.h bp_sincos_d)."""
    x = np.asarray(x, np.float64)
    k = rint(x * TWO_OVER_PI)
    r = ((x - k * PIO2[0]) - k * PIO2[1]) - k * PIO2[2]
    r2 = r * r
    s, c = r * horner(SIN_COEF, r2), horner(COS_COEF, r2)
    quadrant = k.astype(np.int64) & 3
    sin = np.choose(quadrant, [s, c, -s, -c])
    cos = np.choose(quadrant, [c, -s, -c, s])
    return sin, cos


def round_f16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest f16 -> float32 (numpy's conversion rounds to nearest even)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def lane_sum(terms: np.ndarray) -> np.ndarray:
    """The sum16 of floatops.h over the last axis, in terms' dtype: 16 strided lanes summed
    block by block from +0, then the halving fold."""
    n = terms.shape[-1]
    padded = np.zeros(terms.shape[:-1] + (-(-n // LANES) * LANES,), terms.dtype)
    padded[..., :n] = terms
    blocks = padded.reshape(terms.shape[:-1] + (-1, LANES))
    lanes = np.zeros(terms.shape[:-1] + (LANES,), terms.dtype)
    for b in range(blocks.shape[-2]):
        lanes = lanes + blocks[..., b, :]
    return fold(lanes)


def fold(lanes: np.ndarray) -> np.ndarray:
    """The halving fold of 16 lanes (last axis): j + 8, j + 4, j + 2, j + 1."""
    for half in (8, 4, 2, 1):
        lanes = lanes[..., :half] + lanes[..., half: 2 * half]
    return lanes[..., 0]


def lane_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum16 of the float32 products a * b over the last axis (broadcasting)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return lane_sum(a * b)


def lane_matmul(weight_columns, v: int, x: np.ndarray) -> np.ndarray:
    """[N, V] = x [N, K] times weights [V, K] in the sum16 order, reading the float32 weight
    columns start:stop from `weight_columns(start, stop)` block by block."""
    k = x.shape[1]
    lanes = np.zeros((x.shape[0], v, LANES), np.float32)
    product = np.empty_like(lanes)
    for start in range(0, k, LANES):
        width = min(LANES, k - start)
        w_block = np.zeros((v, LANES), np.float32)
        x_block = np.zeros((x.shape[0], LANES), np.float32)
        w_block[:, :width] = weight_columns(start, start + width)
        x_block[:, :width] = x[:, start: start + width]
        np.multiply(w_block[None], x_block[:, None], out=product)
        lanes += product
    return fold(lanes)


GGML_LANES = {"avx512": 64, "avx2": 32}


def ggml_dot(a: np.ndarray, b: np.ndarray, split: int, variant: str) -> np.ndarray:
    """ggml_vec_dot_f16's order over the last axis (kernels/floatops_ggml.c), a and b float32
    holding f16 values (broadcasting): lanes below split - split % lanes, the lane fold,
    then the remaining products added in double."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
    lanes_n = GGML_LANES[variant]
    n = a.shape[-1]
    simd = min(split - split % lanes_n, n)
    lanes = np.zeros(a.shape[:-1] + (lanes_n,), np.float32)
    for start in range(0, simd, lanes_n):
        width = min(lanes_n, simd - start)
        lanes[..., :width] = lanes[..., :width] + a[..., start: start + width] * b[..., start: start + width]
    stop = 4 if variant == "avx2" else 1
    while lanes.shape[-1] > stop:
        half = lanes.shape[-1] // 2
        lanes = lanes[..., :half] + lanes[..., half:]
    folded = (lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3]) if variant == "avx2" else lanes[..., 0]
    total = folded.astype(np.float64)
    for i in range(simd, n):
        total = total + (a[..., i] * b[..., i]).astype(np.float64)
    return total.astype(np.float32)


def fmaf(a, b, c) -> np.ndarray:
    """float32 a*b + c rounded once (floatmath.h bp_fmaf): exact product and TwoSum in float64,
    the remainder deciding only a float midpoint."""
    a, b, c = np.broadcast_arrays(*(np.asarray(v, np.float32) for v in (a, b, c)))
    p, cd = a.astype(np.float64) * b.astype(np.float64), c.astype(np.float64)
    s = p + cd
    bb = s - p
    e = (p - (s - bb)) + (cd - bb)
    r = s.astype(np.float32)
    up = (s > r.astype(np.float64)) == (r > 0)
    other = np.where(up, r.view(np.uint32) + np.uint32(1), r.view(np.uint32) - np.uint32(1)).view(np.float32)
    on_midpoint = s == (r.astype(np.float64) + other.astype(np.float64)) * 0.5
    fix = (e != 0) & (r.astype(np.float64) != s) & on_midpoint & ((e > 0) == (other > r))
    return np.where(fix, other, r)


_V_EXPF = {name: np.float32(float.fromhex(h)) for name, h in (
    ("shift", "0x1.8p23"), ("log2e", "0x1.715476p+0"), ("ln2_hi", "0x1.62e4p-1"), ("ln2_lo", "0x1.7f7d1cp-20"),
    ("c5", "0x1.0e4020p-7"), ("c4", "0x1.573e2ep-5"), ("c3", "0x1.555e66p-3"), ("c2", "0x1.fffdb6p-2"),
    ("c1", "0x1.ffffecp-1"))}


def ggml_expf_avx512(x: np.ndarray) -> np.ndarray:
    """ggml_v_expf of ggml's AVX-512 build (floatmath.h bp_ggml_expf_avx512)."""
    c = _V_EXPF
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        n = fmaf(x, c["log2e"], c["shift"]) - c["shift"]
        inside = (n <= 192) & (n >= -192)
        n = np.where(inside, n, np.float32(0))
        b = fmaf(-n, c["ln2_lo"], fmaf(-n, c["ln2_hi"], x))
        u = b * b
        j = fmaf(fmaf(fmaf(c["c5"], b, c["c4"]), u, fmaf(c["c3"], b, c["c2"])), u, fmaf(c["c1"], b, np.float32(1)))
        scale = ((n.astype(np.int64) + 1023) << 52).astype(np.uint64).view(np.float64)
        res = (j.astype(np.float64) * scale).astype(np.float32)
    return np.where(inside, res, np.where(x > 0, np.float32(np.inf), np.float32(0)))


SQRT_2_OVER_PI = np.float64(0.7978845608028654)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """float32 GELU, tanh form (gelu_pytorch_tanh, ggml_gelu): 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
    in float64 with tanh(u) = 1 - 2 / (exp(2u) + 1) from exp_d, rounded to float32 once."""
    wide = np.asarray(x, np.float32).astype(np.float64)
    inner = SQRT_2_OVER_PI * (wide + 0.044715 * wide * wide * wide)
    tanh = 1.0 - 2.0 / (exp_d(2.0 * inner) + 1.0)
    return (0.5 * wide * (1.0 + tanh)).astype(np.float32)
