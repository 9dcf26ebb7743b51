"""Issue 18's habits of the field: llama.cpp's --outfile, --outtype spellings and auto,
--split-max-size parts and size units; -q anywhere; file completion; generate --ids; one JSON
schema for convert, convert --dry-run and inspect; inspect's own names and model summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corrupt_files import FIXTURE
from hostile_cases import converted
from test_cli import NO_NETWORK, ROOT
from test_hostile import one_error_line, run

ENV = {**os.environ, "PYTHONPATH": str(ROOT), **NO_NETWORK}


# -- habits of the field ---------------------------------------------------------------------

@pytest.mark.parametrize("spelling,outtype", [("tq2-0", "tq2_0"), ("TQ2_0", "tq2_0"), ("I2-S", "i2_s"),
                                              ("auto", "i2_s"), ("hf", "hf-packed")])
def test_outtype_takes_the_fields_spellings_and_auto(tmp_path: Path, spelling: str, outtype: str) -> None:
    out = tmp_path / ("o" if outtype == "hf-packed" else "o.gguf")
    code, stdout, stderr = run("convert", FIXTURE, "--outfile", out, "--outtype", spelling, "--dry-run", "--json")
    assert code == 0, stderr
    planned = json.loads(stdout)
    assert planned["output"] == str(out)
    direct = run("convert", FIXTURE, out, "--outtype", outtype, "--dry-run", "--json")[1]
    assert json.loads(direct) == planned


def test_outtype_auto_for_a_directory_is_hf_packed(tmp_path: Path) -> None:
    code, _, stderr = run("convert", FIXTURE, tmp_path / "packed", "--outtype", "auto")
    assert code == 0, stderr
    config = json.loads((tmp_path / "packed" / "config.json").read_text())
    assert config["quantization_config"]["quantization_mode"] == "offline"


def test_out_given_twice_is_a_usage_error(tmp_path: Path) -> None:
    code, _, stderr = run("convert", FIXTURE, tmp_path / "a.gguf", "--outfile", tmp_path / "b.gguf", "--outtype",
                          "i2_s")
    assert code == 2 and "OUT is given twice" in one_error_line(stderr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size,expected", [("500MiB", 500 << 20), ("0.5GB", 500_000_000), ("2G", 2 * 10**9),
                                           ("1.5k", 1500), ("64KiB", 65536)])
def test_sizes_take_binary_units_and_fractions(size: str, expected: int) -> None:
    from bitnet_pack.pipeline.options import parse_size

    assert parse_size(size) == expected


def test_sharding_with_a_binary_size(tmp_path: Path) -> None:
    code, _, stderr = run("convert", FIXTURE, tmp_path / "out", "--outtype", "hf-packed", "--max-shard-size",
                          "200KiB")
    assert code == 0, stderr
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1


def test_quiet_after_the_command_and_inspect_quiet_prints_no_notes(tmp_path: Path) -> None:
    noisy = run("inspect", FIXTURE)[1]
    assert "note:" in noisy
    for args in (("inspect", FIXTURE, "-q"), ("-q", "inspect", FIXTURE), ("inspect", "--quiet", FIXTURE)):
        code, stdout, stderr = run(*args)
        assert code == 0 and "note:" not in stdout + stderr and stdout.splitlines()[1:] == \
            [line for line in noisy.splitlines()[1:] if "note:" not in line]
    code, _, stderr = run("convert", FIXTURE, tmp_path / "o.gguf", "--outtype", "i2_s", "-q")
    assert code == 0 and stderr == ""


def test_shell_completion_offers_files_for_src_and_out(tmp_path: Path) -> None:
    env = {**ENV, "_BITNET_PACK_COMPLETE": "bash_complete", "COMP_CWORD": "3"}
    for words in ("bitnet-pack convert src ou", "bitnet-pack inspect x y", "bitnet-pack generate m x",
                  "bitnet-pack verify a x", "bitnet-pack diff a x", "bitnet-pack roundtrip m x"):
        env["COMP_WORDS"] = words
        env["COMP_CWORD"] = "3" if words.startswith("bitnet-pack convert") else "2"
        result = subprocess.run([sys.executable, "-m", "bitnet_pack"], capture_output=True, text=True, env=env,
                                timeout=60)
        assert result.stdout.startswith("file,"), (words, result.stdout, result.stderr)
    env |= {"COMP_WORDS": "bitnet-pack convert a b --outtype tq", "COMP_CWORD": "5"}
    result = subprocess.run([sys.executable, "-m", "bitnet_pack"], capture_output=True, text=True, env=env, timeout=60)
    assert "plain,tq1_0" in result.stdout and "plain,tq2_0" in result.stdout


def test_generate_takes_ids(tmp_path: Path) -> None:
    code, stdout, stderr = run("generate", FIXTURE, "--ids", "1,15,27", "--tokens", "3", "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["prompt_ids"] == [1, 15, 27] and len(data["ids"]) <= 3
    code, _, stderr = run("generate", FIXTURE, "--tokens", "3")
    assert code == 2 and "--prompt" in one_error_line(stderr)
    code, _, stderr = run("generate", FIXTURE, "--ids", "1,2.5", "--tokens", "3")
    assert code == 2 and "--ids" in one_error_line(stderr)


# -- one JSON schema for convert, convert --dry-run and inspect --------------------------------

def test_convert_dry_run_and_inspect_share_one_json_schema(tmp_path: Path) -> None:
    from bitnet_pack.cli.commands.schema import SCHEMA

    out = tmp_path / "m.gguf"
    planned = json.loads(run("convert", FIXTURE, out, "--outtype", "tl2", "--dry-run", "--json")[1])
    code, stdout, stderr = run("convert", FIXTURE, out, "--outtype", "tl2", "--json")
    assert code == 0, stderr
    done = json.loads(stdout)
    seen = json.loads(run("inspect", out, "--json")[1])
    assert set(planned) == set(done) == set(seen) and {r["schema"] for r in (planned, done, seen)} == {SCHEMA}
    assert [r["command"] for r in (planned, done, seen)] == ["convert", "convert", "inspect"]
    ini = str(tmp_path / "m.kernel_config.ini")
    assert planned["files"] == done["files"] == [{"path": str(out), "role": "gguf"},
                                                 {"path": ini, "role": "kernel_config"}]
    assert planned["exists"] is False and done["exists"] is None and seen["files"] == []
    assert planned["tensors"] == done["tensors"] and done["tensor_count"] == seen["tensor_count"] == 24
    row_keys = {"name", "dtype", "shape", "nbytes", "layout", "beta", "share"}
    assert all(set(row) == row_keys for r in (done, seen) for row in r["tensors"])
    assert any(row["beta"] for row in seen["tensors"]) and seen["bytes_read"] == done["bytes_written"]
    assert any("wrote m.kernel_config.ini" in n for n in done["notes"]) and seen["notes"]
    packed = json.loads(run("convert", FIXTURE, tmp_path / "p", "--outtype", "hf-packed", "--json")[1])
    roles = {Path(f["path"]).name: f["role"] for f in packed["files"]}
    assert roles["p"] == "checkpoint" and roles["model.safetensors"] == roles["config.json"] == "file"


def test_inspect_of_a_gguf_shows_its_own_names_and_a_model_summary(tmp_path: Path) -> None:
    gguf = converted(tmp_path, "i2_s")
    code, stdout, stderr = run("inspect", gguf)
    assert code == 0, stderr
    names = [line.split()[0] for line in stdout.splitlines()[2:] if not line.startswith(" ")]
    assert "blk.0.attn_q.weight" in names and not any(n.startswith("model.") for n in names)
    assert "2 layers, vocab 448, context" in stdout.splitlines()[1]
    hf = run("inspect", gguf, "--hf-names", "--json")[1]
    report = json.loads(hf)
    assert report["tensors"][0]["name"].startswith("model.")
    model = report["model"]
    assert model["layers"] == 2 and model["vocab"] == 448 and model["file_bytes"] == gguf.stat().st_size
    assert model["parameters"] == sum(int(np.prod(t["shape"])) for t in report["tensors"])
    assert model["tensor_bytes"] == sum(t["nbytes"] for t in report["tensors"]) < model["file_bytes"]


# -- llama.cpp's GGUF split ------------------------------------------------------------------

@pytest.mark.parametrize("outtype", ["tq2_0", "i2_s"])
def test_split_max_size_writes_gguf_split_parts(tmp_path: Path, outtype: str) -> None:
    from gguf import GGUFReader

    from bitnet_pack.containers.gguf import GGUFFile

    whole = tmp_path / "whole.gguf"
    assert run("convert", FIXTURE, whole, "--outtype", outtype)[0] == 0
    out = tmp_path / "parts"
    out.mkdir()
    planned = json.loads(run("convert", FIXTURE, out / "m.gguf", "--outtype", outtype, "--split-max-size", "200KiB",
                             "--dry-run", "--json")[1])
    code, stdout, stderr = run("convert", FIXTURE, out / "m.gguf", "--outtype", outtype, "--split-max-size", "200KiB",
                               "--json")
    assert code == 0, stderr
    done = json.loads(stdout)
    parts = sorted(out.iterdir())
    count = len(parts)
    assert count > 1 and [p.name for p in parts] == [f"m-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    assert planned["files"] == done["files"] == [{"path": str(p), "role": "gguf"} for p in parts]
    with GGUFFile(whole) as original:
        tensors, kv = dict(original.tensors), {k: _plain(f.value) for k, f in original.kv.items()}
        data = {name: bytes(original.tensor_bytes(name)) for name in tensors}
        seen: dict[str, bytes] = {}
        for number, path in enumerate(parts):
            with GGUFFile(path, flavour=original.types.flavour) as part:  # parts 2.. carry only split keys
                assert (part.get("split.no"), part.get("split.count"), part.get("split.tensors.count")) == \
                    (number, count, len(tensors))
                own = {k: _plain(f.value) for k, f in part.kv.items() if not k.startswith("split.")}
                assert own == (kv if number == 0 else {k: v for k, v in kv.items() if k == "general.alignment"})
                size = sum(info.nbytes for info in part.tensors.values())
                assert size <= 200 * 1024 or len(part.tensors) == 1
                seen |= {name: bytes(part.tensor_bytes(name)) for name in part.tensors}
        assert list(seen) == list(tensors) and seen == data  # same tensors, same order, same bytes
    if outtype == "tq2_0":  # gguf-py's own reader (mainline types) reads every part
        assert sum(len(GGUFReader(p).tensors) for p in parts) == len(tensors)
    code, _, stderr = run("convert", FIXTURE, out / "m.gguf", "--outtype", outtype, "--split-max-size", "200KiB")
    assert code == 2 and f"m-00001-of-{count:05d}.gguf exists" in one_error_line(stderr)
    code, _, stderr = run("convert", FIXTURE, tmp_path / "d", "--outtype", "hf-packed", "--split-max-size", "1M")
    assert code == 2 and "--split-max-size applies to GGUF outputs" in one_error_line(stderr)


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value
