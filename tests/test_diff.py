"""bitnet-pack diff: two checkpoints compared in ternary space, exit 0 identical / 3 not."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corrupt_files import FIXTURE
from test_cli import cli, error_line

from bitnet_pack.checkpoints import load_weights, open_checkpoint
from bitnet_pack.cli import main
from bitnet_pack.containers.safetensors import SafetensorsFile
from bitnet_pack.convert import convert
from bitnet_pack.diff import compare_weights, diff_checkpoints, diff_entries
from bitnet_pack.sinks.factory import make_sink

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
    code, out, err = run("diff", FIXTURE, converted["packed"], "--json")
    assert code == 3
    report = json.loads(out)
    assert report["betas_only"] is True and report["compared"] == 24
    rows = {row["name"]: row for row in report["differing"]}
    assert len(rows) == 14 and all(row["differing"] == 0 and row["beta_rel_diff"] < 2**-8 for row in rows.values())
    assert "differ: beta differs in 14" in err
    code, text, _ = run("diff", FIXTURE, converted["packed"])
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
    streamed = diff_checkpoints(FIXTURE, converted["packed"])
    whole = compare_weights(load_weights(FIXTURE)[1], load_weights(converted["packed"])[1])
    assert streamed.to_dict() == whole.to_dict()
    assert not streamed.identical and streamed.betas_only
    assert np.isclose(max(t.beta_rel_diff for t in streamed.beta_diffs), max(t.beta_rel_diff for t in whole.beta_diffs))
