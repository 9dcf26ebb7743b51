"""The shared semantics: absmean weights and absmax int8 activations, bit-exact with torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.containers.shards import SafetensorsDir
from bitnet_pack.errors import NonFiniteActivation, NonFiniteWeight, ShapeError
from bitnet_pack.formats.dtypes import bf16_to_f32, f32_to_bf16, round_to_bf16
from bitnet_pack.formats.ternary import ZERO_BETA, TernaryWeight, quantize_activations, ternarize
from bitnet_pack.formats.torchsum import torch_mean, torch_sum


def weight_quant(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """transformers' WeightQuant, step by step, in torch (the thing we must equal)."""
    t = torch.from_numpy(w).float()
    s = 1.0 / t.abs().mean().clamp(min=1e-5)
    codes = (t * s).round().clamp(-1, 1)
    return codes.to(torch.int8).numpy(), np.float32((1.0 / s).item())


@pytest.fixture(autouse=True)
def two_threads():
    """torch's float32 sum depends on its thread count; the vectors were made with 2."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 31, 33, 100, 1000, 4097, 32767, 32768, 32769, 65536, 100003, 300001])
def test_torch_sum_is_bit_exact(size: int) -> None:
    values = np.abs(np.random.default_rng(size).standard_normal(size).astype(np.float32))
    assert torch_sum(values) == np.float32(torch.from_numpy(values).sum().item())
    assert torch_mean(values) == np.float32(torch.from_numpy(values).mean().item())


def test_single_thread_variant_matches_torch_with_one_thread() -> None:
    values = np.abs(np.random.default_rng(5).standard_normal(200_001).astype(np.float32))
    torch.set_num_threads(1)
    assert torch_sum(values, threads=1) == np.float32(torch.from_numpy(values).sum().item())


def test_vectors_ternarize_exactly_like_weight_quant(tiny_a) -> None:
    master = SafetensorsDir(tiny_a / "tiny-a-bf16")
    projections = [n for n in master.where if n.endswith("_proj.weight")]
    assert len(projections) == 14
    for name in projections:
        w = bf16_to_f32(master.raw(name))
        ours = ternarize(w, tensor=name)
        codes, beta = weight_quant(w)
        assert np.array_equal(ours.codes, codes), name
        assert ours.beta.tobytes() == beta.tobytes(), name


@settings(max_examples=300)
@given(st.integers(1, 40), st.integers(1, 300), st.floats(1e-3, 10.0), st.integers(0, 2**32 - 1))
def test_ternarize_matches_weight_quant(rows: int, cols: int, std: float, seed: int) -> None:
    w = (std * np.random.default_rng(seed).standard_normal((rows, cols))).astype(np.float32)
    ours = ternarize(w)
    codes, beta = weight_quant(w)
    assert np.array_equal(ours.codes, codes)
    assert ours.beta.tobytes() == beta.tobytes()


def test_ternarize_rejects_nan_naming_the_tensor() -> None:
    w = np.ones((4, 8), np.float32)
    w[2, 3] = np.nan
    with pytest.raises(NonFiniteWeight, match=r"'blk\.0'.*1 NaN/Inf"):
        ternarize(w, tensor="blk.0")
    with pytest.raises(ShapeError, match="2-D"):
        ternarize(np.ones(8, np.float32))


def test_all_zero_weight_gets_the_canonical_beta_and_tiny_weights_the_eps_clamp() -> None:
    tw = ternarize(np.zeros((3, 5), np.float32))
    assert not tw.codes.any()
    assert tw.beta == ZERO_BETA  # W = 0 whatever beta is: the one value every layout reads back
    tiny = ternarize(np.full((3, 5), 1e-7, np.float32))
    assert not tiny.codes.any()
    assert tiny.beta == np.float32(1) / (np.float32(1) / np.float32(1e-5))


@given(st.integers(1, 6), st.integers(1, 70), st.integers(0, 2**32 - 1))
def test_activation_quant_is_bitnet_cpps_rule(tokens: int, features: int, seed: int) -> None:
    """bitnet.cpp's quantize_row_i8_s: s = 127 / max(|x|, 1e-5) in double, stored as float."""
    x = (np.random.default_rng(seed).standard_normal((tokens, features)) * 3).astype(np.float32)
    q, s = quantize_activations(x)
    amax = np.maximum(np.abs(x).max(axis=-1).astype(np.float64), np.float64(np.float32(1e-5)))
    expected_s = (127.0 / amax).astype(np.float32)
    assert np.array_equal(s, expected_s)
    t = torch.from_numpy(x) * torch.from_numpy(expected_s)[:, None]
    assert np.array_equal(q, t.round().clamp(-128, 127).to(torch.int8).numpy())


@given(st.integers(1, 4), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_transformers_scale_differs_by_at_most_one_ulp(tokens: int, features: int, seed: int) -> None:
    """transformers' ActQuant writes `127 / amax`, which torch evaluates as
    reciprocal(amax) * 127 (two roundings); ours is one correctly rounded division."""
    x = (np.random.default_rng(seed).standard_normal((tokens, features))).astype(np.float32)
    _, s = quantize_activations(x)
    theirs = (127 / torch.from_numpy(x).abs().max(dim=-1).values.clamp(min=1e-5)).numpy()
    assert np.all(np.abs(s.view(np.int32) - theirs.view(np.int32)) <= 1)


def test_activation_quant_rounds_half_to_even_and_handles_zero_rows() -> None:
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5], [0, 0, 0, 0, 0, 0]], np.float32)
    q, s = quantize_activations(x)
    assert q[0].tolist() == [127, 0, 2, 2, 0, -2]
    assert q[1].tolist() == [0] * 6 and s[1] == np.float32(127) / np.float32(1e-5)


def test_bf16_conversion_is_round_to_nearest_even_like_torch() -> None:
    values = np.random.default_rng(3).standard_normal(10000).astype(np.float32) * 1e3
    values[:4] = [np.inf, -np.inf, 0.0, -0.0]
    bits = f32_to_bf16(values)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bits, expected)
    assert np.array_equal(bf16_to_f32(bits), round_to_bf16(values))
    assert np.isnan(bf16_to_f32(f32_to_bf16(np.array([np.nan], np.float32))))[0]


def test_ternary_weight_validates_and_compares() -> None:
    with pytest.raises(ShapeError):
        TernaryWeight(np.zeros((2, 2), np.int16), 1.0)
    a = TernaryWeight(np.array([[1, 0, -1]], np.int8), 0.5)
    assert a.same_as(TernaryWeight(a.codes.copy(), np.float32(0.5)))
    assert not a.same_as(TernaryWeight(a.codes.copy(), np.float32(0.5000001)))
    assert a.counts() == (1, 1, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_activation_quant_reference_refuses_non_finite_rows(bad: float) -> None:
    """The one numpy definition refuses NaN/Inf rows as the compiled kernel does."""
    x = np.ones((4, 8), np.float32)
    x[2, 3] = bad
    with pytest.raises(NonFiniteActivation, match="1 of 4 activation rows"):
        quantize_activations(x)
