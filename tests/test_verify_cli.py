"""`bitnet-pack verify` end to end: identical logits across layouts, named causes, exit 3."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
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
    assert code == 0, out + err  # the packed checkpoint's bf16 weight_scale, applied to the master's beta
    assert "identical after rounding β to bf16 (hf weight_scale BF16) in 14 tensors on A" in out
    code, out, err = run("verify", FIXTURE, packed, "--tokens", "4", "--strict")
    assert code == 3
    assert "scale rounding only: ternary codes identical in all 14 projections" in out
    assert out.count("model.layers.0.self_attn.q_proj.weight") == 1 and "and 11 more" in out
    assert err.startswith("Error: ") and "differ at" in err and "position" in err and "q_proj" not in err


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


@pytest.mark.parametrize("atol", ["nan", "inf", "-inf", "-1"])
def test_a_tolerance_that_is_not_finite_is_a_usage_error(packed: Path, atol: str) -> None:
    code, _, err = run("verify", FIXTURE, packed, "--atol", atol)
    assert code == 2 and "--atol" in err


def test_different_vocabularies_exit_3(tiny_a: Path) -> None:
    code, _, err = run("verify", FIXTURE, tiny_a / "tiny-a-packed", "--ids", "1,2")
    assert code == 3
    assert err.strip() == (f"Error: {FIXTURE} and {tiny_a / 'tiny-a-packed'} have different vocabularies "
                           f"(448 vs 512 tokens): no logits row can be identical")


def test_verify_of_a_config_change_names_it(packed: Path, tmp_path: Path) -> None:
    from test_diff import patch_gguf

    gguf = tmp_path / "m.gguf"
    assert run("convert", packed, gguf, "--outtype", "i2_s")[0] == 0
    edited = patch_gguf(gguf, tmp_path / "theta.gguf", "bitnet-b1.58.rope.freq_base", "<f", 10000.0)
    code, out, err = run("verify", gguf, edited, "--tokens", "3", "--json")
    assert code == 3
    assert json.loads(out)["cause"] == "model config differs: rope_theta 500000.0 vs 10000.0"
    assert "kernels" not in err


def test_generate_json(packed: Path) -> None:
    code, out, err = run("generate", packed, "--prompt", "BitNet stores", "--tokens", "5", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"prompt", "prompt_ids", "ids", "text", "stopped_at_eos", "numerics"}
    assert result["prompt"] == "BitNet stores" and result["numerics"] == "reference"
    assert len(result["ids"]) == 5 or result["stopped_at_eos"]
    from bitnet_pack.engine.model import BitNetModel
    from bitnet_pack.pipeline.sources import load_weights

    greedy, _ = BitNetModel(*load_weights(packed)).generate_ids(result["prompt_ids"], 5)
    assert greedy[:len(result["ids"])] == result["ids"]
    code, text, _ = run("generate", packed, "--prompt", "BitNet stores", "--tokens", "5")
    assert code == 0 and text == result["text"] + "\n"


@pytest.fixture()
def short_context(packed: Path, tmp_path: Path) -> Path:
    """The packed fixture with max_position_embeddings 12."""
    short = tmp_path / "short"
    shutil.copytree(packed, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 12}))
    return short


def test_generate_and_verify_are_bound_by_the_context(short_context: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitnet_pack.engine.model import BitNetModel

    def refuse(*_args: object) -> None:
        raise AssertionError("decoded although the context was too short")

    code, out, _ = run("generate", short_context, "--prompt", "Bit", "--tokens", "3", "--json")
    prompt_tokens = len(json.loads(out)["prompt_ids"])
    assert code == 0 and prompt_tokens + 3 <= 12
    monkeypatch.setattr(BitNetModel, "prefill", refuse)
    monkeypatch.setattr(BitNetModel, "prompt_logits", refuse)
    cases = {"tokens": ("generate", short_context, "--prompt", "Bit", "--tokens", 13 - prompt_tokens),
             "prompt": ("generate", short_context, "--prompt", "BitNet stores every weight as " * 8, "--tokens", "1"),
             "verify": ("verify", short_context, short_context, "--ids", "1,2,3", "--tokens", "10")}
    for case, args in cases.items():
        code, _, err = run(*args)
        assert code == 2, (case, err)
        assert err.startswith("Error: the prompt (") and "the model's context (max_position_embeddings) is 12" in err
    code, _, err = run("generate", FIXTURE, "--prompt", "Bit", "--tokens", "100000")
    assert code == 2 and "is 4096" in err


def test_verify_and_generate_take_revisions(tmp_path: Path) -> None:
    from test_cli import cli, error_line
    from test_hub import MAIN, OLD, files_of, fill_cache, hub_env

    cache = tmp_path / "cache"
    fill_cache(cache, "org/tiny-bitnet", {MAIN: files_of(FIXTURE), OLD: files_of(FIXTURE)},
               {"main": MAIN, "v1": OLD})
    env = hub_env(cache)
    generated = cli("generate", "org/tiny-bitnet", "--revision", "v1", "--prompt", "Bit", "--tokens", "2", env=env)
    assert generated.returncode == 0 and f"(revision v1) to commit {OLD}" in generated.stderr
    both = cli("verify", "org/tiny-bitnet", FIXTURE, "--revision", "v1", "--ids", "1,2", "--tokens", "2", env=env)
    assert both.returncode == 0 and f"to commit {OLD}" in both.stderr, both.stderr
    per_side = cli("verify", "org/tiny-bitnet", "org/tiny-bitnet", "--revision", "v1", "--revision-b", "main",
                   "--ids", "1,2", "--tokens", "2", env=env)
    assert per_side.returncode == 0 and f"to commit {OLD}" in per_side.stderr and f"to commit {MAIN}" in per_side.stderr
    local = cli("verify", FIXTURE, FIXTURE, "--revision", "v1", env=env)
    assert local.returncode == 2 and "--revision applies to hub repo ids" in error_line(local)


def test_verify_shows_progress_on_a_terminal_only(packed: Path) -> None:
    from test_cli import _stderr_on_a_terminal, cli

    args = ["verify", FIXTURE, FIXTURE, "--ids", "1,2", "--tokens", "8"]
    shown = _stderr_on_a_terminal(args)
    assert "verify" in shown and "/18" in shown and "pass" in shown  # 2 models x (prompt + 8 steps)
    assert "/18" not in _stderr_on_a_terminal([*args, "--json"])
    piped = cli(*args)
    assert piped.returncode == 0 and piped.stderr == ""


def test_the_cli_offers_every_numerics_mode_of_the_model() -> None:
    from bitnet_pack.cli.commands.model_io import NUMERICS as OFFERED
    from bitnet_pack.engine.model import NUMERICS

    assert OFFERED == list(NUMERICS)
