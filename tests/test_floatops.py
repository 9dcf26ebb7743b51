"""The decode's float ops (kernels/floatops.c) against their numpy replay (floatops.py), bit
for bit, on every compiled backend and thread count, odd shapes included; and our own
exp/sin/cos against float64 libm (accuracy, not bits)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from bitnet_pack.engine import floatops, kernel
from bitnet_pack.formats import floatmath as fm

COMPILED = [b for b in kernel.available_backends() if b != "numpy"]
pytestmark = pytest.mark.skipif(not COMPILED, reason="pure mode: no compiled float ops to compare")


@pytest.fixture(params=[(b, n) for b in COMPILED for n in (1, 2, 3)], ids=lambda p: f"{p[0]}-{p[1]}t")
def backend_threads(request):
    """Each compiled backend x 1, 2, 3 threads, with every op split over the pool."""
    backend, threads = request.param
    before = kernel.num_threads()
    kernel.set_num_threads(threads)
    floatops.set_parallel_min(0)
    with kernel.use_backend(backend):
        yield backend
    floatops.set_parallel_min(1 << 20)
    kernel.set_num_threads(before)


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32).view(np.uint32)


def assert_same_bits(compiled: np.ndarray, reference: np.ndarray) -> None:
    assert compiled.shape == reference.shape
    differ = np.count_nonzero(bits(compiled) != bits(reference))
    assert differ == 0, f"{differ} of {compiled.size} values differ"


def reference(fn, *args):
    with kernel.use_backend("numpy"):
        return fn(*args)


def both(fn, *args):
    return fn(*args), reference(fn, *args)


@pytest.mark.parametrize("rows, k", [(1, 1), (3, 15), (2, 17), (5, 96), (1, 2560), (4, 6913)])
def test_rms_norm(backend_threads, rows, k):
    rng = np.random.default_rng(k)
    x = (rng.normal(0, 3, (rows, k)) * rng.uniform(0.01, 100, (rows, 1))).astype(np.float32)
    w = rng.uniform(0.5, 2, k).astype(np.float32)
    assert_same_bits(*both(floatops.rms_norm, x, w, 1e-5))


@pytest.mark.parametrize("ggml", [False, True])
@pytest.mark.parametrize("head_dim, theta", [(2, 10000.0), (64, 500000.0), (128, 10000.0), (6, 1e6)])
def test_rope_tables_and_rotation(backend_threads, ggml, head_dim, theta):
    positions = np.array([0, 1, 2, 7, 100, 4095, 70000])
    (cos, sin), (ref_cos, ref_sin) = both(floatops.rope_tables, positions, head_dim, theta, ggml)
    assert_same_bits(cos, ref_cos)
    assert_same_bits(sin, ref_sin)
    x = np.random.default_rng(head_dim).normal(0, 2, (len(positions), 3, head_dim)).astype(np.float32)
    assert_same_bits(*both(floatops.apply_rope, x, cos, sin))


@pytest.mark.parametrize("flags", [0, floatops.SOFTMAX_GGML, floatops.SOFTMAX_GGML | floatops.P_F16])
@pytest.mark.parametrize("t, start, heads, kv_heads, d", [
    (1, 0, 1, 1, 1), (5, 0, 4, 2, 64), (1, 40, 6, 2, 17), (3, 13, 6, 3, 33), (2, 31, 20, 5, 128)])
def test_attention(backend_threads, flags, t, start, heads, kv_heads, d):
    rng = np.random.default_rng(t * 1000 + d)
    capacity = start + t + 3  # a cache longer than what is filled: the tail must not be read
    keys = rng.normal(0, 1, (kv_heads, capacity, d)).astype(np.float32)
    values = rng.normal(0, 1, (kv_heads, capacity, d)).astype(np.float32)
    keys[:, start + t:] = values[:, start + t:] = np.nan
    q = rng.normal(0, 3, (t, heads, d)).astype(np.float32)
    compiled, numpy_out = both(floatops.attention, q, keys, values, start, floatops.attention_scale(d), flags)
    assert_same_bits(compiled, numpy_out)
    assert np.all(np.isfinite(compiled))


@pytest.mark.parametrize("kind", ["relu2", "silu"])
def test_activation(backend_threads, kind):
    rng = np.random.default_rng(5)
    gate = np.concatenate([rng.normal(0, 4, 997), [0.0, -0.0, 1e-30, -100.0, 100.0, 89.0, -89.0]]).astype(np.float32)
    up = rng.normal(0, 2, gate.size).astype(np.float32)
    assert_same_bits(*both(floatops.activation, gate, up, kind))


@pytest.mark.parametrize("n, v, k", [(1, 1, 1), (1, 37, 96), (3, 70, 17), (2, 513, 256)])
def test_f32_matmul(backend_threads, n, v, k):
    rng = np.random.default_rng(v)
    w = rng.normal(0, 0.5, (v, k)).astype(np.float32)
    x = rng.normal(0, 1, (n, k)).astype(np.float32)
    y, ref = both(floatops.f32_matmul, w, x)
    assert_same_bits(y, ref)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 88.72, 88.73, -87.33, -103.97, -104.0, 1e4, -1e4, np.inf, -np.inf]


def test_exp_equals_its_replay_and_is_within_an_ulp():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 30, 50000), rng.uniform(-110, 90, 50000), SPECIAL]).astype(np.float32)
    y = np.empty_like(x)
    kernel._ext.expf_array(x, y)
    assert_same_bits(y, fm.expf(x))
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64)).astype(np.float32)
    ulps = np.abs(bits(y).astype(np.int64) - bits(exact).astype(np.int64))
    assert ulps.max() <= 1
    assert y[x == -np.inf][0] == 0 and y[x == np.inf][0] == np.inf
    nan = np.array([np.nan], np.float32)
    kernel._ext.expf_array(nan, nan)
    assert np.isnan(nan[0])


def test_sin_cos_equal_their_replay_and_are_within_an_ulp():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-7, 7, 50000), rng.uniform(0, 1e5, 50000), [0.0, -0.0, 1e-20]]).astype(np.float32)
    sin, cos = np.empty_like(x), np.empty_like(x)
    kernel._ext.sincos_array(x, sin, cos)
    want_sin, want_cos = fm.sincos_d(x.astype(np.float64))
    assert_same_bits(sin, want_sin.astype(np.float32))
    assert_same_bits(cos, want_cos.astype(np.float32))
    for ours, libm in ((sin, np.sin), (cos, np.cos)):
        exact = libm(x.astype(np.float64)).astype(np.float32)
        assert np.abs(bits(ours).astype(np.int64) - bits(exact).astype(np.int64)).max() <= 1


def test_pow_and_log_are_accurate():
    y = np.linspace(-1, 1, 257)
    for base in (10000.0, 500000.0, 1e6):
        np.testing.assert_allclose(fm.pow_d(base, y), base ** y, rtol=2e-15, atol=0)
    x = np.geomspace(1e-300, 1e300, 1001)
    np.testing.assert_allclose(fm.log_d(x), np.log(x), rtol=1e-15, atol=1e-300)


def test_f16_rounding_equals_numpy_on_every_bit_pattern_class():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2**32, 300000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([65504, 65519.99, 65520, 2**-14, 2**-24, 2**-25, 3 * 2**-26, 2**-25 * 1.0000001, 1 + 2**-11,
                      1 + 3 * 2**-11], np.float32)
    x = np.concatenate([x[~np.isnan(x)], edges, -edges])
    y = np.empty_like(x)
    kernel._ext.round_f16_array(x, y)
    assert_same_bits(y, fm.round_f16(x))


@pytest.mark.parametrize("variant", ["avx512", "avx2"])
@pytest.mark.parametrize("n, v, k", [(1, 1, 1), (1, 37, 64), (2, 70, 100), (1, 513, 256), (1, 40, 2560)])
def test_ggml_f16_matmul(backend_threads, variant, n, v, k):
    rng = np.random.default_rng(k + v)
    w = rng.normal(0, 0.5, (v, k)).astype(np.float16)
    x = fm.round_f16(rng.normal(0, 1, (n, k)))
    y, ref = both(floatops.ggml_f16_matmul, w.view(np.uint16), x, variant)
    assert_same_bits(y, ref)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["avx512", "avx2"])
@pytest.mark.parametrize("start, heads, kv_heads, d", [(0, 1, 1, 64), (30, 4, 2, 64), (70, 6, 3, 128), (5, 2, 1, 33)])
def test_attention_in_ggml_order(backend_threads, variant, start, heads, kv_heads, d):
    rng = np.random.default_rng(start + d)
    keys, values = (fm.round_f16(rng.normal(0, 1, (kv_heads, start + 1, d))) for _ in range(2))
    q = fm.round_f16(rng.normal(0, 3, (1, heads, d)))
    flags = floatops.SOFTMAX_GGML | floatops.P_F16 | floatops.GGML_DOT[variant]
    compiled, numpy_out = both(floatops.attention, q, keys, values, start, floatops.attention_scale(d), flags)
    assert_same_bits(compiled, numpy_out)
    plain = floatops.attention(q, keys, values, start, floatops.attention_scale(d), flags & ~floatops.GGML_DOT[variant])
    np.testing.assert_allclose(compiled, plain, rtol=0, atol=1e-5)


def nearest_float32(value) -> np.float32:
    """The float32 nearest a Fraction, ties to even (exact, no double rounding)."""
    guess = np.float32(float(value))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    errors = [abs(Fraction(float(c)) - value) for c in candidates]
    best = min(errors)
    ties = [c for c, e in zip(candidates, errors, strict=True) if e == best]
    return min(ties, key=lambda c: int(np.array(c).view(np.uint32)) & 1)


def test_fmaf_rounds_once():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 1, (2, 3000)).astype(np.float32)
    c = -(a.astype(np.float64) * b).astype(np.float32) * rng.choice([1, 0.5, 2**-12], 3000).astype(np.float32)
    # a*b + c = 2^30 + 192 - 2^-24: just below the float32 midpoint 2^30 + 192, which float64
    # cannot tell from the midpoint (it would round to even, 2^30 + 256); and its negation
    hard_a, hard_b, hard_c = np.float32(64 + 2**-9), np.float32(1 - 2**-15), np.float32(2**30 + 128)
    a = np.concatenate([a, [hard_a, -hard_a]]).astype(np.float32)
    b = np.concatenate([b, [hard_b, hard_b]]).astype(np.float32)
    c = np.concatenate([c, [hard_c, -hard_c]]).astype(np.float32)
    ours = fm.fmaf(a, b, c)
    want = [nearest_float32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))) for x, y, z in zip(a, b, c, strict=True)]
    assert_same_bits(ours, np.array(want, np.float32))
    assert ours[-2] == np.float32(2**30 + 128) and ours[-1] == -ours[-2]
    assert np.count_nonzero(ours != (a.astype(np.float64) * b + c).astype(np.float32)) >= 2  # double rounding differs
    compiled = np.empty_like(ours)
    kernel._ext.fmaf_array(a, b, c, compiled)
    assert_same_bits(compiled, ours)


def test_ggml_avx512_expf_equals_its_replay_and_is_within_two_ulps():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-110, 0, 100000), rng.uniform(0, 90, 1000), SPECIAL]).astype(np.float32)
    y = np.empty_like(x)
    kernel._ext.ggml_expf_avx512_array(x, y)
    assert_same_bits(y, fm.ggml_expf_avx512(x))
    with np.errstate(over="ignore"):
        exact = np.exp(x.astype(np.float64)).astype(np.float32)
    normal = (exact > np.float32(2**-126)) & np.isfinite(exact)
    assert np.abs(bits(y[normal]).astype(np.int64) - bits(exact[normal]).astype(np.int64)).max() <= 2
    assert y[x == -np.inf][0] == 0 and y[x == np.inf][0] == np.inf


@pytest.mark.parametrize("t, start", [(1, 0), (1, 40), (5, 0), (3, 29)])
def test_attention_with_the_avx512_softmax(backend_threads, t, start):
    rng = np.random.default_rng(t + start)
    keys, values = (fm.round_f16(rng.normal(0, 1, (2, start + t, 64))) for _ in range(2))
    q = fm.round_f16(rng.normal(0, 3, (t, 4, 64)))
    flags = floatops.SOFTMAX_GGML | floatops.SOFTMAX_AVX512 | (floatops.GGML_DOT["avx512"] | floatops.P_F16 if t == 1 else 0)
    assert_same_bits(*both(floatops.attention, q, keys, values, start, floatops.attention_scale(64), flags))
