"""verify(): side-by-side greedy decode, per-row logits comparison, and naming the cause."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_pack.engine.kernel import PackedMatrix
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.errors import UsageError, VerificationMismatch
from bitnet_pack.formats.dtypes import bf16_to_f32, round_to_bf16
from bitnet_pack.formats.ternary import TernaryWeight, ternarize
from bitnet_pack.pipeline.sources import load_weights
from bitnet_pack.proof.diff import compare_weights
from bitnet_pack.proof.verify import decode_rows, verify

PROMPT_5 = [1, 15, 27, 300, 42]
PROMPT_12 = [1, 280, 18, 331, 374, 45, 498, 101, 502, 406, 342, 136]
FLIPPED = "model.layers.1.mlp.up_proj.weight"


def read_bf16_safetensors(path):
    """{name: float32 array} from a safetensors file of BF16 tensors (header via json+struct)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8: 8 + header_len])
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", name
        start, end = info["data_offsets"]
        tensors[name] = bf16_to_f32(np.frombuffer(data[start:end], "<u2")).reshape(info["shape"])
    return tensors


@pytest.fixture(scope="module")
def packed(tiny_a):
    return load_weights(tiny_a / "tiny-a-packed")


@pytest.fixture(scope="module")
def packed_model(packed):
    return BitNetModel(*packed)


@pytest.fixture(scope="module")
def master_model(tiny_a, packed):
    """tiny-a-bf16 ternarised on load with beta kept in fp32 (transformers' online mode)."""
    master = read_bf16_safetensors(tiny_a / "tiny-a-bf16" / "model.safetensors")
    weights = {name: ternarize(value, tensor=name) if name.endswith("_proj.weight") else value
               for name, value in master.items()}
    return BitNetModel(packed[0], weights)


@pytest.fixture(scope="module")
def flipped_model(packed):
    config, weights = packed
    original = weights[FLIPPED]
    codes = original.codes.copy()
    row, col = 7, 11
    codes[row, col] = 1 if codes[row, col] != 1 else -1
    return BitNetModel(config, {**weights, FLIPPED: TernaryWeight(codes, original.beta)})


def test_same_model_is_identical(packed_model):
    report = verify(packed_model, packed_model, PROMPT_5, 6)
    assert report.identical and report.ok
    assert report.max_abs_diff == 0.0
    assert report.first_divergence is None and report.first_token_mismatch is None
    assert [r.position for r in report.rows] == list(range(len(PROMPT_5) - 1 + 6))
    assert [r.step for r in report.rows] == [None] * 4 + list(range(6))
    assert report.weights.identical
    assert report.cause == "logits bit-identical at every compared position"
    assert list(report.ids) == packed_model.generate_ids(PROMPT_5, 6)[0]


def test_betas_only_difference_is_named_as_scale_rounding(master_model, packed_model, decode_record):
    report = verify(master_model, packed_model, PROMPT_5, 16)
    weights = report.weights
    assert not report.identical and weights.betas_only
    assert weights.code_diffs == [] and weights.float_diffs == []
    assert len(weights.beta_diffs) == 14
    for tensor in weights.beta_diffs:  # the packed side holds bf16(beta): < 2^-8 relative
        assert np.float32(tensor.beta_b) == round_to_bf16(np.float32(tensor.beta_a))
        assert 0 < tensor.beta_rel_diff < 2.0 ** -8
    assert report.cause.startswith("scale rounding only: ternary codes identical in all 14 projections")
    # a person reads the count and the first three tensors, once; the full list is in the JSON
    assert "model.layers.0.self_attn.q_proj.weight" in report.cause and "and 11 more (--json lists all)" in report.cause
    assert "model.layers.0.mlp.gate_proj.weight" not in report.cause and report.cause.count("beta differs") == 1
    assert len(report.to_dict()["weights"]["differing"]) == 14
    # A (the master) decodes as transformers' online mode; B (packed) first picks another
    # token at step 1, where transformers' packed run chose 361 (margin 0.0217).
    assert list(report.ids) == decode_record(0, "hf_bf16_online")["ids"]
    mismatch = report.first_token_mismatch
    assert (mismatch.step, mismatch.position, mismatch.token_a, mismatch.token_b) == (1, 5, 206, 361)
    # decode.json records the max |logits diff| of the two transformers checkpoints over the
    # prompt's positions in fp32: 0.61722; ours over the same rows (measured 0.61723):
    prompt_rows = [r.max_abs_diff for r in report.rows if r.position < len(PROMPT_5)]
    assert max(prompt_rows) == pytest.approx(0.6172246932983398, abs=1e-4)
    first = report.first_divergence
    assert (first.step, first.position) == (None, 0)


def test_tolerance_turns_a_small_difference_into_ok(master_model, packed_model):
    strict = verify(master_model, packed_model, PROMPT_12, 4)
    assert not strict.ok and strict.first_token_mismatch is None
    prompt_rows = [r.max_abs_diff for r in strict.rows if r.position < len(PROMPT_12)]
    assert max(prompt_rows) == pytest.approx(0.819244384765625, abs=1e-4)  # decode.json, fp32
    loose = verify(master_model, packed_model, PROMPT_12, 4, atol=strict.max_abs_diff)
    assert loose.ok and not loose.identical and loose.first_divergence is None
    tight = verify(master_model, packed_model, PROMPT_12, 4, atol=strict.max_abs_diff / 2)
    assert not tight.ok and tight.first_divergence.max_abs_diff > strict.max_abs_diff / 2


def test_one_flipped_code_is_located(packed_model, flipped_model):
    report = verify(packed_model, flipped_model, [1], 8)
    weights = report.weights
    assert [(t.name, t.differing, t.size) for t in weights.code_diffs] == [(FLIPPED, 1, 512 * 256)]
    assert weights.beta_diffs == [] and not weights.betas_only
    assert report.cause == f"ternary codes differ in 1 tensor(s): {FLIPPED} (1 of 131072 codes)"
    first = report.first_divergence
    # The first row whose logits differ, found independently by decoding both one by one.
    ids, logits_a = packed_model.generate_ids([1], 8)
    logits_b = [flipped_model.prefill([1])] + [flipped_model.step(t) for t in ids[:-1]]
    expected = next(k for k in range(8) if not np.array_equal(logits_a[k], logits_b[k]))
    assert (first.step, first.position) == (expected, expected)
    assert first.max_abs_diff == pytest.approx(float(np.abs(logits_a[expected] - logits_b[expected]).max()))
    assert (first.token_a, first.token_b) == (int(np.argmax(logits_a[expected])), int(np.argmax(logits_b[expected])))


def test_report_is_json(master_model, packed_model):
    report = verify(master_model, packed_model, PROMPT_5, 3)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["identical"] is False
    assert len(data["step_max_abs_diff"]) == 3 and len(data["prompt_max_abs_diff"]) == 4
    assert data["first_divergence"]["position"] == 0
    assert data["weights"]["betas_only"] is True and len(data["weights"]["differing"]) == 14
    assert "first divergence: prompt (position 0)" in report.summary()


def test_numerics_named_when_weights_agree(packed):
    report = verify(BitNetModel(*packed), BitNetModel(*packed, numerics="bitnet.cpp"), PROMPT_5, 2)
    assert report.weights.identical and not report.identical
    assert report.cause.endswith("the numerics differ (reference vs bitnet.cpp)")


def test_packed_against_bitnet_cpp_gguf_names_every_cause(tiny_a, master_model):
    from test_model import load_i2s_gguf  # the GGUF -> HF-name loader of the model tests

    gguf = BitNetModel(*load_i2s_gguf(tiny_a / "tiny-a-i2_s.gguf"), numerics="bitnet.cpp")
    report = verify(master_model, gguf, PROMPT_12, 16)
    weights = report.weights
    # I2_S keeps beta as fp32(1/s), exactly the master's; the embedding went BF16 -> F16.
    assert weights.code_diffs == [] and weights.beta_diffs == []
    assert [t.name for t in weights.float_diffs] == ["model.embed_tokens.weight"]
    assert report.cause.startswith("float tensors differ in 1: model.embed_tokens.weight (")
    assert report.cause.endswith("; the numerics differ (reference vs bitnet.cpp)")
    assert report.first_token_mismatch is None  # both decode transformers' online ids


def test_compare_weights_mixes_forms_and_names_missing(packed):
    _, weights = packed
    name = "model.layers.0.self_attn.k_proj.weight"
    tw = weights[name]
    a = {name: tw, "model.norm.weight": weights["model.norm.weight"], "only.a": np.zeros(2, np.float32)}
    b = {name: PackedMatrix.from_ternary(tw, "hf"), "model.norm.weight": weights["model.norm.weight"] + 1}
    diff = compare_weights(a, b)
    assert diff.only_in_a == ("only.a",) and diff.only_in_b == ()
    assert diff.code_diffs == [] and diff.beta_diffs == []
    assert [(t.name, t.differing) for t in diff.float_diffs] == [("model.norm.weight", 256)]
    assert "1 only in A only.a, 0 only in B" in diff.cause()
    shapes = compare_weights({name: tw}, {name: TernaryWeight(tw.codes[:64], tw.beta)})
    assert [t.name for t in shapes.mismatched] == [name] and not shapes.identical


def test_packed_layouts_compare_by_bytes_then_codes(packed):
    _, weights = packed
    tw = weights[FLIPPED]
    codes = tw.codes.copy()
    codes[0, :3] = [1, 0, -1] if list(codes[0, :3]) != [1, 0, -1] else [0, 1, 0]
    changed = int(np.count_nonzero(codes != tw.codes))
    for layout in ("i2_s", "hf"):
        same = compare_weights({FLIPPED: PackedMatrix.from_ternary(tw, layout)}, {FLIPPED: tw})
        assert same.identical, layout
        other = compare_weights({FLIPPED: PackedMatrix.from_ternary(tw, layout)},
                                {FLIPPED: PackedMatrix.from_ternary(TernaryWeight(codes, tw.beta), layout)})
        assert other.code_diffs[0].differing == changed, layout


@settings(deadline=None, max_examples=40)
@given(rows=st.integers(1, 9), blocks=st.integers(1, 3), layout=st.sampled_from(["i2_s", "hf"]),
       seed=st.integers(0, 2**32 - 1), n_flips=st.integers(0, 5), bf16_beta=st.booleans())
def test_compare_weights_counts_exactly(rows, blocks, layout, seed, n_flips, bf16_beta):
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    codes = rng.integers(-1, 2, size=(rows, cols)).astype(np.int8)
    beta = np.float32(rng.uniform(0.01, 3.0))
    flat = codes.copy().reshape(-1)
    where = rng.choice(flat.size, size=min(n_flips, flat.size), replace=False)
    flat[where] = np.where(flat[where] == 1, -1, flat[where] + 1)  # always a different code
    other_beta = np.float32(round_to_bf16(beta).item()) if bf16_beta else beta
    a = {"w": PackedMatrix.from_ternary(TernaryWeight(codes, beta), layout)}
    b = {"w": PackedMatrix.from_ternary(TernaryWeight(flat.reshape(rows, cols), other_beta), layout)}
    diff = compare_weights(a, b)
    assert [t.differing for t in diff.code_diffs] == ([len(where)] if len(where) else [])
    changed = np.float32(other_beta) != beta
    assert len(diff.beta_diffs) == int(changed)
    assert diff.betas_only == (changed and not len(where))
    assert diff.identical == (not changed and not len(where))
    if changed:
        assert diff.beta_diffs[0].beta_is_bf16_rounding


def test_bad_arguments(packed_model):
    with pytest.raises(UsageError, match="n_tokens"):
        verify(packed_model, packed_model, PROMPT_5, 0)
    for atol in (float("nan"), float("inf"), -1.0):  # NaN would turn every mismatch into "ok"
        with pytest.raises(UsageError, match="atol must be a finite number"):
            verify(packed_model, packed_model, PROMPT_5, 2, atol=atol)


def test_decode_rows_are_generate_ids_rows_and_replay_fed_ids(packed_model, master_model):
    ids, rows = decode_rows(packed_model, PROMPT_12, 5)
    greedy, step_rows = packed_model.generate_ids(PROMPT_12, 5)
    assert ids == greedy
    expected = np.concatenate([packed_model.prompt_logits(PROMPT_12)[:-1], step_rows])
    assert rows.dtype == np.float32 and rows.tobytes() == expected.astype(np.float32).tobytes()
    fed, replayed = decode_rows(master_model, PROMPT_12, 5, feed=ids)
    assert fed == ids
    steps = [master_model.prefill(PROMPT_12)] + [master_model.step(t) for t in ids[:-1]]
    assert replayed[len(PROMPT_12) - 1:].tobytes() == np.stack(steps).astype(np.float32).tobytes()


@pytest.mark.parametrize("key, value", [("rope_theta", 10000.0), ("rms_norm_eps", 1e-6)])
def test_a_config_difference_is_named_not_blamed_on_the_kernels(packed, packed_model, key, value):
    config, weights = packed
    other = BitNetModel({**config, key: value}, weights)
    report = verify(packed_model, other, PROMPT_5, 3)
    assert not report.identical and report.weights.weights_identical and not report.weights.identical
    assert [(c.key, c.b) for c in report.weights.config] == [(key, value)]
    assert report.cause == f"model config differs: {key} {config[key]!r} vs {value!r}"


def test_an_unexplained_difference_is_not_blamed_on_anything(packed, packed_model, monkeypatch):
    config, weights = packed
    name = "model.layers.0.self_attn.q_proj.weight"
    other = BitNetModel(config, {**weights, name: PackedMatrix.from_ternary(weights[name], "hf")})
    assert verify(packed_model, other, PROMPT_5, 3).identical  # another kernel, exact sums: same logits
    step = other.step
    monkeypatch.setattr(other, "step", lambda token: step(token) * np.float32(1.0 + 2.0 ** -20))
    report = verify(packed_model, other, PROMPT_5, 3)
    assert report.weights.identical and not report.identical
    assert (report.first_divergence.step, report.first_divergence.position) == (1, len(PROMPT_5))
    assert report.cause == ("weights identical: 24 tensors equal bit for bit (codes, betas, floats); not explained "
                            "by the weights, the model config or the numerics, which all agree; the projections "
                            "ran on different kernels (A: i2_s, B: hf, i2_s)")


def test_different_vocabularies_are_a_mismatch(packed, packed_model):
    config, weights = packed
    embed = "model.embed_tokens.weight"
    smaller = BitNetModel({**config, "vocab_size": 500}, {**weights, embed: weights[embed][:500]})
    with pytest.raises(VerificationMismatch, match=r"different vocabularies \(512 vs 500 tokens\)") as caught:
        verify(packed_model, smaller, PROMPT_5, 2)
    assert caught.value.exit_code == 3


@pytest.fixture(scope="module")
def decode_record(tiny_a):
    prompts = json.loads((tiny_a / "tiny-a.decode.json").read_text())["prompts"]
    return lambda index, engine: prompts[index][engine]
