"""bitnet-pack diff: two checkpoints compared in ternary space, exit 0 identical / 3 not."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corrupt_files import FIXTURE
from test_cli import cli, error_line

from bitnet_pack.cli.main import main
from bitnet_pack.containers.safetensors import SafetensorsFile
from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.factory import make_sink
from bitnet_pack.pipeline.sources import load_weights, open_checkpoint
from bitnet_pack.proof.diff import (
    ConfigDiff,
    compare_configs,
    compare_weights,
    diff_checkpoints,
    diff_entries,
    model_config,
)

CHANGED = "model.layers.0.mlp.down_proj.weight"


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("diff")
    outputs = {"packed": base / "packed", "i2_s": base / "m-i2_s.gguf", "tq2_0": base / "m-tq2_0.gguf"}
    for src, outtype, path in ((FIXTURE, "hf-packed", outputs["packed"]), (FIXTURE, "i2_s", outputs["i2_s"]),
                               (outputs["packed"], "tq2_0", outputs["tq2_0"])):
        with open_checkpoint(src) as source:
            convert(source, make_sink(path, outtype))
    return outputs


def edited_copy(packed: Path, target: Path, tensor: str, edit) -> Path:
    """A copy of a packed checkpoint with one tensor's stored bytes changed by `edit(bytearray, begin)`."""
    shutil.copytree(packed, target)
    path = target / "model.safetensors"
    with SafetensorsFile(path) as file:
        begin = file.tensors[tensor].begin
    data = bytearray(path.read_bytes())
    edit(data, begin)
    path.write_bytes(bytes(data))
    return target


def flip_one_code(data: bytearray, begin: int) -> None:
    """The low 2-bit field (plane 0) of the first packed byte moves to the next valid code."""
    byte = data[begin]
    data[begin] = (byte & ~3) | (((byte & 3) + 1) % 3)


def test_same_model_in_another_layout_is_identical(converted: dict[str, Path]) -> None:
    result = cli("diff", FIXTURE, converted["i2_s"])
    assert result.returncode == 0, result.stderr
    assert "identical: 24 tensors equal" in result.stdout


def test_scale_rounding_is_reported_per_tensor(converted: dict[str, Path]) -> None:
    code, out, err = run("diff", FIXTURE, converted["packed"])  # the packed side's declared bf16 weight_scale
    assert code == 0 and "identical after rounding β to bf16 (hf weight_scale BF16) in 14 tensors on A" in out, out
    code, out, err = run("diff", FIXTURE, converted["packed"], "--json", "--strict")
    assert code == 3
    report = json.loads(out)
    assert report["betas_only"] is True and report["compared"] == 24
    rows = {row["name"]: row for row in report["differing"]}
    assert len(rows) == 14 and all(row["differing"] == 0 and row["beta_rel_diff"] < 2**-8 for row in rows.values())
    assert "differ: beta differs in 14" in err
    code, text, _ = run("diff", FIXTURE, converted["packed"], "--strict")
    assert code == 3 and f"0 of {768 * 256} codes" in text and "(rel " in text


def test_one_changed_code_is_named(converted: dict[str, Path], tmp_path: Path) -> None:
    damaged = edited_copy(converted["packed"], tmp_path / "damaged", CHANGED, flip_one_code)
    result = cli("diff", converted["packed"], damaged)
    assert result.returncode == 3
    assert f"codes differ in 1 tensors (most: {CHANGED}, 1 of {256 * 768})" in error_line(result)
    assert f"{CHANGED}  ternary" in result.stdout and "(same bits)" in result.stdout
    report = json.loads(cli("diff", converted["packed"], damaged, "--json").stdout)
    assert [(row["name"], row["differing"]) for row in report["differing"]] == [(CHANGED, 1)]


def test_float_and_missing_tensors(converted: dict[str, Path], tmp_path: Path) -> None:
    def bump(data: bytearray, begin: int) -> None:
        data[begin] ^= 1  # lowest mantissa bit of one bf16 value
    damaged = edited_copy(converted["packed"], tmp_path / "norm", "model.norm.weight", bump)
    code, out, err = run("diff", converted["packed"], damaged)
    assert code == 3 and "model.norm.weight" in out and "1 of 256 values" in out and "max |diff|" in out
    assert "float values differ in 1" in err
    with open_checkpoint(converted["packed"]) as source:
        entries = source.entries()
        report = diff_entries(entries[1:], entries[:-1])
    assert report.only_in_a == (entries[-1].name,) and report.only_in_b == (entries[0].name,)
    assert len(report.tensors) == len(entries) - 2 and not report.identical
    code, out, _ = run("diff", converted["packed"], converted["tq2_0"])
    assert code == 0 and "identical" in out  # bf16 betas survive TQ's fp16 d exactly


def test_streaming_diff_agrees_with_compare_weights(converted: dict[str, Path]) -> None:
    streamed = diff_checkpoints(FIXTURE, converted["packed"], strict=True)
    whole = compare_weights(load_weights(FIXTURE)[1], load_weights(converted["packed"])[1])
    assert streamed.to_dict() == whole.to_dict()
    assert not streamed.identical and streamed.betas_only
    rounded = diff_checkpoints(FIXTURE, converted["packed"])  # each beta the bf16 rounding of the master's
    assert rounded.identical and rounded.rounded == "β to bf16 (hf weight_scale BF16) in 14 tensors on A"
    assert np.isclose(max(t.beta_rel_diff for t in streamed.beta_diffs), max(t.beta_rel_diff for t in whole.beta_diffs))


# -- the config is part of the model ------------------------------------------------------------
GGUF_SCALARS = {"<f": 6, "<I": 4}  # GGUF value types: float32, uint32


def patch_gguf(path: Path, out: Path, key: str, fmt: str, value: float) -> Path:
    """A copy of a GGUF with one scalar metadata value overwritten in place (same size), found by
    its key string and value type in the raw bytes: independent of the project's reader."""
    data = bytearray(path.read_bytes())
    needle = struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", GGUF_SCALARS[fmt])
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) == -1, key
    data[at + len(needle): at + len(needle) + 4] = struct.pack(fmt, value)
    out.write_bytes(bytes(data))
    return out


METADATA = [("rope.freq_base", "<f", 10000.0, "rope_theta", 500000.0, 10000.0),
            ("attention.layer_norm_rms_epsilon", "<f", 1e-6, "rms_norm_eps", 1e-05, 1e-06),
            ("attention.head_count", "<I", 8, "num_attention_heads", 4, 8),
            ("attention.head_count_kv", "<I", 1, "num_key_value_heads", 2, 1),
            ("context_length", "<I", 2048, "max_position_embeddings", 4096, 2048)]


@pytest.mark.parametrize("key, fmt, value, hf_key, was, now", METADATA)
def test_metadata_that_changes_the_model_is_a_difference(converted: dict[str, Path], tmp_path: Path, key: str,
                                                         fmt: str, value: float, hf_key: str, was: float,
                                                         now: float) -> None:
    edited = patch_gguf(converted["i2_s"], tmp_path / "edited.gguf", f"bitnet-b1.58.{key}", fmt, value)
    result = cli("diff", converted["i2_s"], edited)
    assert result.returncode == 3, result.stderr
    assert f"differ: config differs in {hf_key}" in error_line(result)
    assert f"config {hf_key}: A {was!r} -> B {now!r}" in result.stdout
    code, out, _ = run("diff", converted["i2_s"], edited, "--json")
    report = json.loads(out)
    assert code == 3 and report["config"] == [{"key": hf_key, "a": was, "b": now}]
    assert report["differing"] == [] and report["cause"] == f"model config differs: {hf_key} {was!r} vs {now!r}"


def test_a_config_json_edit_is_a_difference(converted: dict[str, Path], tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(converted["packed"], edited)
    config = json.loads((edited / "config.json").read_text())
    config.update(vocab_size=config["vocab_size"] + 64, tie_word_embeddings=True)
    (edited / "config.json").write_text(json.dumps(config))
    code, out, err = run("diff", converted["packed"], edited, "--json")
    assert code == 3 and json.loads(out)["config"] == [{"key": "vocab_size", "a": 448, "b": 512}]
    assert "config differs in vocab_size" in err


def test_config_comparison_fills_defaults_and_compares_at_float32() -> None:
    base = json.loads((FIXTURE / "config.json").read_text())
    assert compare_configs(model_config(base), model_config(base)) == ()
    explicit = base | {"head_dim": 64, "rope_scaling": {"type": "linear", "factor": 1.0}}
    rounded = base | {"rms_norm_eps": float(np.float32(1e-5))}  # what a GGUF stores
    transformers5 = {k: v for k, v in base.items() if k != "rope_theta"} | {"rope_parameters": {"rope_theta": 5e5}}
    for same in (explicit, rounded, transformers5):
        assert compare_configs(model_config(base), model_config(same)) == ()
    no_kv = {k: v for k, v in base.items() if k != "num_key_value_heads"}  # defaults to the head count: 4
    assert compare_configs(model_config(base), model_config(no_kv)) == (ConfigDiff("num_key_value_heads", 2, 4),)
    changed = base | {"hidden_act": "silu", "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert [c.key for c in compare_configs(model_config(base), model_config(changed))] == ["hidden_act", "rope_scaling"]
    assert compare_configs({"x": 1}, {}) == (ConfigDiff("x", 1, None),)


def test_revision_options_apply_to_hub_ids_only(converted: dict[str, Path]) -> None:
    code, _, err = run("diff", FIXTURE, converted["i2_s"], "--revision", "main")
    assert code == 2 and "--revision applies to hub repo ids" in err
