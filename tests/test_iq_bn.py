"""ik_llama.cpp's IQ1_BN, IQ2_BN, IQ2_BN_R4 (layouts/iq_bn.py): round trips, ik's quantizer
rules, refusals, and the bytes of ik's own llama-quantize (fixtures/ik-tiny-a, ik-tiny-b)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, TINY_A
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fixtures import assert_checksums_hold

from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.errors import NotTernary, ScaleNotRepresentable, ShapeError
from bitnet_pack.formats.ggml_types import TypeTable
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.layouts.iq_bn import ik_codes
from bitnet_pack.formats.ternary import ZERO_BETA, TernaryWeight
from bitnet_pack.pipeline.sources import open_checkpoint

IK_A, IK_B = FIXTURES / "ik-tiny-a", FIXTURES / "ik-tiny-b"
TYPES = ("iq1_bn", "iq2_bn", "iq2_bn_r4")
ROW_BYTES = {"iq1_bn": lambda k: 2 + 13 * k // 64, "iq2_bn": lambda k: 4 + k // 4, "iq2_bn_r4": lambda k: 4 + k // 4}


@st.composite
def weights(draw, layout: str) -> TernaryWeight:
    """Odd shapes (R4: rows in fours), some all-zero rows, a bf16-exact or fp32 beta."""
    rows = draw(st.integers(1, 9)) * (4 if layout.endswith("_r4") else 1)
    cols = 64 * draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    codes[rng.random(rows) < 0.2] = 0
    beta = np.float32(draw(st.floats(2.0**-10, 1024.0, width=32)))
    return TernaryWeight(codes, beta)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), layout=st.sampled_from(TYPES))
def test_round_trip_odd_shapes_and_zero_rows(data, layout: str) -> None:
    weight = data.draw(weights(layout))
    chosen = get_layout(layout)
    blob = chosen.encode(weight, lossy=True)
    assert blob.size == chosen.nbytes(weight.shape) == weight.shape[0] * ROW_BYTES[layout](weight.shape[1])
    back = chosen.decode(blob, weight.shape)
    assert np.array_equal(back.codes, weight.codes)
    want = np.float32(np.float16(weight.beta)) if layout == "iq1_bn" else weight.beta
    if weight.codes.any():
        assert back.beta.tobytes() == np.float32(want).tobytes()
    # ik's own quantizer on the floats t * beta writes the same bytes
    floats = weight.codes.astype(np.float32) * np.float32(weight.beta)
    assert np.array_equal(chosen.encode_float(floats), blob)


@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from(TYPES), seed=st.integers(0, 2**32 - 1))
def test_float_rows_decode_to_ik_codes_times_row_scale(layout: str, seed: int) -> None:
    """Any float rows (not ternary): codes from max|x|/2, each row its own scale."""
    x = np.random.default_rng(seed).normal(size=(8, 128)).astype(np.float32)
    chosen = get_layout(layout)
    blob = chosen.encode_float(x)
    codes, d = chosen.unpack(blob, x.shape)
    want_codes, want_d = ik_codes(x)
    assert np.array_equal(codes, want_codes)
    assert np.array_equal(d, want_d.astype(chosen.d_dtype).astype(np.float32))
    with pytest.raises(NotTernary, match="different row scales"):
        chosen.decode(blob, x.shape)


def test_ik_threshold_and_all_zero_rows() -> None:
    x = np.zeros((4, 64), np.float32)
    x[0, :6] = [1.0, 0.5, 0.49999997, -0.50000006, -0.0, -1.0]
    x[2, 0] = -2.0
    codes, d = ik_codes(x)
    assert codes[0, :6].tolist() == [2, 2, 1, 0, 1, 0]
    assert d.tolist() == [1.0, 0.0, 2.0, 0.0]
    assert np.all(codes[1] == 2) and np.all(codes[3] == 2)  # ik's all-zero row: every code +1, scale 0
    for layout in ("iq2_bn", "iq2_bn_r4"):
        chosen = get_layout(layout)
        stored_codes, stored_d = chosen.unpack(chosen.encode(TernaryWeight(np.zeros((4, 64), np.int8), 1.0)), (4, 64))
        assert np.all(stored_codes == 2) and not stored_d.any()
        assert chosen.decode(chosen.encode(TernaryWeight(np.zeros((4, 64), np.int8), 1.0)), (4, 64)).beta == ZERO_BETA


IK_TYPE_IDS = {"iq1_bn": 134, "iq2_bn": 135, "iq2_bn_r4": 335}  # ggml.h enum ggml_type (ik 8337e4c)


def test_shapes_sizes_and_type_table() -> None:
    for layout in TYPES:
        with pytest.raises(ShapeError, match="in_features % 64 == 0"):
            get_layout(layout).check_shape((4, 96))
    with pytest.raises(ShapeError, match="out_features % 4 == 0"):
        get_layout("iq2_bn_r4").check_shape((6, 64))
    get_layout("iq2_bn").check_shape((6, 64))
    table = TypeTable.for_target("ik_llama.cpp")  # the entries' own table: ik's ids are no other runtime's
    for layout, type_id in IK_TYPE_IDS.items():
        assert table.name(type_id) == layout.upper() and table.type_id(layout.upper()) == type_id
        assert table.nbytes(type_id, (2560, 2560)) == 2560 * ROW_BYTES[layout](2560)
        assert get_layout(layout).spec.file_type == type_id + 2
    assert table.nbytes(135, (2560, 2560)) == 1_648_640  # ik PR #337's log
    assert table.nbytes(135, (3, 100)) is None
    assert table.nbytes(335, (6, 64)) is None  # R4 groups of four rows


def test_ik_files_are_read_with_ik_type_ids_from_their_file_type() -> None:
    """ik's files carry no bitnet_pack key: their general.file_type (136/137/337) names ik's table."""
    for path in sorted((FIXTURES / "ik-tiny-a").glob("*.gguf")):
        with GGUFFile(path) as file:
            assert file.types.flavour == "ik_llama.cpp", path.name
            assert {t.type_name for t in file.tensors.values()} & {"IQ1_BN", "IQ2_BN", "IQ2_BN_R4"}


def test_bad_bytes_and_scales_are_refused() -> None:
    weight = TernaryWeight(np.ones((4, 64), np.int8), np.float32(0.3))
    blob = get_layout("iq2_bn").encode(weight)
    blob[4] = 0xFF
    with pytest.raises(NotTernary, match="4 of 256 iq2_bn codes are 3"):
        get_layout("iq2_bn").decode(blob, (4, 64))
    blob = get_layout("iq1_bn").encode(weight, lossy=True)
    blob[2 + 12] = 255  # extra holds at most 80 -> byte 85
    with pytest.raises(NotTernary, match="1 of 52 iq1_bn bytes are not the base-3 encoding"):
        get_layout("iq1_bn").decode(blob, (4, 64))
    with pytest.raises(ScaleNotRepresentable, match="not exactly representable"):
        get_layout("iq1_bn").encode(weight)
    with pytest.raises(ScaleNotRepresentable, match="outside fp16's range"):
        get_layout("iq1_bn").encode(TernaryWeight(np.ones((1, 64), np.int8), np.float32(1e5)), lossy=True)


def test_ik_peer_checksums_hold() -> None:
    assert_checksums_hold(IK_A)
    assert_checksums_hold(IK_B)


@pytest.mark.parametrize("layout", TYPES)
def test_tiny_a_i2s_encodes_to_ik_llama_quantize_bytes(layout: str) -> None:
    """Every BN tensor of ik's `llama-quantize --allow-requantize tiny-a-i2_s.gguf` equals our
    encoding of the I2_S weight; decoding ik's bytes gives the I2_S codes and beta back."""
    with GGUFFile(TINY_A / "tiny-a-i2_s.gguf") as source, GGUFFile(IK_A / f"tiny-a-{layout}-embd_f16.gguf") as peer:
        bn = [n for n, t in peer.tensors.items() if t.type_name == layout.upper()]
        assert len(bn) == 14
        for name in bn:
            weight = get_layout("i2_s").decode(source.tensor_bytes(name), source.tensors[name].shape)
            ours = get_layout(layout).encode(weight, lossy=True)
            assert ours.tobytes() == peer.tensor_bytes(name).tobytes(), name
            back = get_layout(layout).decode(peer.tensor_bytes(name), peer.tensors[name].shape)
            assert np.array_equal(back.codes, weight.codes)
            want = np.float32(np.float16(weight.beta)) if layout == "iq1_bn" else weight.beta
            assert back.beta.tobytes() == np.float32(want).tobytes()


def _sha(data: np.ndarray) -> str:
    return hashlib.sha256(data.tobytes()).hexdigest()


def test_tiny_b_iq2_bn_bytes_become_ik_iq1_bn_and_r4_bytes() -> None:
    digests = json.loads((IK_B / "ik-tiny-b.digests.json").read_text())
    with GGUFFile(IK_B / "tiny-b-iq2_bn-embd_f16.gguf") as source:
        for layout in TYPES:
            peer = digests[f"tiny-b-{layout}-embd_f16.gguf"]["tensors"]
            for name, info in source.tensors.items():
                if info.type_name != "IQ2_BN":
                    continue
                weight = get_layout("iq2_bn").decode(source.tensor_bytes(name), info.shape)
                assert _sha(get_layout(layout).encode(weight, lossy=True)) == peer[name]["sha256"], (layout, name)


def test_tiny_b_master_encodes_to_ik_bytes(shared_vectors: Path) -> None:
    """From the BF16 master (absmean ternarisation), every tensor of ik's three files."""
    digests = json.loads((IK_B / "ik-tiny-b.digests.json").read_text())
    with open_checkpoint(shared_vectors / "ik-tiny-b" / "tiny-b-bf16") as source:
        loaded = {e.name: e.load() for e in source.entries() if e.kind == "linear"}
        for layout in TYPES:
            peer = digests[f"tiny-b-{layout}-embd_f16.gguf"]["tensors"]
            for hf_name, weight in loaded.items():
                name = source.family.to_gguf(hf_name)
                assert _sha(get_layout(layout).encode(weight, lossy=True)) == peer[name]["sha256"], (layout, name)
