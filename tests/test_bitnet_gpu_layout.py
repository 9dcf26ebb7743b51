"""The bitnet-gpu layout's bytes: pack_weight.py transcribed step by step, round trips, refusals."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from bitnet_pack.errors import NotTernary, ShapeError
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.layouts.bitnet_gpu import fake_quant_bits, gpu_beta, slot_of
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.proof.testing import layout_weights

LAYOUT = get_layout("bitnet-gpu")


def shared_load_position(i: int, j: int) -> tuple[int, int]:
    """pack_weight.B_global_16x32_to_shared_load_16x32_layout, as its docstring's formula reads."""
    thread = i * 2 + j // 16
    return (thread // 16) * 8 + thread % 8, j % 16 + 16 * ((thread % 16) // 8)


def pack_weight_steps(codes: np.ndarray) -> np.ndarray:
    """convert_weight_int8_to_int2, one element at a time: +2, permute, compress, interleave."""
    n, k = codes.shape
    shifted = codes.astype(np.int64) + 2
    permuted = np.zeros((n // 16, k // 32, 16, 32), np.int64)
    for a in range(n // 16):
        for b in range(k // 32):
            for i in range(16):
                for j in range(32):
                    row, col = shared_load_position(i, j)
                    permuted[a, b, i, j] = shifted[a * 16 + row, b * 32 + col]
    compressed = np.zeros((n // 16, k // 32, 16, 8), np.int64)
    for j in range(8):
        for bit in range(4):
            compressed[..., j] |= permuted[..., 4 * j + bit] << (2 * bit)
    words = compressed.astype(np.uint8).view("<u4").astype(np.int64)  # each 4 bytes one int32
    interleaved = np.zeros_like(words)
    for offset in range(16):
        shift = (offset % 4) * 8 + (offset // 4) * 2
        interleaved |= ((words >> (2 * offset)) & 3) << shift
    return interleaved.astype("<u4").view(np.int8).reshape(n, k // 4)


@pytest.mark.parametrize("shape", [(16, 32), (32, 64), (48, 96)])
def test_encode_is_pack_weight(shape: tuple[int, int]) -> None:
    codes = np.random.default_rng(shape[0]).integers(-1, 2, size=shape).astype(np.int8)
    blob = LAYOUT.encode(TernaryWeight(codes, np.float32(0.5)))
    assert blob.dtype == np.int8 and blob.shape == (shape[0], shape[1] // 4)
    assert np.array_equal(blob, pack_weight_steps(codes))
    assert np.array_equal(LAYOUT.decode(blob, shape, beta=0.5).codes, codes)


def test_the_tile_picture() -> None:
    """One +1 at tile element (0, 0): source (0, 0); at tile (1, 0): thread 2, source row 2.
    Tile row i's 32 codes fill 8 bytes; code offset 0 sits in bits 1..0, offset 1 in bits 9..8."""
    codes = np.zeros((16, 32), np.int8)
    codes[2, 0] = 1  # tile element (1, 0): the second tile row, first code
    blob = LAYOUT.encode(TernaryWeight(codes, np.float32(1))).view(np.uint8).reshape(16, 8)
    assert blob[1, 0] == 0b10_10_10_11 and np.all(blob[0] == 0b10_10_10_10)  # code 3 (t = +1) at bits 1..0
    codes = np.zeros((16, 32), np.int8)
    codes[0, 1] = -1  # tile element (0, 1) -> word offset 1 -> byte 1, bits 1..0
    blob = LAYOUT.encode(TernaryWeight(codes, np.float32(1))).view(np.uint8).reshape(16, 8)
    assert blob[0, 1] == 0b10_10_10_01 and blob[0, 0] == 0b10_10_10_10


@settings(max_examples=60, deadline=None)
@given(weight=layout_weights("bitnet-gpu", max_rows=96, max_cols=256))
def test_round_trip(weight: TernaryWeight) -> None:
    blob = LAYOUT.encode(weight)
    assert blob.nbytes == LAYOUT.nbytes(weight.shape) == weight.shape[0] * weight.shape[1] // 4
    assert LAYOUT.decode(blob, weight.shape, beta=weight.beta).same_as(weight)


def test_rules_carry_the_numbers() -> None:
    with pytest.raises(ShapeError, match=r"out_features % 16 == 0.*got out_features 24"):
        LAYOUT.check_shape((24, 64))
    with pytest.raises(ShapeError, match=r"in_features % 32 == 0.*got in_features 48"):
        LAYOUT.check_shape((16, 48))
    with pytest.raises(ShapeError, match="pass beta="):
        LAYOUT.decode(np.zeros((16, 8), np.int8), (16, 32))
    blob = LAYOUT.encode(TernaryWeight(np.zeros((16, 32), np.int8), np.float32(1)))
    blob[3, 2] = 0
    with pytest.raises(NotTernary, match=r"4 of 512 bitnet-gpu codes are 0"):
        LAYOUT.decode(blob, (16, 32), beta=1.0)


def test_scale_slots_as_bitnet_cpp_computes_them() -> None:
    # bf16 mean 0.2177..., s = bf16(1/m) = 4.59375, slot = bf16(1/s) = 0.2177734375
    assert gpu_beta(np.float32(0.21779194)) == np.float32(0.2177734375)
    # two bf16 reciprocals move o_proj of tiny-a's layer 0 one ulp below bf16(mean)
    assert slot_of(np.float32(0.21722)) == np.float32(0.216796875)
    assert gpu_beta(np.float32(0.21722)) == np.float32(0.2158203125)
    weight = TernaryWeight(np.array([[1, 0, -1, 0]], np.int8), np.float32(0.25))
    bits = fake_quant_bits(weight, np.array([[False, True, False, False]]))
    assert bits.tolist() == [[0x3E80, 0x8000, 0xBE80, 0x0000]]
