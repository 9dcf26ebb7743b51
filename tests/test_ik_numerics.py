"""`--numerics ik_llama.cpp` (bitnet_pack/engine/iq_bn_numerics.py): ik's Q8_K64 / Q8_K16 activation groups, and the
greedy ids ik_llama.cpp recorded for ik-tiny-b reproduced from the files' own bytes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

import bitnet_pack
from bitnet_pack.engine import kernel
from bitnet_pack.engine.iq_bn_numerics import group_index, ik_linear, quantize_groups
from bitnet_pack.engine.runner import loaded
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.ternary import TernaryWeight

IK_B = FIXTURES / "ik-tiny-b"
RECORDED = json.loads((IK_B / "ik-tiny-b.decode.json").read_text())
TYPES = ("iq1_bn", "iq2_bn", "iq2_bn_r4")


def test_groups_are_ik_block_positions() -> None:
    assert group_index(64, "k64")[:20].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [0] * 4
    assert group_index(128, "k16")[[0, 15, 16, 63, 64, 80]].tolist() == [0, 0, 1, 3, 0, 1]
    x = np.zeros((1, 64), np.float32)
    x[0, 0], x[0, 1], x[0, 4] = 127.0, 63.5, -2.0  # group 0 amax 127 -> d 1; 63.5 rounds half to even
    q, d = quantize_groups(x, "k64")
    assert d[0].tolist() == [1.0, np.float32(2.0) / np.float32(127), 0.0, 0.0]
    assert q[0, :2].tolist() == [127, 64] and q[0, 4] == -127 and not q[0, 8:].any()


@settings(max_examples=25, deadline=None)
@given(layout=st.sampled_from(TYPES), seed=st.integers(0, 2**32 - 1))
def test_ik_linear_is_the_group_formula_on_every_backend(layout: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, k = 8, 64 * int(rng.integers(1, 5))
    codes = rng.integers(-1, 2, (m, k)).astype(np.int8)
    weight = TernaryWeight(codes, np.float32(0.25))
    matrix = kernel.PackedMatrix.from_bytes(layout, get_layout(layout).encode(weight), (m, k))
    x = rng.normal(size=(3, k)).astype(np.float32)
    q, d = quantize_groups(x, "k16" if layout.endswith("_r4") else "k64")
    g = group_index(k, "k16" if layout.endswith("_r4") else "k64")
    want = np.zeros((3, m), np.float32)
    for i in range(4):
        want += d[:, i:i + 1] * (q[:, g == i].astype(np.int32) @ codes[:, g == i].T.astype(np.int32)).astype(np.float32)
    want *= np.float32(0.25)
    for backend in kernel.available_backends():
        with kernel.use_backend(backend):
            assert ik_linear(matrix, x, get_layout(layout).activation_blocks).tobytes() == want.tobytes(), backend
            own = get_layout(layout).runtime_linear("ik_llama.cpp")
            assert own(matrix, x).tobytes() == want.tobytes(), backend


@pytest.fixture(scope="module")
def ik_files(tmp_path_factory) -> dict[str, Path]:
    """ik's IQ2_BN file and our IQ1_BN / IQ2_BN_R4 made from it (byte-equal to ik's: test_iq_bn)."""
    out = tmp_path_factory.mktemp("ik")
    files = {"iq2_bn": IK_B / "tiny-b-iq2_bn-embd_f16.gguf"}
    for layout in ("iq1_bn", "iq2_bn_r4"):
        files[layout] = out / f"tiny-b-{layout}-embd_f16.gguf"
        bitnet_pack.convert(files["iq2_bn"], files[layout], outtype=layout)
    return files


def greedy(path: Path, numerics: str) -> list[list[int]]:
    with loaded(path, numerics) as side:
        return [side.model.generate_ids(p["prompt"], RECORDED["n_generate"])[0] for p in RECORDED["prompts"]]


@pytest.mark.parametrize("layout", TYPES)
def test_ik_numerics_reproduce_ik_ids_with_f16_embedding(ik_files, layout: str) -> None:
    want = [p["ik"][f"tiny-b-{layout}-embd_f16.gguf"]["ids"] for p in RECORDED["prompts"]]
    assert greedy(ik_files[layout], "ik_llama.cpp") == want


def test_reference_numerics_do_not(ik_files) -> None:
    """The mode matters: per-token activations give another first token on IQ2_BN prompt 1."""
    want = RECORDED["prompts"][0]["ik"]["tiny-b-iq2_bn-embd_f16.gguf"]["ids"]
    assert greedy(ik_files["iq2_bn"], "reference")[0][0] != want[0]


@pytest.mark.parametrize("layout", TYPES)
def test_ik_numerics_reproduce_ik_ids_with_q6k_embedding(shared_vectors: Path, layout: str) -> None:
    """ik's default files (Q6_K token_embd, read through gguf-py's dequantizer)."""
    want = [p["ik"][f"tiny-b-{layout}.gguf"]["ids"] for p in RECORDED["prompts"]]
    assert greedy(shared_vectors / "ik-tiny-b" / f"tiny-b-{layout}.gguf", "ik_llama.cpp") == want


def test_llama_cli_hello_world_ids(shared_vectors: Path) -> None:
    """ik's llama-cli on tiny-b-iq2_bn.gguf, "hello world", 8 greedy tokens (README of ik-tiny-b)."""
    with loaded(shared_vectors / "ik-tiny-b" / "tiny-b-iq2_bn.gguf", "ik_llama.cpp") as side:
        ids, _ = side.model.generate_ids([1, 398, 428, 354, 430, 279, 272, 439, 438], 8)
    assert ids == [401, 355, 481, 233, 357, 476, 168, 72]
