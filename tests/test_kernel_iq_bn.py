"""The kernel's walks of IQ1_BN, IQ2_BN, IQ2_BN_R4 (kernels/iq_bn.c, layouts/iq_bn_kernel.py):
every backend against the numpy reference on odd shapes, ik's zero rows, refusals, and
`verify` of I2_S against each ik type made from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_A
from hypothesis import given, settings
from hypothesis import strategies as st

import bitnet_pack
from bitnet_pack.engine import kernel
from bitnet_pack.errors import FormatError, NotTernary
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.ternary import TernaryWeight

TYPES = ("iq1_bn", "iq2_bn", "iq2_bn_r4")
BACKENDS = kernel.available_backends()


def packed(layout: str, codes: np.ndarray, beta: float = 0.375) -> kernel.PackedMatrix:
    blob = get_layout(layout).encode(TernaryWeight(codes, np.float32(beta)))
    return kernel.PackedMatrix.from_bytes(layout, blob, codes.shape)


def assert_every_backend_matches(matrix: kernel.PackedMatrix, x: np.ndarray, codes: np.ndarray) -> None:
    q = np.clip(np.rint(x * 40), -128, 127).astype(np.int8)
    want_int = (q.astype(np.int64) @ codes.T.astype(np.int64)).astype(np.int32)  # from the codes, not the bytes
    assert np.array_equal(kernel.reference_matmul_int(matrix, q), want_int)
    ref = kernel.reference_linear(matrix, x)
    for backend in BACKENDS:
        with kernel.use_backend(backend):
            assert np.array_equal(kernel.ternary_matmul_int(matrix, q), want_int), backend
            assert kernel.ternary_linear(matrix, x).tobytes() == ref.tobytes(), backend
            assert kernel.ternary_linear(matrix, x[:1]).tobytes() == ref[:1].tobytes(), backend


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(TYPES), rows=st.integers(1, 13), blocks=st.integers(1, 9), tokens=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_every_backend_equals_the_reference_on_odd_shapes(layout, rows, blocks, tokens, seed) -> None:
    rng = np.random.default_rng(seed)
    m, k = rows * (4 if layout.endswith("_r4") else 1), 64 * blocks
    codes = rng.integers(-1, 2, (m, k)).astype(np.int8)
    codes[rng.random(m) < 0.25] = 0  # all-zero rows: ik's code 2 with d = 0
    matrix = packed(layout, codes)
    assert np.array_equal(matrix.codes(), codes)
    assert_every_backend_matches(matrix, rng.normal(size=(tokens, k)).astype(np.float32), codes)


@pytest.mark.parametrize("layout", TYPES)
def test_large_products_run_threaded_and_match(layout: str) -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(-1, 2, (516, 1088)).astype(np.int8)
    codes[::37] = 0
    assert_every_backend_matches(packed(layout, codes), rng.normal(size=(9, 1088)).astype(np.float32), codes)


@pytest.mark.parametrize("layout", TYPES)
def test_ik_zero_rows_read_as_zero_and_beta_is_the_shared_row_scale(layout: str) -> None:
    x = np.zeros((8, 128), np.float32)
    x[[0, 2, 5]] = np.where(np.arange(128) % 3 == 0, -0.25, 0.25)
    blob = get_layout(layout).encode_float(x)  # ik's llama-quantize: zero rows all code 2, d = 0
    matrix = kernel.PackedMatrix.from_bytes(layout, blob, x.shape)
    assert matrix.beta == np.float32(0.25)
    codes = np.sign(x).astype(np.int8)
    assert np.array_equal(matrix.codes(), codes)
    assert_every_backend_matches(matrix, np.random.default_rng(1).normal(size=(3, 128)).astype(np.float32), codes)


@pytest.mark.parametrize("layout", TYPES)
def test_rows_with_different_scales_or_bad_bytes_are_refused(layout: str) -> None:
    x = np.ones((4, 64), np.float32)
    x[1] *= 2
    with pytest.raises(NotTernary, match="2 different non-zero scales"):
        kernel.PackedMatrix.from_bytes(layout, get_layout(layout).encode_float(x), x.shape)
    blob = get_layout(layout).encode(TernaryWeight(np.ones((4, 64), np.int8), np.float32(0.5)))
    head = 2 if layout == "iq1_bn" else (16 if layout.endswith("_r4") else 4)
    nan = blob.copy()
    nan[:head] = 0xFF
    with pytest.raises(FormatError, match="NaN, Inf or negative"):
        kernel.PackedMatrix.from_bytes(layout, nan, (4, 64))
    bad = blob.copy()
    bad[head + (12 if layout == "iq1_bn" else 0)] = 0xFF  # four codes of 3; an `extra` byte above 80's
    for backend in BACKENDS:
        with kernel.use_backend(backend), pytest.raises(NotTernary, match="no ternary value"):
            kernel.PackedMatrix.from_bytes(layout, bad, (4, 64))


def test_verify_i2s_against_each_ik_type_made_from_it(tmp_path: Path) -> None:
    """IQ2_BN and IQ2_BN_R4 keep beta in f32: bit-identical logits. IQ1_BN rounds beta to fp16:
    identical after that declared rounding, which --strict names as the only cause; it equals
    TQ2_0 (also fp16 beta) bit for bit."""
    source = TINY_A / "tiny-a-i2_s.gguf"
    outs = {t: tmp_path / f"{t}.gguf" for t in (*TYPES, "tq2_0")}
    for outtype, out in outs.items():
        bitnet_pack.convert(source, out, outtype=outtype)
    for layout in ("iq2_bn", "iq2_bn_r4"):
        report = bitnet_pack.verify(source, outs[layout], tokens=4)
        assert report.identical and report.kernels == ("i2_s", layout)
    rounded = bitnet_pack.verify(source, outs["iq1_bn"], tokens=4)
    assert rounded.identical and rounded.rounded.startswith("β to fp16 (IQ1_BN row scales) in 14 tensors")
    strict = bitnet_pack.verify(source, outs["iq1_bn"], tokens=4, strict=True)
    assert not strict.identical and strict.cause.startswith("scale rounding only: ternary codes identical in all 14")
    same = bitnet_pack.verify(outs["tq2_0"], outs["iq1_bn"], tokens=4)
    assert same.identical and same.kernels == ("tq2_0", "iq1_bn")
