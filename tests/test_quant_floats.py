"""Quantized token embeddings out (`--embedding-type q8_0|q6_k|q5_k|q4_k`), and the quantized
output matrix multiplied as ggml does (bitnet_pack/formats/quant_floats.py, quant_dot.py).

The bytes are compared, block by block, with llama-quantize's own files of tiny-a
(fixtures/embd-quant, made by bitnet.cpp's llama-quantize from the f32 GGUF of the same master).
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from gguf import quants
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_fixtures import assert_checksums_hold

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.engine import kernel, quant_dot
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.errors import ShapeError, UsageError
from bitnet_pack.formats import quant_floats
from bitnet_pack.formats.floatmath import fmaf
from bitnet_pack.pipeline.sources import load_weights

EMBD_QUANT = FIXTURES / "embd-quant"
TYPES = list(quant_floats.EMBEDDING_TYPES)
EMBD = "token_embd.weight"


def peer_bytes(type_name: str) -> np.ndarray:
    with GGUFFile(EMBD_QUANT / f"tiny-a-i2_s-embd-{type_name}.gguf") as file:
        return np.array(file.tensor_bytes(EMBD))


@pytest.fixture(scope="module")
def master_embedding(tiny_a) -> np.ndarray:
    _, weights = load_weights(tiny_a / "tiny-a-bf16")
    return np.asarray(weights["model.embed_tokens.weight"], np.float32)


def test_the_embd_quant_files_have_their_recorded_checksums() -> None:
    assert_checksums_hold(EMBD_QUANT)


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
@pytest.mark.parametrize("type_name", TYPES)
def test_every_block_equals_llama_quantize(master_embedding, type_name, backend):
    """kernels/quant_floats.c and its numpy reference, each against the peer's bytes."""
    if backend == "numpy":
        with kernel.use_backend("numpy"):
            ours = quant_floats.quantize(master_embedding, type_name)
    else:
        ours = quant_floats.quantize(master_embedding, type_name)
    size = quant_floats.EMBEDDING_TYPES[type_name][2]
    differing = np.nonzero((ours.reshape(-1, size) != peer_bytes(type_name).reshape(-1, size)).any(axis=1))[0]
    assert ours.nbytes == peer_bytes(type_name).nbytes
    assert differing.tolist() == []


@pytest.mark.parametrize("type_name", ["q6_k", "q4_k"])
def test_without_fused_multiply_adds_some_blocks_differ(master_embedding, type_name, monkeypatch):
    """The contraction is what the peer's build does: rounding twice picks other scales."""
    monkeypatch.setattr(quant_floats, "_fma", lambda a, b, c: np.float32(a) * np.float32(b) + np.float32(c)
                        if np.isscalar(a) else np.asarray(a, np.float32) * np.asarray(b, np.float32) + c)
    ours = quant_floats.reference_quantize(master_embedding.reshape(-1, 256), type_name)
    assert not np.array_equal(ours, peer_bytes(type_name).reshape(ours.shape))


@pytest.mark.parametrize("type_name", ["q6_k", "q5_k", "q4_k"])
@given(data=st.data())
def test_the_c_quantizer_equals_the_numpy_reference(type_name, data):
    rows = data.draw(blocks_strategy(256))
    scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]))
    x = (rows * np.float32(scale)).astype(np.float32)
    assert quant_floats._compiled()
    assert np.array_equal(quant_floats.quantize(x, type_name), quant_floats.reference_quantize(x, type_name))


@given(st.floats(-4194303, 4194303, width=32))
def test_nearest_int_rounds_half_to_even(value):
    assert quant_floats.nearest_int(np.array([value], np.float32))[0] == int(np.rint(np.float32(value)))


def blocks_strategy(width: int):
    # no subnormals: there ggml's 1/d overflows to inf and the C's result is undefined
    values = st.floats(-8, 8, width=32, allow_subnormal=False) | st.sampled_from([0.0, -0.0, 1e-20, 3.0])
    return hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(width)), elements=values)


@pytest.mark.parametrize("type_name", TYPES)
@given(data=st.data())
def test_round_trip_within_the_types_step(type_name, data):
    """Any rows (zeros, constants, spikes) quantize to blocks that gguf-py and our ggml
    dequantizer read alike, within a fraction of the row's range."""
    width = data.draw(st.sampled_from([256, 512]))
    x = data.draw(blocks_strategy(width))
    blocks = quant_floats.quantize(x, type_name)
    ggml_type = quant_floats.EMBEDDING_TYPES[type_name][0]
    theirs = quants.dequantize(blocks, ggml_type).reshape(x.shape)
    ours = quant_dot.dequantize(blocks, type_name)
    assert np.array_equal(ours, theirs) or np.abs(ours - theirs).max() <= 1e-6 * max(1.0, np.abs(x).max())
    bits = {"q8_0": 8, "q6_k": 6, "q5_k": 5, "q4_k": 4}[type_name]
    span = np.abs(x).max() if type_name in ("q8_0", "q6_k") else max(0.0, x.max()) - min(0.0, x.min())
    # d and dmin are fp16: below 2**-14 they are subnormal in steps of 2**-24 (a row of 1e-5s
    # gives Q5_K a super-block scale that underflows to 0, as ggml's own quantizer does); the
    # error is then bounded by that step times the largest 6-bit sub-scale and code
    fp16_floor = 63 * 2 ** bits * 2.0 ** -24
    assert np.abs(ours - x).max() <= 2 * span / (2 ** (bits - 1) - 1) + fp16_floor + 1e-6


@pytest.mark.parametrize("type_name", TYPES)
def test_an_all_zero_row_stays_zero(type_name):
    blocks = quant_floats.quantize(np.zeros((2, 256), np.float32), type_name)
    assert not quant_dot.dequantize(blocks, type_name).any()


def test_bad_shapes_and_names_are_refused():
    with pytest.raises(ShapeError, match="multiple of 256"):
        quant_floats.quantize(np.zeros((2, 100), np.float32), "q6_k")
    with pytest.raises(UsageError, match="q4_k"):
        quant_floats.quantize(np.zeros((2, 256), np.float32), "q3_k")
    with pytest.raises(ShapeError, match="matmul"):
        quant_dot.matmul(np.zeros((4, 210), np.uint8), "q6_k", np.zeros((1, 512), np.float32))


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("width", [256, 768])
def test_quantized_dot_products_agree_with_their_integer_meaning(type_name, width):
    """ggml's dot product = sum over blocks of d_w * d_x * (integer sums) (minus the mins):
    against float64 sums of the dequantized weights and the Q8 activations."""
    rng = np.random.default_rng(width)
    w = quant_floats.quantize(rng.normal(size=(37, width)).astype(np.float32), type_name)
    x = rng.normal(size=(3, width)).astype(np.float32)
    got = quant_dot.matmul(w, type_name, x)
    if type_name == "q8_0":
        d, q = quant_dot.quantize_q8_0_act(x)
    else:
        d, q = quant_dot.quantize_q8_k(x)
    x_q = (d[..., None].astype(np.float64) * q).reshape(x.shape)
    want = x_q @ quant_dot.dequantize(w, type_name).astype(np.float64).T
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_fmaf_rounds_once():
    a = np.float32(1 + 2 ** -12)
    assert fmaf(a, a, np.float32(-1)) == np.float32(2.0 ** -11 + 2.0 ** -24)
    assert a * a - np.float32(1) == np.float32(2.0 ** -11)  # two roundings lose the 2**-24


@pytest.mark.parametrize("type_name", ["q6_k", "q8_0"])
def test_convert_writes_llama_quantizes_token_embd(tiny_a, tmp_path, type_name):
    out = tmp_path / f"tiny-a-{type_name}.gguf"
    result = CliRunner().invoke(main, ["convert", str(tiny_a / "tiny-a-bf16"), str(out), "--outtype", "i2_s",
                                       "--embedding-type", type_name])
    assert result.exit_code == 0, result.output
    assert f"quantized to {type_name.upper()}" in result.stderr
    with GGUFFile(out) as file:
        assert file.tensors[EMBD].type_name == type_name.upper()
        assert np.array_equal(np.array(file.tensor_bytes(EMBD)), peer_bytes(type_name))


def test_output_type_is_refused_for_a_tied_model(tiny_a, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tiny_a / "tiny-a-bf16"), str(tmp_path / "x.gguf"),
                                       "--outtype", "i2_s", "--output-type", "q6_k"])
    assert result.exit_code == 2
    assert "ties it to token_embd" in result.stderr


def test_output_type_sets_an_untied_output_matrix(tmp_path):
    """llama-quantize's --output-tensor-type: token_embd and output each in their own type (no
    peer file of an untied family here: the bytes are checked against the peer-verified
    quantizers above, and the file decodes through ggml's dot product of each type)."""
    source = FIXTURES / "fam-llama3" / "fam-llama3-hf"
    out = tmp_path / "llama3.gguf"
    result = CliRunner().invoke(main, ["convert", str(source), str(out), "--outtype", "i2_s",
                                       "--embedding-type", "q6_k", "--output-type", "q8_0"])
    assert result.exit_code == 0, result.output
    _, master = load_weights(source)
    with GGUFFile(out) as file:
        assert (file.tensors[EMBD].type_name, file.tensors["output.weight"].type_name) == ("Q6_K", "Q8_0")
        for name, hf_name, kind in ((EMBD, "model.embed_tokens.weight", "q6_k"), ("output.weight", "lm_head.weight", "q8_0")):
            want = quant_floats.quantize(np.asarray(master[hf_name], np.float32), kind)
            assert np.array_equal(np.array(file.tensor_bytes(name)).reshape(want.shape), want)
    model = BitNetModel(*load_weights(out, stored=True), numerics="bitnet.cpp")
    assert isinstance(model.embedding, quant_dot.QuantTensor) and model.lm_head.kind == "q8_0"
    ids, logits = model.generate_ids([1, 5, 9], 3)
    assert len(ids) == 3 and np.isfinite(logits).all()


@pytest.mark.parametrize("type_name", TYPES)
@given(data=st.data())
def test_the_c_dot_product_equals_the_numpy_reference(type_name, data):
    """kernels/quant_floats.c bp_quant_matmul against quant_dot.reference_matmul, bit for bit:
    odd row counts, one to three super-blocks, zero activations, any scale."""
    width = data.draw(st.sampled_from([256, 512, 768]))
    weights = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 70)), width),
                                   elements=st.floats(-4, 4, width=32, allow_subnormal=False)))
    x = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 3)), width),
                             elements=st.floats(-50, 50, width=32, allow_subnormal=False)))
    blocks = quant_floats.quantize(weights, type_name)
    got = quant_dot.matmul(blocks, type_name, x)
    assert got.view(np.uint32).tolist() == quant_dot.reference_matmul(blocks, type_name, x).view(np.uint32).tolist()


@pytest.mark.parametrize("type_name", ["q6_k", "q5_k"])
def test_a_source_in_the_same_type_keeps_its_blocks(tmp_path, type_name):
    """Requantizing dequantized Q6_K / Q5_K values changes bytes; the blocks pass through."""
    source = EMBD_QUANT / f"tiny-a-i2_s-embd-{type_name}.gguf"
    with GGUFFile(source) as file:
        values = quant_dot.dequantize(np.array(file.tensor_bytes(EMBD)).reshape(512, -1), type_name)
    assert not np.array_equal(quant_floats.quantize(values, type_name), peer_bytes(type_name).reshape(512, -1))
    out = tmp_path / "again.gguf"
    result = CliRunner().invoke(main, ["convert", str(source), str(out), "--outtype", "i2_s",
                                       "--embedding-type", type_name])
    assert result.exit_code == 0, result.output
    assert "kept as the source's" in result.stderr
    with GGUFFile(out) as file:
        assert np.array_equal(np.array(file.tensor_bytes(EMBD)), peer_bytes(type_name))


def test_rows_that_are_not_whole_super_blocks_are_refused_before_writing():
    """llama-quantize silently falls back to another type there (Q6_K -> Q8_0); we refuse by name."""
    quant_floats.check_shape("q8_0", (10, 3200), "token_embd.weight")
    with pytest.raises(ShapeError, match="token_embd.weight.*3200|3200.*token_embd.weight|multiple of 256"):
        quant_floats.check_shape("q6_k", (10, 3200), "token_embd.weight")
