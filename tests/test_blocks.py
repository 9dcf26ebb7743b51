"""The block-at-a-time comparisons give what a whole float32 comparison gives, for every pair of
stored types (the bf16/f16 shortcut through the compiled table included), across block edges."""
from __future__ import annotations

import numpy as np
import pytest

from bitnet_pack.engine.blocks import float_differences, same_bytes
from bitnet_pack.engine.model import HalfTensor
from bitnet_pack.formats import fastpath
from bitnet_pack.pipeline.sources import Tensor


def whole(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    unequal = a.view(np.uint32) != b.view(np.uint32)
    return int(np.count_nonzero(unequal)), float(np.abs(a - b).max()) if unequal.any() else 0.0


def stored(values: np.ndarray, kind: str) -> object:
    if kind == "f32":
        return values
    if kind == "F16":
        return Tensor("F16", values.astype(np.float16))
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # values are bf16-exact
    return HalfTensor("bf16", bits) if kind == "bf16-half" else Tensor("BF16", bits)


@pytest.mark.parametrize("kinds", [("bf16-half", "F16"), ("BF16", "F16"), ("F16", "f32"), ("BF16", "bf16-half")])
@pytest.mark.parametrize("changed", [0, 1, 40])
def test_float_differences_equal_a_whole_comparison(kinds, changed: int, monkeypatch) -> None:
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 4 * 37 * 5)  # blocks of 5 rows of 37: edges inside
    rng = np.random.default_rng(changed)
    exact = rng.integers(-128, 128, (23, 37)).astype(np.float32) / 64  # 8 significant bits: bf16 and f16
    other = exact.copy()
    rows, cols = rng.integers(0, 23, changed), rng.integers(0, 37, changed)
    other[rows, cols] += np.float32(1 / 32)  # still exact in both
    a, b = stored(exact, kinds[0]), stored(other, kinds[1])
    assert float_differences(a, b) == whole(exact, other)


def test_a_value_f16_cannot_hold_is_a_difference() -> None:
    values = np.array([[1.0, 2.0 ** -26, 3.0]], np.float32)  # 2^-26: bf16-exact, below f16 (0)
    a = HalfTensor("bf16", (values.view(np.uint32) >> 16).astype(np.uint16))
    b = Tensor("F16", values.astype(np.float16))
    assert float_differences(a, b) == whole(values, values.astype(np.float16).astype(np.float32))
    assert float_differences(a, b)[0] == 1


def test_same_bytes_finds_one_byte_in_any_block(monkeypatch) -> None:
    monkeypatch.setattr(fastpath, "CHUNK_BYTES", 64)
    data = np.arange(1000, dtype=np.uint32).view(np.uint8)
    assert same_bytes(data, data.copy())
    for where in (0, 63, 64, data.size - 1):
        other = data.copy()
        other[where] ^= 1
        assert not same_bytes(data, other)
    assert not same_bytes(data, data[:-1])
