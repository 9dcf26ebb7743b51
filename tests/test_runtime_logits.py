"""Our numerics against the raw float32 logits rows real runtimes wrote for tiny-a
(../shared/vectors/tiny-a-logits, README there: 2 prompts x 16 greedy steps x 512 logits).

* `bitnet.cpp-avx2` equals bitnet.cpp's AVX2 build bit for bit, every row of both prompts.
* `bitnet.cpp` (the AVX-512 build, -march=native) equals it bit for bit but for one row:
  prompt 1, step 15, where all 512 logits differ by up to 9.92e-5. There the AVX-512 build
  also differs from the AVX2 build by 9.99e-5 (the README's table), while we sit within
  1.9e-6 of the AVX2 build's row (the rest is the two builds' lm_head lane orders): an
  activation on an int8 rounding boundary that some float op of the
  AVX-512 build rounds the other way. Which op is not found (ours mirror ggml's
  vec_dot_f16 lane orders of both builds; not mirrored: ggml's own SIMD expf in the softmax
  and any 16-wide code clang generates for -march=native).
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

from bitnet_pack.checkpoints import load_weights
from bitnet_pack.model import BitNetModel

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
def test_bitnet_cpp_avx2_numerics_equal_the_avx2_build_bit_for_bit(tiny_a, shared_vectors, prompts, prompt_index):
    ids, logits = decode(tiny_a / "tiny-a-i2_s.gguf", "bitnet.cpp-avx2", prompts[prompt_index])
    want_ids, want = runtime_rows(shared_vectors, "bitnet_cpp_i2s_avx2", prompt_index)
    assert ids == want_ids
    assert differing_rows(logits, want) == []


@pytest.mark.parametrize("prompt_index, rows_off", [(0, [15]), (1, [])])
def test_bitnet_cpp_numerics_equal_the_avx512_build_but_one_row(tiny_a, shared_vectors, prompts, prompt_index,
                                                                rows_off):
    ids, logits = decode(tiny_a / "tiny-a-i2_s.gguf", "bitnet.cpp", prompts[prompt_index])
    want_ids, want = runtime_rows(shared_vectors, "bitnet_cpp_i2s_avx512", prompt_index)
    assert ids == want_ids
    assert differing_rows(logits, want) == rows_off
    if rows_off:  # the one row: on the AVX2 build's side of an int8 flip, 9.92e-5 from the AVX-512 build's
        _, avx2 = runtime_rows(shared_vectors, "bitnet_cpp_i2s_avx2", prompt_index)
        assert np.abs(logits[rows_off] - avx2[rows_off]).max() <= 2e-6
        assert 5e-5 < np.abs(logits - want).max() <= 1e-4


@pytest.mark.parametrize("prompt_index", [0, 1])
@pytest.mark.parametrize("engine, folder", [("transformers_packed_fp32", "tiny-a-packed"),
                                            ("transformers_bf16_fp32", "tiny-a-bf16")])
def test_reference_numerics_against_transformers_rows(tiny_a, shared_vectors, prompts, prompt_index, engine, folder):
    ids, logits = decode(tiny_a / folder, "reference", prompts[prompt_index])
    want_ids, want = runtime_rows(shared_vectors, engine, prompt_index)
    assert ids == want_ids
    assert np.abs(logits - want).max() <= 2e-5  # measured 1.53e-5 (see the module docstring)
