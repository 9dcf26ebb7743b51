"""The converter's I2_S numerics for the embedding models (bitnet_pack/formats/absmean.py): numpy's float32
summation replayed (checked against this numpy 2's own np.sum), the 1e-5 floor, ties to even."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from hypothesis import given
from hypothesis import strategies as st

from bitnet_pack.cli.main import main
from bitnet_pack.formats.absmean import CHUNK, absmean, float32_sum, pairwise, ternarize

sizes = st.integers(min_value=1, max_value=3 * CHUNK + 300)


@given(sizes, st.integers(0, 2**32 - 1))
def test_pairwise_is_numpy2s_float32_sum(n: int, seed: int) -> None:
    x = np.abs(np.random.default_rng(seed).standard_normal(n).astype(np.float32))
    assert float32_sum(x, "numpy2").tobytes() == np.sum(x).tobytes()  # numpy >= 2: one pairwise sum


@given(sizes, st.integers(0, 2**32 - 1))
def test_numpy1_rule_is_chunked_pairwise(n: int, seed: int) -> None:
    x = np.abs(np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.3)
    total = np.float32(0)
    for start in range(0, n, CHUNK):  # numpy 1.26: the buffer's chunks, each one pairwise, added in order
        total = np.float32(total + np.sum(x[start:start + CHUNK]))
    assert float32_sum(x, "numpy1").tobytes() == total.tobytes()
    assert pairwise(x[:7]).tobytes() == np.sum(x[:7]).tobytes()


def test_all_zero_weight_gets_the_floor_and_zero_codes() -> None:
    weight = ternarize(np.zeros((4, 128), np.float32))
    assert weight.beta.tobytes() == np.uint32(0x3727C5AC).tobytes() and not weight.codes.any()


def test_half_ties_round_to_even_and_negative_zero_is_zero() -> None:
    # mean|W| = 1/8 exactly, so W * 8 is exact: +-1/16 -> +-0.5 -> 0; 3/16 -> 1.5 -> 2 -> clipped 1
    w = np.tile(np.float32([1 / 16, -1 / 16, 3 / 16, -3 / 16, -0.0, 0.0, 1 / 4, -1 / 4]), 16).reshape(1, 128)
    weight = ternarize(w)
    assert weight.beta == np.float32(0.125)
    assert weight.codes[0, :8].tolist() == [0, 0, 1, -1, 0, 0, 1, -1]


def test_exact_rule_is_the_rounded_mean() -> None:
    x = np.random.default_rng(5).standard_normal((96, 300)).astype(np.float32)
    assert absmean(x, "exact") == np.float32(np.abs(x.astype(np.float64)).mean())


def test_inspect_names_family_pooling_and_embedding_size() -> None:
    for src in (FIXTURES / "emb-gemma3" / "hf", FIXTURES / "emb-gemma3" / "emb-gemma3-i2_s.gguf"):
        result = CliRunner().invoke(main, ["inspect", str(src), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert (report["family"], report["pooling"], report["embedding_size"]) == ("emb-gemma3", "last", 256)
        down = next(t for t in report["tensors"] if t["name"].endswith(("ffn_down.weight", "down_proj.weight"))
                    and "blk.0" in t["name"] or "layers.0.mlp.down_proj.weight" in t["name"])
        assert down["beta"] == pytest.approx(0.24286525, rel=1e-7)  # the README's table, either side
    text = CliRunner().invoke(main, ["inspect", str(FIXTURES / "emb-gemma3" / "hf")]).output
    assert "family emb-gemma3, pooling last, embedding size 256" in text


def test_qwen_split_rules_are_named_qwen2(tmp_path) -> None:
    from bitnet_pack.families.tokenizers.embedding_vocab import QWEN2_SPLIT, _pre_name

    tj = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}}
    assert _pre_name(tmp_path / "tokenizer.json", tj) == "qwen2"
    assert r"\p{N}|" in QWEN2_SPLIT and r"\p{N}{1,3}" not in QWEN2_SPLIT  # single digits, unlike Llama 3
