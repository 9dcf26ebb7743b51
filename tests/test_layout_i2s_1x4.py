"""i2_s_1x4, bitnet.cpp's weight-parallel I2_S: bytes, round trips, GGUF both ways, verify."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

from bitnet_pack import verify
from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import kernel
from bitnet_pack.errors import FormatError, NotTernary, ShapeError, UsageError
from bitnet_pack.formats.layouts import get_layout
from bitnet_pack.formats.layouts.i2s_1x4 import WRITE_NOTE
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.pipeline.sources import load_weights
from bitnet_pack.proof.testing import layout_weights

LAYOUT = get_layout("i2_s_1x4")


def c_quantizer_bytes(codes: np.ndarray, beta: float) -> np.ndarray:
    """mad.cpp's `#else` branch of quantize_i2_s, transcribed loop for loop (q8 = t + 1)."""
    nrow, n_per_row = codes.shape
    q8 = (codes.astype(np.int64) + 1).reshape(-1)
    out = np.zeros(nrow * n_per_row // 4 + 32, np.uint8)
    for rg in range(nrow // 4):
        base = rg * n_per_row
        for col in range(n_per_row):
            q = [q8[(rg * 4 + j) * n_per_row + col] for j in range(4)]
            out[base + col] = (q[0] << 6) | (q[1] << 4) | (q[2] << 2) | q[3]
    out[nrow * n_per_row // 4:][:4] = np.frombuffer(np.float32(beta).tobytes(), np.uint8)
    return out


def test_bytes_are_the_c_quantizers() -> None:
    codes = np.random.default_rng(3).integers(-1, 2, size=(8, 256)).astype(np.int8)
    blob = LAYOUT.encode(TernaryWeight(codes, np.float32(0.375)))
    assert np.array_equal(blob, c_quantizer_bytes(codes, 0.375))
    assert blob.size == 8 * 256 // 4 + 32 == LAYOUT.nbytes((8, 256))


def test_the_diagram_first_row_on_top() -> None:
    codes = np.zeros((4, 128), np.int8)
    codes[0, 0], codes[1, 0], codes[2, 0], codes[3, 0] = 1, -1, 0, 1  # q = 2, 0, 1, 2
    codes[3, 127] = -1
    blob = LAYOUT.encode(TernaryWeight(codes, np.float32(1)))
    assert blob[0] == 0b10_00_01_10 and blob[127] == 0b01_01_01_00 and blob[1] == 0b01_01_01_01


@settings(max_examples=60, deadline=None)
@given(weight=layout_weights("i2_s_1x4", max_rows=64, max_cols=512))
def test_round_trip(weight: TernaryWeight) -> None:
    assert weight.shape[0] % 4 == 0 and weight.shape[1] % 128 == 0
    blob = LAYOUT.encode(weight)
    assert LAYOUT.decode(blob, weight.shape).same_as(weight)
    assert np.array_equal(blob, c_quantizer_bytes(weight.codes, weight.beta)) or weight.shape[0] > 16


def test_nothing_in_the_bytes_tells_the_builds_apart() -> None:
    codes = np.random.default_rng(5).integers(-1, 2, size=(8, 128)).astype(np.int8)
    weight = TernaryWeight(codes, np.float32(0.25))
    x86, one_by_four = get_layout("i2_s").encode(weight), LAYOUT.encode(weight)
    assert x86.size == one_by_four.size and np.array_equal(x86[-32:], one_by_four[-32:])
    assert not get_layout("i2_s").decode(one_by_four, weight.shape).same_as(weight)
    assert not LAYOUT.decode(x86, weight.shape).same_as(weight)


def test_shape_and_byte_rules_carry_the_numbers() -> None:
    with pytest.raises(ShapeError, match=r"out_features % 4 == 0.*got out_features 6"):
        LAYOUT.check_shape((6, 128))
    with pytest.raises(ShapeError, match=r"in_features % 128 == 0.*got in_features 96"):
        LAYOUT.check_shape((4, 96))
    blob = LAYOUT.encode(TernaryWeight(np.zeros((4, 128), np.int8), np.float32(1)))
    blob[5] = 0xC0
    with pytest.raises(NotTernary, match=r"1 of 512 i2_s_1x4 codes are 3"):
        LAYOUT.decode(blob, (4, 128))


def _convert(*args: object) -> str:
    result = CliRunner().invoke(main, ["convert", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stderr


def test_official_i2s_to_1x4_and_back(tiny_a: Path, tmp_path: Path) -> None:
    peer = tiny_a / "tiny-a-i2_s.gguf"
    out = tmp_path / "w.gguf"
    err = _convert(peer, out, "--outtype", "i2_s_1x4")
    assert WRITE_NOTE in " ".join(err.split())
    official, ours = GGUFFile(peer), GGUFFile(out)
    assert ours.get("bitnet_pack.layout") == "i2_s_1x4" and ours.get("general.file_type") == 40
    _, codes = load_weights(peer)
    checked = 0
    for name, info in official.tensors.items():
        if info.type_name != "I2_S":
            continue
        assert ours.tensors[name].type_name == "I2_S" and ours.tensors[name].nbytes == info.nbytes
        hf_name = next(n for n in codes if n.endswith(_suffix(name)))
        weight = codes[hf_name]
        assert np.array_equal(ours.tensor_bytes(name), c_quantizer_bytes(weight.codes, weight.beta))
        checked += 1
    assert checked == 14
    back = _convert(out, tmp_path / "x86.gguf", "--outtype", "i2_s")  # bitnet_pack.layout says 1x4
    assert "weight-parallel" not in back
    again = GGUFFile(tmp_path / "x86.gguf")
    for name, info in official.tensors.items():
        if info.type_name == "I2_S":
            keep = info.nbytes - 28  # the peer's tail bytes 4..31 are uninitialised
            assert np.array_equal(again.tensor_bytes(name)[:keep], official.tensor_bytes(name)[:keep])


def _suffix(gguf_name: str) -> str:
    layer, part = gguf_name.split(".")[1], gguf_name.split(".")[2]
    hf = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}[part]
    return f"layers.{layer}.{hf}.weight"


def test_the_variant_option_reads_a_file_without_our_key(tiny_a: Path, tmp_path: Path) -> None:
    """A 1x4 file from bitnet.cpp itself has no bitnet_pack.layout: only --i2s-variant tells."""
    from hostile_cases import rewrite_gguf

    recorded = tmp_path / "recorded.gguf"
    _convert(tiny_a / "tiny-a-i2_s.gguf", recorded, "--outtype", "i2_s_1x4")
    with pytest.raises(UsageError, match="records its layout as i2_s_1x4"):  # our key says it: never overridden
        load_weights(recorded, i2s_variant="x86")
    ours = rewrite_gguf(recorded, tmp_path / "w.gguf", kv=lambda kvs: kvs.pop("bitnet_pack.layout"))
    _, want = load_weights(tiny_a / "tiny-a-i2_s.gguf")
    _, told = load_weights(ours, i2s_variant="1x4")
    _, misread = load_weights(ours, i2s_variant="x86")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert told[name].same_as(want[name]) and not misread[name].same_as(want[name])
    result = CliRunner().invoke(main, ["inspect", str(ours), "--i2s-variant", "1x4", "--json"])
    assert result.exit_code == 0 and '"i2_s_1x4"' in result.stdout


def test_verify_official_i2s_against_1x4_is_identical(tiny_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.gguf"
    _convert(tiny_a / "tiny-a-i2_s.gguf", out, "--outtype", "i2_s_1x4")
    report = verify(tiny_a / "tiny-a-i2_s.gguf", out, tokens=4)
    assert report.ok and report.identical


@settings(max_examples=25, deadline=None)
@given(weight=layout_weights("i2_s_1x4", max_rows=44, max_cols=384))
def test_the_kernel_walks_its_own_bytes_in_its_row_order(weight: TernaryWeight) -> None:
    """No decode: the hf tile walks the stored code bytes in place, outputs taken in the entry's
    row order; products equal I2_S's bit for bit, on every backend; codes read back from the
    bytes the kernel walks are the weight's (the row order checked against the C quantizer's bytes)."""
    blob = c_quantizer_bytes(weight.codes, weight.beta)
    matrix = kernel.PackedMatrix.from_bytes("i2_s_1x4", blob, weight.shape)
    assert (matrix.walk, matrix.beta) == ("hf", np.float32(weight.beta))
    assert np.shares_memory(matrix.codes_bytes, matrix.data) and matrix.codes_bytes.size == blob.size - 32
    assert np.array_equal(matrix.codes(), weight.codes)
    i2s = kernel.PackedMatrix.from_ternary(weight, "i2_s")
    rng = np.random.default_rng(weight.shape[0] * weight.shape[1])
    x = rng.standard_normal((3, weight.shape[1])).astype(np.float32)
    q = rng.integers(-128, 128, (2, weight.shape[1])).astype(np.int8)
    for backend in kernel.available_backends():
        with kernel.use_backend(backend):
            assert np.array_equal(kernel.ternary_linear(matrix, x).view(np.uint32),
                                  kernel.ternary_linear(i2s, x).view(np.uint32)), backend
            assert np.array_equal(kernel.ternary_matmul_int(matrix, q), kernel.ternary_matmul_int(i2s, q)), backend


def test_the_kernel_refuses_bad_bytes_and_a_wrong_beta() -> None:
    weight = TernaryWeight(np.ones((8, 128), np.int8), np.float32(0.5))
    blob = LAYOUT.encode(weight)
    with pytest.raises(FormatError, match="carry beta 0.5 but beta=0.25"):
        kernel.PackedMatrix("i2_s_1x4", blob, (8, 128), 0.25)
    bad = blob.copy()
    bad[5] = 0xFF  # four codes of 3
    with pytest.raises(NotTernary, match="4 of 1024 i2_s_1x4 codes are 3"):
        kernel.PackedMatrix.from_bytes("i2_s_1x4", bad, (8, 128))
    padded = blob.copy()
    padded[-1] = 0xFF  # the 28 bytes after beta are not codes
    assert kernel.PackedMatrix.from_bytes("i2_s_1x4", padded, (8, 128)).beta == np.float32(0.5)
