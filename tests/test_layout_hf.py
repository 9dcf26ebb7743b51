"""The `hf` layout: transformers' plane-major packing, checked against transformers itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from transformers.integrations.bitnet import pack_weights, unpack_weights

from bitnet_pack.errors import NotTernary, ShapeError
from bitnet_pack.formats.layouts import get_layout, normalize_name
from bitnet_pack.proof.testing.strategies import ternary_weights

HF = get_layout("hf")


def test_names_are_normalised() -> None:
    assert normalize_name("TQ2_0") == normalize_name("tq2-0") == "tq2-0"
    assert get_layout("HF") is HF


@given(ternary_weights(max_rows=67, max_cols=70))
def test_round_trip_is_exact(weight) -> None:
    packed = HF.encode(weight)
    assert packed.shape == HF.stored_shape(weight.shape) == (-(-weight.shape[0] // 4), weight.shape[1])
    assert HF.decode(packed, weight.shape, beta=weight.beta).same_as(weight)


@given(ternary_weights(max_rows=64, max_cols=40, row_multiple=4))
def test_bytes_equal_transformers_pack_weights(weight) -> None:
    theirs = pack_weights(torch.from_numpy(weight.codes.astype(np.float32)).clone())
    assert np.array_equal(HF.encode(weight), theirs.numpy())
    unpacked = unpack_weights(torch.from_numpy(HF.encode(weight)), dtype=torch.float32)
    assert np.array_equal(unpacked.numpy().astype(np.int8), weight.codes)


def test_worked_example_from_transformers_docstring() -> None:
    # byte 0b10100001 at [0, 0] with R = 2 unpacks rows 0, 2, 4, 6 to 0, -1, +1, +1
    packed = np.ones((2, 1), np.uint8) * 0b01010101
    packed[0, 0] = 0b10100001
    codes = HF.decode(packed, (8, 1), beta=1.0).codes[:, 0]
    assert codes[[0, 2, 4, 6]].tolist() == [0, -1, 1, 1]


def test_odd_rows_pad_with_zero_codes_and_never_mutate_input() -> None:
    codes = np.array([[1, -1], [0, 1], [-1, -1]], np.int8)
    before = codes.copy()
    from bitnet_pack.formats.ternary import TernaryWeight

    packed = HF.encode(TernaryWeight(codes, 2.0))
    assert np.array_equal(codes, before)
    assert packed.shape == (1, 2)
    assert packed[0].tolist() == [(2 | 1 << 2 | 0 << 4 | 1 << 6), (0 | 2 << 2 | 0 << 4 | 1 << 6)]


def test_errors_name_the_rule() -> None:
    from bitnet_pack.formats.ternary import TernaryWeight

    with pytest.raises(ShapeError, match=r"must be \[2, 3\], got \[1, 3\]"):
        HF.decode(np.zeros((1, 3), np.uint8), (8, 3), beta=1.0)
    with pytest.raises(NotTernary, match="1 of 6 codes"):
        HF.encode(TernaryWeight(np.array([[0, 2, 0], [1, 1, 1]], np.int8), 1.0))
    with pytest.raises(NotTernary, match="are 3"):
        HF.decode(np.full((1, 3), 0xFF, np.uint8), (4, 3), beta=1.0)
