"""Our numerics against the raw float32 logits rows real runtimes wrote for tiny-a
(../shared/vectors/tiny-a-logits, README there: 2 prompts x 16 greedy steps x 512 logits).

* `bitnet.cpp` equals the AVX-512 build (-march=native) bit for bit and `bitnet.cpp-avx2` the
  AVX2 build, every row of both prompts: the one-token Q.K, P.V (over the KV cells padded to
  32) and lm_head in each build's ggml_vec_dot_f16 lane order, and for the AVX-512 build its
  ggml_v_expf and 16-wide block sums in the softmax (kernels/floatops_ggml.c, floatmath.h).
  Without the last, the AVX-512 rows differ in one row (prompt 1, step 15: an int8 flip, all
  512 logits off by up to 9.92e-5); the AVX2 build's own ggml_v_expf is not mirrored and
  not needed on these rows.
  RoPE is ggml's to the bit (bitnet_pack/engine/ggml_rope.py): the C library's cosf/sinf and the
  rotation's fused multiply-adds. Without them the 64-token prompt of fixtures/tiny-a-logits-more
  matches its first two rows only, and two rows of embd-quant miss their recorded margins.
* `reference` against transformers fp32 is not bit-exact (<= 1.53e-5 here): transformers
  runs each projection as an fp32 matmul of fake-quantised activations (q / s in fp32, then
  torch's sgemm order, which depends on its BLAS kernel for the CPU) and computes 127/amax
  as reciprocal(amax) * 127, where we divide the exact integer sums once. A bit-exact
  `transformers` numerics would need the projections computed that way (the kernel's
  business) and torch's sgemm order; it is not built.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES

from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.pipeline.sources import load_weights

ROWS, VOCAB = 16, 512


def runtime_rows(shared_vectors, engine: str, prompt_index: int) -> tuple[list[int], np.ndarray]:
    folder = shared_vectors / "tiny-a-logits"
    sidecar = json.loads((folder / f"{engine}-p{prompt_index + 1}.json").read_text())
    rows = np.fromfile(folder / f"{engine}-p{prompt_index + 1}.f32", "<f4").reshape(ROWS, VOCAB)
    return sidecar["ids"], rows


@pytest.fixture(scope="module")
def prompts(tiny_a):
    return [p["prompt"] for p in json.loads((tiny_a / "tiny-a.decode.json").read_text())["prompts"]]


def decode(path, numerics: str, prompt: list[int]) -> tuple[list[int], np.ndarray]:
    return BitNetModel(*load_weights(path), numerics=numerics).generate_ids(prompt, ROWS)


def differing_rows(ours: np.ndarray, theirs: np.ndarray) -> list[int]:
    return [int(r) for r in np.nonzero((ours.view(np.uint32) != theirs.view(np.uint32)).any(axis=1))[0]]


@pytest.mark.parametrize("prompt_index", [0, 1])
@pytest.mark.parametrize("numerics, engine", [("bitnet.cpp", "bitnet_cpp_i2s_avx512"),
                                              ("bitnet.cpp-avx2", "bitnet_cpp_i2s_avx2")])
def test_bitnet_cpp_numerics_equal_the_builds_bit_for_bit(tiny_a, shared_vectors, prompts, prompt_index, numerics,
                                                          engine):
    ids, logits = decode(tiny_a / "tiny-a-i2_s.gguf", numerics, prompts[prompt_index])
    want_ids, want = runtime_rows(shared_vectors, engine, prompt_index)
    assert ids == want_ids
    assert differing_rows(logits, want) == []


@pytest.mark.parametrize("prompt_index", [0, 1])
@pytest.mark.parametrize("engine, folder", [("transformers_packed_fp32", "tiny-a-packed"),
                                            ("transformers_bf16_fp32", "tiny-a-bf16")])
def test_reference_numerics_against_transformers_rows(tiny_a, shared_vectors, prompts, prompt_index, engine, folder):
    ids, logits = decode(tiny_a / folder, "reference", prompts[prompt_index])
    want_ids, want = runtime_rows(shared_vectors, engine, prompt_index)
    assert ids == want_ids
    assert np.abs(logits - want).max() <= 2e-5  # measured 1.53e-5 (see the module docstring)


# ---- quantized output matrices (fixtures/embd-quant) ---------------------------------------
EMBD_QUANT = FIXTURES / "embd-quant"


def embd_quant_runs() -> list[tuple[str, int]]:
    recorded = json.loads((EMBD_QUANT / "decode.json").read_text())["files"]
    return [(name, index) for name, runs in recorded.items() for index in range(len(runs))]


@pytest.mark.parametrize("file_name, run", embd_quant_runs())
def test_bitnet_cpp_numerics_with_a_quantized_output_matrix(file_name, run):
    """bitnet.cpp with a Q8_0/Q6_K/Q5_K/Q4_K token_embd (tied: also the output projection):
    rows looked up by ggml's dequantizer, logits by its quantized dot product on Q8_K / Q8_0
    activations (bitnet_pack/engine/quant_dot.py). The recorded ids, all 16 of both prompts; without
    the quantized product (float logits over the same values) some differ."""
    recorded = json.loads((EMBD_QUANT / "decode.json").read_text())["files"][file_name][run]
    model = BitNetModel(*load_weights(EMBD_QUANT / file_name, stored=True), numerics="bitnet.cpp")
    ids, logits = model.generate_ids(recorded["prompt"], ROWS)
    assert ids == recorded["ids"]
    top = np.sort(logits, axis=1)
    margins = top[:, -1] - top[:, -2]
    assert np.abs(margins - np.array(recorded["top1_top2_margin"])).max() <= 5e-4  # recorded to 3 decimals


def test_float_logits_over_the_quantized_values_miss_ids():
    """The control: the same dequantized values in a float32 lm_head (no activation
    quantization) give other ids on these files."""
    recorded = json.loads((EMBD_QUANT / "decode.json").read_text())["files"]
    missed = 0
    for name, runs in recorded.items():
        model = BitNetModel(*load_weights(EMBD_QUANT / name, stored=True), numerics="bitnet.cpp")
        model.lm_head = np.asarray(model.lm_head)  # floatops.f32_matmul instead of ggml's dot
        missed += sum(model.generate_ids(run["prompt"], ROWS)[0] != run["ids"] for run in runs)
    assert missed > 0


# ---- prompts of 1 to 64 tokens (fixtures/tiny-a-logits-more) -------------------------------
MORE = FIXTURES / "tiny-a-logits-more"


def more_prompts() -> list[tuple[int, list[int]]]:
    lines = (MORE / "prompts.txt").read_text().split()
    return [(int(n), [int(i) for i in ids.split(",")]) for n, ids in zip(lines[::2], lines[1::2], strict=True)]


def test_the_more_vectors_have_their_recorded_checksums():
    from test_fixtures import assert_checksums_hold

    assert_checksums_hold(MORE)


@pytest.mark.parametrize("length, prompt", more_prompts(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_bitnet_cpp_numerics_every_row_of_prompts_up_to_64_tokens(tiny_a, length, prompt):
    ids, logits = decode(tiny_a / "tiny-a-i2_s.gguf", "bitnet.cpp", prompt)
    recorded = json.loads((MORE / f"bitnet_cpp_i2s_avx512-len{length}.json").read_text())
    want = np.fromfile(MORE / f"bitnet_cpp_i2s_avx512-len{length}.f32", "<f4").reshape(ROWS, VOCAB)
    assert len(prompt) == length and recorded["prompt"] == prompt
    assert ids == recorded["ids"]
    assert differing_rows(logits, want) == []


def test_correctly_rounded_rope_misses_rows_of_the_64_token_prompt(tiny_a, monkeypatch):
    """The control: floatmath's cos/sin and an unfused rotation (what the other numerics use)
    in place of ggml's diverge from the third row on."""
    from bitnet_pack.engine import floatops, ggml_rope

    monkeypatch.setattr(ggml_rope, "rope_tables", lambda p, d, theta: floatops.rope_tables(p, d, theta, True))
    monkeypatch.setattr(ggml_rope, "apply_rope", floatops.apply_rope)
    length, prompt = more_prompts()[-1]
    _, logits = decode(tiny_a / "tiny-a-i2_s.gguf", "bitnet.cpp", prompt)
    want = np.fromfile(MORE / f"bitnet_cpp_i2s_avx512-len{length}.f32", "<f4").reshape(ROWS, VOCAB)
    assert length == 64 and differing_rows(logits, want)[:1] == [2]
