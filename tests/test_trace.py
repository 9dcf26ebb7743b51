"""Golden traces: `verify MODEL --record TRACE` writes what plain numpy reads back, `--against`
compares bit for bit (exit 0 / 3 with the step and position), bad trace files exit 1; the same
as functions in bitnet_pack.proof.testing, which imports without hypothesis."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import ROOT, cli, error_line

import bitnet_pack
from bitnet_pack.cli.main import main
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.errors import FormatError
from bitnet_pack.formats.ternary import TernaryWeight
from bitnet_pack.pipeline.sources import load_weights
from bitnet_pack.proof.testing import assert_matches_trace, load_trace, record_trace
from bitnet_pack.proof.trace import Trace, save_trace

TINY_A = ROOT / "fixtures" / "tiny-a"
PACKED = TINY_A / "tiny-a-packed"
PROMPT = [1, 280, 18, 331, 374]
STEPS = 6


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def packed_model() -> BitNetModel:
    return BitNetModel(*load_weights(PACKED))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "golden.npz"
    code, out, err = run("verify", PACKED, "--record", path, "--ids", ",".join(map(str, PROMPT)),
                         "--tokens", STEPS)
    assert code == 0, err
    assert f"recorded {len(PROMPT) - 1 + STEPS} logits rows" in out
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    out = {outtype: base / f"m-{outtype}.gguf" for outtype in ("i2_s", "tq2_0")}
    for outtype, path in out.items():
        assert run("convert", PACKED, path, "--outtype", outtype)[0] == 0
    return out


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_record_writes_the_prompt_the_greedy_ids_and_every_logits_row(recorded: Path,
                                                                      packed_model: BitNetModel) -> None:
    data = arrays_of(recorded)  # plain numpy, not the project's reader
    assert sorted(data) == ["ids", "logits", "numerics", "prompt", "version"]
    ids, step_rows = packed_model.generate_ids(PROMPT, STEPS)
    expected = np.concatenate([packed_model.prompt_logits(PROMPT)[:-1], step_rows]).astype(np.float32)
    assert data["prompt"].dtype == np.int64 and data["prompt"].tolist() == PROMPT
    assert data["ids"].dtype == np.int64 and data["ids"].tolist() == ids
    assert data["logits"].dtype == np.float32 and data["logits"].shape == (len(PROMPT) - 1 + STEPS, 512)
    assert data["logits"].tobytes() == expected.tobytes()
    assert str(data["numerics"]) == "reference" and str(data["version"]) == bitnet_pack.__version__
    assert [p.name for p in recorded.parent.iterdir()] == [recorded.name]  # no temporary left


@pytest.mark.parametrize("outtype", ["i2_s", "tq2_0"])
def test_the_same_model_in_another_layout_matches_the_trace(recorded: Path, converted: dict[str, Path],
                                                            outtype: str) -> None:
    code, out, err = run("verify", converted[outtype], "--against", recorded, "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["identical"] and report["ids"] == arrays_of(recorded)["ids"].tolist()
    assert report["versions"] == [bitnet_pack.__version__] * 2


def test_one_ulp_in_one_row_is_found_at_its_step_and_position(recorded: Path, tmp_path: Path) -> None:
    data = arrays_of(recorded)
    step = 3
    row = data["logits"][len(PROMPT) - 1 + step]
    col = int(np.argmin(row))  # not the argmax: the trace's ids stay consistent
    row[col] = np.nextafter(row[col], np.float32(-np.inf))
    edited = tmp_path / "edited.npz"
    np.savez(edited, **data)
    code, out, err = run("verify", PACKED, "--against", edited)
    assert code == 3
    assert f"differs from the trace {edited} at step {step}, position {len(PROMPT) - 1 + step}" in one_error_line(err)
    assert "first divergence: step 3 (position 7)" in out


def test_a_model_with_other_scales_differs_from_the_first_row_it_changes(recorded: Path) -> None:
    master = BitNetModel(*load_weights(TINY_A / "tiny-a-bf16"))
    trace = arrays_of(recorded)
    rows = [master.prompt_logits(PROMPT)[:-1]]
    rows += [master.prefill(PROMPT)[None]] + [master.step(int(t))[None] for t in trace["ids"][:-1]]
    differs = [r for r, got in enumerate(np.concatenate(rows)) if got.tobytes() != trace["logits"][r].tobytes()]
    code, out, _ = run("verify", TINY_A / "tiny-a-bf16", "--against", recorded, "--json")
    report = json.loads(out)
    assert code == 3 and differs
    assert report["first_divergence"]["position"] == differs[0]
    assert "trace holds logits, not weights" in report["cause"] and "kernels" not in report["cause"]


def test_the_traces_numerics_are_used_unless_overridden(converted: dict[str, Path], tmp_path: Path) -> None:
    trace = tmp_path / "cpp.npz"
    gguf = converted["i2_s"]
    assert run("verify", gguf, "--record", trace, "--ids", "1,15,27", "--tokens", 4, "--numerics", "bitnet.cpp")[0] == 0
    assert str(arrays_of(trace)["numerics"]) == "bitnet.cpp"
    assert run("verify", gguf, "--against", trace)[0] == 0
    code, out, _ = run("verify", gguf, "--against", trace, "--numerics", "reference", "--json")
    assert code == 3 and json.loads(out)["cause"].endswith("the numerics differ (bitnet.cpp vs reference)")


def test_record_replaces_a_trace_only_with_force(recorded: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    path.write_bytes(b"keep me")
    code, _, err = run("verify", PACKED, "--record", path, "--ids", "1,2", "--tokens", 2)
    assert code == 2 and "--force" in one_error_line(err) and path.read_bytes() == b"keep me"
    assert run("verify", PACKED, "--record", path, "--ids", "1,2", "--tokens", 2, "--force")[0] == 0
    assert arrays_of(path)["logits"].shape == (1 + 2, 512)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


@pytest.mark.parametrize("args", [["--against", "T", "--tokens", "3"], ["--against", "T", "--ids", "1"],
                                  ["--record", "T", "B"], [], ["B", "--against", "T"]])
def test_modes_that_do_not_go_together_are_usage_errors(recorded: Path, args: list[str]) -> None:
    swapped = [str(recorded) if a == "T" else str(PACKED) if a == "B" else a for a in args]
    code, _, err = run("verify", PACKED, *swapped)
    assert code == 2, err


def test_a_trace_of_another_vocabulary_is_a_mismatch(recorded: Path) -> None:
    code, _, err = run("verify", ROOT / "fixtures" / "tiny-bitnet", "--against", recorded)
    assert code == 3 and "different vocabularies (512 vs 448 tokens)" in one_error_line(err)


# -- bad trace files: exit 1, one line, before the model is loaded --------------------------
def _edit(**changes: object):
    def build(good: dict[str, np.ndarray], path: Path) -> None:
        data = dict(good)
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value(data) if callable(value) else value
        np.savez(path, **data)
    return build


def _raw(make):
    def build(good: dict[str, np.ndarray], path: Path) -> None:
        path.write_bytes(make(good, path))
    return build


def _ids_not_argmax(data: dict) -> np.ndarray:
    ids = data["ids"].copy()
    ids[2] = (ids[2] + 1) % 512
    return ids


def _npy(good: dict, path: Path) -> bytes:
    np.save(path.with_suffix(".npy"), good["logits"])
    return path.with_suffix(".npy").read_bytes()


BAD = {
    "empty": (_raw(lambda good, path: b""), "not an .npz"),
    "text": (_raw(lambda good, path: b"prompt,ids,logits\n"), "not an .npz"),
    "npy": (_raw(_npy), "not an .npz"),
    "missing logits": (_edit(logits=None), "missing ['logits']"),
    "unknown key": (_edit(extra=np.zeros(2)), "unknown ['extra']"),
    "ids int32": (_edit(ids=lambda d: d["ids"].astype(np.int32)), "ids is int32, expected int64"),
    "logits float64": (_edit(logits=lambda d: d["logits"].astype(np.float64)), "logits is float64"),
    "one row short": (_edit(logits=lambda d: d["logits"][:-1]), "expected [10, vocab]"),
    "flat logits": (_edit(logits=lambda d: d["logits"].reshape(-1)), "expected [10, vocab]"),
    "empty ids": (_edit(ids=np.zeros(0, np.int64)), "non-empty 1-D"),
    "ids not argmax": (_edit(ids=_ids_not_argmax), "ids[2]"),
    "prompt out of range": (_edit(prompt=lambda d: d["prompt"] + 600), "prompt holds ids outside [0, 512)"),
    "numerics not text": (_edit(numerics=np.int64(3)), "numerics must be a string"),
    "objects": (_edit(numerics=np.array(["a", 1], dtype=object)), "not a readable .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_trace_file_exits_1_with_one_line(recorded: Path, tmp_path: Path, case: str) -> None:
    build, message = BAD[case]
    bad = tmp_path / "bad.npz"
    build(arrays_of(recorded), bad)
    code, _, err = run("verify", PACKED, "--against", bad)
    assert code == 1
    line = one_error_line(err)
    assert str(bad) in line and message in line


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.9, 0.999])
def test_a_truncated_trace_exits_1(recorded: Path, tmp_path: Path, keep: float) -> None:
    data = recorded.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:int(len(data) * keep)])
    result = cli("verify", PACKED, "--against", cut)
    assert result.returncode == 1, result.stderr
    assert str(cut) in error_line(result)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 40), st.integers(0, 2**32 - 1),
       st.sampled_from([None, "reference", "bitnet.cpp"]))
def test_save_and_load_round_trip_exactly(prompt_length: int, steps: int, vocab: int, seed: int,
                                          numerics: str | None) -> None:
    import tempfile

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((prompt_length - 1 + steps, vocab)).astype(np.float32)
    ids = np.argmax(logits[prompt_length - 1:], axis=1).astype(np.int64)
    trace = Trace(rng.integers(0, vocab, prompt_length), ids, logits, numerics, "9.9")
    with tempfile.TemporaryDirectory() as scratch:
        back = load_trace(save_trace(trace, Path(scratch) / "t.npz"))
    assert back.prompt.tobytes() == trace.prompt.tobytes() and back.ids.tobytes() == ids.tobytes()
    assert back.logits.tobytes() == logits.tobytes() and (back.numerics, back.version) == (numerics, "9.9")


# -- bitnet_pack.proof.testing ---------------------------------------------------------------------
def test_testing_functions_record_and_assert(packed_model: BitNetModel, converted: dict[str, Path],
                                             tmp_path: Path) -> None:
    path = tmp_path / "golden.npz"
    trace = record_trace(PACKED, path, PROMPT, 5)
    assert load_trace(path).logits.tobytes() == trace.logits.tobytes()
    assert assert_matches_trace(converted["i2_s"], path).identical
    assert assert_matches_trace(packed_model, trace).identical
    config, weights = load_weights(PACKED)
    name = "model.layers.1.mlp.up_proj.weight"
    codes = weights[name].codes.copy()
    codes[:, :64] = -codes[:, :64]
    flipped = BitNetModel(config, {**weights, name: TernaryWeight(codes, weights[name].beta)})
    rows = np.concatenate([flipped.prompt_logits(PROMPT)[:-1], flipped.prefill(PROMPT)[None]])
    first = next(r for r in range(len(rows)) if rows[r].tobytes() != trace.logits[r].tobytes())
    label = "prompt" if first < len(PROMPT) - 1 else "step 0"
    with pytest.raises(AssertionError, match=rf"at {label}, position {first}: max \|diff\|"):
        assert_matches_trace(flipped, trace)
    with pytest.raises(FormatError, match="not an .npz"):
        assert_matches_trace(packed_model, Path(__file__))


def test_testing_imports_in_a_plain_install_without_hypothesis(recorded: Path) -> None:
    script = f"""
import sys
sys.modules["hypothesis"] = None  # as if not installed: importing it raises ModuleNotFoundError
from bitnet_pack.proof.testing import *
import bitnet_pack.proof.testing as testing
assert load_trace({str(recorded)!r}).ids.size == {STEPS}
assert "ternary_weights" not in testing.__all__
try:
    testing.ternary_weights
except ImportError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hypothesis" in result.stdout and "pip install" in result.stdout
