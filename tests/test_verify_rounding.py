"""verify MASTER X exits 0 for every outtype `convert` writes from MASTER with its defaults,
naming the declared rounding it applied; --strict exits 3 exactly where one was needed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bitnet_pack.cli.main import main
from bitnet_pack.engine.rounding import Plan, Rounding, round_scalar
from bitnet_pack.formats.layouts import get_layout, layout_names
from bitnet_pack.pipeline.sinks.factory import directory_outtypes, outtype_spellings

OUTTYPES = [o for o in outtype_spellings() if o != "hf"]  # "hf" is hf-packed's other spelling
IDS = "1,15,27,300,42"


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture(scope="module", params=["tiny-a-bf16", "tiny-a-packed"])
def converted(request: pytest.FixtureRequest, tiny_a: Path, tmp_path_factory: pytest.TempPathFactory):
    """The master (or packed checkpoint) and every outtype convert makes of it, defaults only."""
    source = tiny_a / request.param
    out = tmp_path_factory.mktemp(request.param)
    paths = {}
    for outtype in OUTTYPES:
        path = out / (outtype if outtype in directory_outtypes() else f"{outtype}.gguf")
        code, text = run("convert", source, path, "--outtype", outtype)
        assert code == 0, text
        paths[outtype] = path
    return source, paths


@pytest.mark.parametrize("outtype", OUTTYPES)
def test_verify_passes_after_the_declared_rounding(converted, outtype: str) -> None:
    source, paths = converted
    code, text = run("verify", source, paths[outtype], "--ids", IDS, "--tokens", "3", "--json")
    assert code == 0, text  # (bitnet-gpu from a master: after its own converter's ternarization, declared)
    report = json.loads(text[text.index("{"):])
    assert report["ok"] and report["identical"] and report["weights"]["identical"]
    code, strict_text = run("verify", source, paths[outtype], "--ids", IDS, "--tokens", "3", "--strict", "--json")
    if report["rounded"]:  # something was rounded: the proof without it must fail
        assert "rounding" in report["cause"] and report["rounded"] in report["cause"]
        assert code == 3, strict_text
    else:
        assert code == 0, strict_text


def test_tq_from_a_fp32_master_rounds_beta_to_fp16(converted) -> None:
    source, paths = converted
    code, text = run("verify", source, paths["tq2_0"], "--ids", IDS, "--tokens", "2")
    assert code == 0, text
    if source.name.endswith("bf16"):  # an absmean beta: fp32, which the fp16 block scale rounds
        assert "identical after rounding" in text and "β to fp16 (TQ2_0)" in text


@pytest.mark.parametrize("name", layout_names())
def test_each_layout_declares_its_beta_rounding(name: str) -> None:
    layout = get_layout(name)
    beta = np.float32(0.1234567)
    kind = layout.beta_rounding
    assert kind in ("", "fp16", "bf16")
    assert layout.round_beta(beta).tobytes() == round_scalar(beta, kind).tobytes()
    if kind:
        assert layout.round_beta(beta) != beta
        assert layout.round_beta(layout.round_beta(beta)) == layout.round_beta(beta)  # idempotent
    else:
        assert layout.round_beta(beta) == beta


def test_inverse_weight_scale_rounds_one_over_beta() -> None:
    beta = np.float32(0.0371)
    rounded = get_layout("hf").round_beta(beta, scale_dtype="bf16", inverse=True)
    assert rounded == np.float32(1) / round_scalar(np.float32(1) / beta, "bf16") and rounded != beta


def test_plan_counts_only_changes() -> None:
    plan = Plan({"w": Rounding("fp16", True, "TQ2_0", layout="tq2_0")})
    assert plan.beta("w", np.float32(0.5)) == np.float32(0.5) and not plan.applied
    assert plan.beta("w", np.float32(0.1)) == np.float32(np.float16(0.1))
    assert plan.description() == "β to fp16 (TQ2_0) in 1 tensor"


def test_diff_stops_at_the_first_difference_when_asked(converted) -> None:
    source, paths = converted
    code, text = run("diff", source, paths["tq2_0"], "--strict", "--stop-early", "--json")
    report = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]  # the JSON, then the error line
    assert code == 3 and report["complete"] is False and len(report["differing"]) == 1
    assert report["compared"] < 24  # the tensors after the first difference were not read
    code, text = run("diff", source, paths["tq2_0"], "--json")  # the declared rounding: equal, all compared
    report = json.loads(text[text.index("{"):])
    assert code == 0 and report["complete"] is True and report["compared"] == 24, text
