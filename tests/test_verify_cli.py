"""`bitnet-pack verify` end to end: identical logits across layouts, named causes, exit 3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bitnet_pack.cli import main
from bitnet_pack.containers.gguf import GGUFFile

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny-bitnet"


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "packed"
    assert run("convert", FIXTURE, out, "--outtype", "hf-packed")[0] == 0
    return out


@pytest.mark.parametrize("outtype", ["i2_s", "tq1_0", "tq2_0", "tl2"])
def test_layouts_made_from_packed_give_bit_identical_logits(outtype: str, packed: Path, tmp_path: Path) -> None:
    gguf = tmp_path / f"m-{outtype}.gguf"
    assert run("convert", packed, gguf, "--outtype", outtype)[0] == 0
    code, out, err = run("verify", packed, gguf, "--tokens", "8", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["identical"] and report["max_abs_diff"] == 0.0 and len(report["step_max_abs_diff"]) == 8


def test_master_vs_packed_is_explained_as_scale_rounding(packed: Path) -> None:
    code, out, err = run("verify", FIXTURE, packed, "--tokens", "4")
    assert code == 3
    assert "scale rounding only: ternary codes identical in all 14 projections" in out
    assert err.startswith("Error: ") and "differ at" in err and "position" in err


def test_one_flipped_code_byte_is_found(packed: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.gguf"
    assert run("convert", packed, good, "--outtype", "i2_s")[0] == 0
    file = GGUFFile(good)
    info = file.tensors["blk.1.ffn_up.weight"]
    offset = info.abs_offset + 1000
    file.close()
    data = bytearray(good.read_bytes())
    code = (data[offset] >> 6) & 3
    data[offset] = (data[offset] & 0x3F) | (((code + 1) % 3) << 6)  # another valid code
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    code, out, err = run("verify", good, bad, "--tokens", "6", "--json")
    report = json.loads(out)
    assert code == 3
    first = report["first_divergence"]
    assert first is not None and first["position"] >= 0
    differing = report["weights"]["differing"]
    assert [(t["name"], t["differing"]) for t in differing] == [("model.layers.1.mlp.up_proj.weight", 1)]
    where = "prompt" if first["step"] is None else f"step {first['step']}"
    assert f"differ at {where}, position {first['position']}" in err


def test_recorded_greedy_ids_through_the_cli(tiny_a: Path) -> None:
    record = json.loads((tiny_a / "tiny-a.decode.json").read_text())
    for prompt in record["prompts"]:
        ids = ",".join(map(str, prompt["prompt"]))
        code, out, _ = run("verify", tiny_a / "tiny-a-packed", tiny_a / "tiny-a-packed", "--ids", ids,
                           "--tokens", "16", "--json")
        assert code == 0 and json.loads(out)["ids"] == prompt["hf_packed_offline"]["ids"]
        code, out, _ = run("verify", tiny_a / "tiny-a-i2_s.gguf", tiny_a / "tiny-a-i2_s.gguf", "--ids", ids,
                           "--tokens", "16", "--numerics", "bitnet.cpp", "--json")
        assert code == 0 and json.loads(out)["ids"] == prompt["bitnet_cpp_i2_s"]["ids"]


def test_generate_prints_text(packed: Path) -> None:
    code, out, err = run("generate", packed, "--prompt", "BitNet stores", "--tokens", "5")
    assert code == 0, err
    assert out.strip() != ""


def test_generate_reports_a_broken_tokenizer_config_as_bad_input(packed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in packed.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    (broken / "tokenizer_config.json").write_text("{not json")
    code, _, err = run("generate", broken, "--prompt", "BitNet", "--tokens", "2")
    assert code == 1 and "tokenizer_config.json" in err and "internal error" not in err
