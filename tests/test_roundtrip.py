"""bitnet-pack roundtrip, and bitnet_pack.proof.testing for downstream suites."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corrupt_files import FIXTURE, write_master
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import cli, error_line

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.errors import ShapeError
from bitnet_pack.formats.layouts import get_layout, layout_names
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.factory import make_sink
from bitnet_pack.pipeline.sources import open_checkpoint
from bitnet_pack.proof.roundtrip import roundtrip, scale_rounding
from bitnet_pack.proof.testing import (
    accepted_shapes,
    assert_layout_round_trips,
    assert_round_trips,
    assert_same_checkpoint,
    assert_same_ternary,
    layout_weights,
    mutated_bytes,
)

# the module: the attribute bitnet_pack.roundtrip is the library function of the same name
roundtrip_module = importlib.import_module("bitnet_pack.proof.roundtrip")

DAMAGED_GGUF_TENSOR, DAMAGED_TENSOR = "blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rt") / "packed"
    with open_checkpoint(FIXTURE) as source:
        convert(source, make_sink(path, "hf-packed"))
    return path


# -- 5. the CLI on the fixture, and on outputs with one corrupted code byte ----------------

def test_roundtrip_of_the_fixture_passes_every_layout() -> None:
    result = cli("roundtrip", FIXTURE)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:-1] if line[:1] != " "}
    assert rows == {name: "ok" for name in layout_names()}
    assert "declared rounding: β to fp16 (TQ2_0) in 14 tensors" in result.stdout  # said under its row
    assert result.stdout.strip().endswith(f"{len(layout_names())} passed, 0 skipped, 0 broken")


def test_master_rounds_scales_only_where_the_layout_stores_fewer_bits() -> None:
    report = roundtrip(FIXTURE, n_tokens=2)
    assert report.ok and report.source_kind == "bf16-master" and report.back_outtype == "bf16"
    for result in report.results:
        rounded = scale_rounding(result.layout) != "f32"  # hf: bf16 weight_scale; TQ: fp16 d
        assert (result.status, result.tensors, result.back_exact) == ("ok", 24, True)
        assert result.betas_rounded == (14 if rounded else 0), result
        assert result.floats_rounded == 0, result  # the fixture's bf16 embedding is exact in F16
        # MODEL with the declared rounding applied (bitnet-gpu: its runtime's own converter), against L's bytes
        own = result.layout == "bitnet-gpu"
        assert result.logits == "identical" if not own else result.logits.startswith("identical to MODEL with β and "
                                                                                       "codes by bitnet-gpu's own")
        assert ("β " in result.rounding) is rounded


def test_the_default_f16_embedding_is_a_declared_rounding(tiny_a: Path) -> None:
    report = roundtrip(tiny_a / "tiny-a-bf16", ["i2_s", "tq2_0", "hf"], n_tokens=2)
    rows = {r.layout: r for r in report.results}
    assert report.ok and all(r.logits == "identical" for r in report.results)
    assert rows["i2_s"].rounding == "embedding to F16 (I2_S GGUF) in 1 tensor" and rows["i2_s"].floats_rounded == 1
    assert rows["tq2_0"].rounding == "embedding to F16 (TQ2_0 GGUF) in 1 tensor, β to fp16 (TQ2_0) in 14 tensors"
    assert rows["hf"].rounding == "β to bf16 (hf weight_scale BF16) in 14 tensors" and rows["hf"].floats_rounded == 0


def test_packed_checkpoint_survives_every_layout_bit_for_bit(packed: Path) -> None:
    report = roundtrip(packed, n_tokens=2)
    assert report.back_outtype == "hf-packed"
    assert [(r.layout, r.status, r.betas_rounded, r.logits) for r in report.results] == [
        (name, "ok", 0, "identical") for name in layout_names()]
    assert_round_trips(packed, ["tq1_0", "tl2"], n_tokens=1)


def test_layouts_that_do_not_fit_are_skipped_with_their_rule(tmp_path: Path) -> None:
    model = write_master(tmp_path / "odd", hidden=160, ffn=192, heads=2, kv_heads=1)
    result = cli("roundtrip", model, "--json", "--tokens", "1")
    assert result.returncode == 0, result.stderr
    rows = {row["layout"]: row for row in json.loads(result.stdout)["layouts"]}
    assert rows["hf"]["status"] == "ok"
    assert rows["i2_s"]["status"] == "skipped" and "in_features % 128 == 0" in rows["i2_s"]["reason"]
    assert rows["tq2_0"]["status"] == "skipped" and "256" in rows["tq2_0"]["reason"]
    assert all(row["status"] in ("ok", "skipped") for row in rows.values())


def _damaging(layout: str, damage):
    """Wrap roundtrip's conversion so the `layout` output gets `damage(data, offset)` applied to
    the first code byte of one tensor: a layout that corrupts what it writes."""
    original = roundtrip_module._convert

    def convert_then_damage(source, output, outtype, embedding, read_options, **keywords):
        written = original(source, output, outtype, embedding, read_options, **keywords)
        if output.name == f"roundtrip-{layout}.gguf":
            with GGUFFile(output) as file:
                offset = file.tensors[DAMAGED_GGUF_TENSOR].abs_offset
            data = bytearray(output.read_bytes())
            damage(data, offset)
            output.write_bytes(bytes(data))
        return written
    return convert_then_damage


def test_a_corrupted_code_byte_exits_3_naming_layout_and_tensor(monkeypatch) -> None:
    def other_valid_code(data: bytearray, offset: int) -> None:  # TQ2_0: bits 1..0 hold q + 1
        data[offset] = (data[offset] & ~3) | (((data[offset] & 3) + 1) % 3)
    monkeypatch.setattr(roundtrip_module, "_convert", _damaging("tq2_0", other_valid_code))
    result = CliRunner().invoke(main, ["roundtrip", str(FIXTURE), "--tokens", "1"])
    assert result.exit_code == 3, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: roundtrip of ") and "broke in layout tq2_0:" in last
    assert f"tensor '{DAMAGED_TENSOR}': 1 of {768 * 256} codes differ after MODEL -> tq2_0" in last
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:] if line[:1] != " "}
    assert rows["tq2_0"] == "mismatch" and rows["tq1_0"] == "ok" and rows["i2_s"] == "ok"


def test_a_code_byte_no_layout_can_decode_is_named_too(monkeypatch) -> None:
    def no_ternary_value(data: bytearray, offset: int) -> None:
        data[offset] = 0xFF  # four I2_S codes of 3
    monkeypatch.setattr(roundtrip_module, "_convert", _damaging("i2_s", no_ternary_value))
    result = CliRunner().invoke(main, ["roundtrip", str(FIXTURE), "--layouts", "i2_s,tl1", "--tokens", "1"])
    assert result.exit_code == 3, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "broke in layout i2_s:" in last and f"tensor '{DAMAGED_TENSOR}'" in last and "codes are 3" in last


def test_unknown_layout_is_a_usage_error() -> None:
    result = cli("roundtrip", FIXTURE, "--layouts", "q4_0")
    assert result.returncode == 2 and "unknown layout 'q4_0'" in error_line(result)


# -- bitnet_pack.proof.testing --------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(data=st.data(), layout=st.sampled_from(layout_names()))
def test_every_layout_round_trips_the_shapes_it_accepts(data, layout: str) -> None:
    weight = data.draw(layout_weights(layout))
    blob = assert_layout_round_trips(layout, weight)
    assert blob.nbytes == get_layout(layout).nbytes(weight.shape)


def test_accepted_shapes_pass_the_layout_rules() -> None:
    for layout in layout_names():
        shapes = accepted_shapes(layout, max_rows=64, max_cols=512)
        assert shapes, layout
        for shape in shapes:
            get_layout(layout).check_shape(shape)
    assert (3, 32) in accepted_shapes("hf") and (3, 128) in accepted_shapes("i2_s")
    assert all(cols % 256 == 0 for _, cols in accepted_shapes("tq1_0"))
    assert all(rows % 32 == 0 and cols >= 256 for rows, cols in accepted_shapes("tl2"))
    with pytest.raises(ShapeError):
        get_layout("tq2_0").check_shape((4, 128))


def test_assertions_fail_with_the_cause(packed: Path) -> None:
    assert_same_checkpoint(FIXTURE, FIXTURE)
    assert_same_checkpoint(FIXTURE, packed)  # the packed side's bf16 weight_scale: a declared rounding
    with pytest.raises(AssertionError, match="beta differs in 14"):
        assert_same_checkpoint(FIXTURE, packed, strict=True)
    weight = TernaryWeight(np.zeros((4, 128), np.int8), np.float32(0.5))
    blob = assert_layout_round_trips("i2_s", weight)
    broken = blob.copy()
    broken[0] ^= 0x40  # bits 7..6 of byte 0 hold element 0: code 1 (0) becomes 0 (-1)
    with pytest.raises(AssertionError, match=r"i2_s: 1 codes differ, first at \[0, 0\]: -1 != 0"):
        assert_same_ternary(get_layout("i2_s").decode(broken, weight.shape), weight, "i2_s")


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_mutated_bytes_stays_inside_its_region(data) -> None:
    original = bytes(range(64))
    mutated = data.draw(mutated_bytes(original, region=(8, 16), truncate=False))
    assert len(mutated) == 64 and mutated[:8] == original[:8] and mutated[16:] == original[16:]
    assert np.count_nonzero(np.frombuffer(mutated, np.uint8) != np.frombuffer(original, np.uint8)) <= 6
