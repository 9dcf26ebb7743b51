"""The library API (`bitnet_pack.convert/open/inspect/verify/roundtrip`), the one options model
(options refused where unused), names and placeholders, and torch in and out."""
from __future__ import annotations

import doctest
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from corrupt_files import FIXTURE
from hypothesis import given
from test_cli import ROOT, cli, digest, error_line

import bitnet_pack
from bitnet_pack.errors import BitnetPackError, MissingFile, UsageError
from bitnet_pack.formats.kernel_config import read_kernel_config
from bitnet_pack.pipeline.sources import load_weights
from bitnet_pack.proof.testing import layout_weights

# -- the library does what the command does --------------------------------------------------

def test_python_c_convert_writes_the_same_bytes_as_the_cli(tmp_path: Path) -> None:
    code = f"import bitnet_pack; bitnet_pack.convert({str(FIXTURE)!r}, 'api.gguf', outtype='i2_s')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr
    assert cli("convert", FIXTURE, tmp_path / "cli.gguf", "--outtype", "i2_s").returncode == 0
    assert (tmp_path / "api.gguf").read_bytes() == (tmp_path / "cli.gguf").read_bytes()


def test_convert_reports_what_it_did_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    planned = bitnet_pack.convert(FIXTURE, tmp_path / "x.gguf", outtype="tq2_0", dry_run=True)
    assert planned.dry_run and not (tmp_path / "x.gguf").exists()
    assert len(planned.planned) == planned.tensors == 24
    report = bitnet_pack.convert(FIXTURE, tmp_path / "x.gguf", outtype="tq2_0")
    assert report.output == tmp_path / "x.gguf" and report.bytes_written == planned.bytes_written
    assert report.bytes_written < report.output.stat().st_size
    assert any("fp16" in note for note in report.notes)  # TQ rounds the master's fp32 betas: said
    assert report.to_dict()["output"] == str(tmp_path / "x.gguf")


def test_open_iterates_lazily_as_ternary_and_float32(tmp_path: Path) -> None:
    bitnet_pack.convert(FIXTURE, tmp_path / "m.gguf", outtype="i2_s")
    config, expected = load_weights(tmp_path / "m.gguf")
    with bitnet_pack.open(tmp_path / "m.gguf") as model:
        assert model.family == "2b4t" and model.layout == "i2_s" and model.config == config
        assert [e.name for e in model.entries()] == list(expected)
        seen = dict(iter(model))
    assert seen.keys() == expected.keys()
    for name, value in seen.items():
        if isinstance(value, bitnet_pack.TernaryWeight):
            assert value.same_as(expected[name]), name
        else:
            assert value.dtype == np.float32 and np.array_equal(value, expected[name]), name


def test_inspect_and_roundtrip_return_typed_results() -> None:
    inspection = bitnet_pack.inspect(FIXTURE)
    assert inspection.kind == "bf16-master" and len(inspection.tensors) == 24
    ternary = [t for t in inspection.tensors if t.beta is not None]
    assert len(ternary) == 14 and all(abs(sum(t.share.values()) - 1) < 1e-9 for t in ternary)
    report = bitnet_pack.roundtrip(FIXTURE, ["hf-packed", "I2_S"], tokens=0)
    assert report.ok and [r.layout for r in report.results] == ["hf", "i2_s"]


# -- one options model ---------------------------------------------------------------------

@pytest.mark.parametrize("outtype,out,options,named", [
    ("i2_s", "x.gguf", {"max_shard_size": "100K"}, "--max-shard-size"),
    ("i2_s", "x.gguf", {"scale_dtype": "f32"}, "--scale-dtype"),
    ("tq2_0", "x.gguf", {"out_kernel_config": "k.ini"}, "--out-kernel-config"),
    ("hf-packed", "d", {"embedding_type": "bf16"}, "--embedding-type"),
    ("hf-packed", "d", {"type_ids": "2026"}, "--type-ids"),
    ("bf16", "d", {"scale_dtype": "f32"}, "--scale-dtype"),
    ("hf-packed", "d", {"i2s_variant": "arm"}, "--i2s-variant"),
    ("hf-packed", "d", {"src_kernel_config": "k.ini"}, "--src-kernel-config"),
    ("i2_s", "x.gguf", {"kernel_config": "k.ini"}, "--kernel-config"),
])
def test_an_option_the_source_or_output_does_not_use_is_refused(tmp_path: Path, outtype: str, out: str,
                                                                 options: dict, named: str) -> None:
    with pytest.raises(UsageError, match=named):
        bitnet_pack.convert(FIXTURE, tmp_path / out, outtype=outtype, **options)
    assert list(tmp_path.iterdir()) == []


def test_unknown_options_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown option 'shard_size'"):
        bitnet_pack.convert(FIXTURE, tmp_path / "d", outtype="hf-packed", shard_size="1G")
    with pytest.raises(UsageError, match="output option"):
        bitnet_pack.open(FIXTURE, embedding_type="bf16")


@pytest.mark.parametrize("args,named", [
    (["x.gguf", "--outtype", "i2_s", "--max-shard-size", "100K"], "--max-shard-size"),
    (["d", "--outtype", "hf-packed", "--i2s-variant", "arm"], "--i2s-variant"),
    (["d", "--outtype", "hf", "--target", "llama.cpp"], "--target"),
])
def test_the_cli_exits_2_naming_the_unused_option(tmp_path: Path, args: list[str], named: str) -> None:
    result = cli("convert", FIXTURE, *args, cwd=tmp_path)
    assert result.returncode == 2 and named in error_line(result)
    assert list(tmp_path.iterdir()) == []


def tl_copy(tiny_a: Path, directory: Path, *, with_ini: bool) -> Path:
    gguf = directory / "tl1.gguf"
    shutil.copyfile(tiny_a / "tiny-a-tl1.gguf", gguf)
    if with_ini:
        shutil.copyfile(tiny_a / "tiny-a-tl1.kernel_config.ini", directory / "tl1.kernel_config.ini")
    return gguf


def test_tl_tilings_come_from_the_sibling_ini_or_either_option(tiny_a: Path, tmp_path: Path) -> None:
    (tmp_path / "alone").mkdir()
    alone = tl_copy(tiny_a, tmp_path / "alone", with_ini=False)
    with pytest.raises(MissingFile, match="tl1.kernel_config.ini"):
        bitnet_pack.inspect(alone)
    ini = tiny_a / "tiny-a-tl1.kernel_config.ini"
    expected = bitnet_pack.inspect(alone, src_kernel_config=ini).to_dict()["tensors"]
    assert bitnet_pack.inspect(alone, kernel_config=ini).to_dict()["tensors"] == expected  # the old name
    beside = tl_copy(tiny_a, tmp_path, with_ini=True)
    found = bitnet_pack.inspect(beside)
    assert found.to_dict()["tensors"] == expected
    assert any("tl1.kernel_config.ini beside the file" in note for note in found.notes)
    result = cli("inspect", beside)
    assert result.returncode == 0 and "tl1.kernel_config.ini" in result.stdout


def test_the_old_kernel_config_is_refused_when_it_could_mean_both(tiny_a: Path, tmp_path: Path) -> None:
    source = tl_copy(tiny_a, tmp_path, with_ini=True)
    with pytest.raises(UsageError, match="ambiguous.*--src-kernel-config"):
        bitnet_pack.convert(source, tmp_path / "o.gguf", outtype="tl2", kernel_config=source.with_suffix(".ini"))
    report = bitnet_pack.convert(source, tmp_path / "o.gguf", outtype="tl2")
    assert (tmp_path / "o.kernel_config.ini").is_file() and report.tensors == 24
    ini = tiny_a / "tiny-a-tl1.kernel_config.ini"
    with pytest.raises(UsageError, match="not both"):
        bitnet_pack.convert(source, tmp_path / "p", outtype="hf", kernel_config=ini, src_kernel_config=ini)
    bitnet_pack.convert(tiny_a / "tiny-a-bf16", tmp_path / "w.gguf", outtype="tl1", kernel_config=ini)  # writes
    assert read_kernel_config(tmp_path / "w.kernel_config.ini") == read_kernel_config(ini)


# -- names ---------------------------------------------------------------------------------

def test_hf_and_hf_packed_are_one_layout(tmp_path: Path) -> None:
    assert bitnet_pack.get_layout("hf-packed") is bitnet_pack.get_layout("HF")
    bitnet_pack.convert(FIXTURE, tmp_path / "a", outtype="hf")
    assert cli("convert", FIXTURE, tmp_path / "b", "--outtype", "hf-packed").returncode == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


@pytest.mark.parametrize("out,expected", [("m-{ftype}.gguf", "m-tq1_0.gguf"), ("m-{outtype}.gguf", "m-tq1_0.gguf"),
                                          (".", "Tiny-Bitnet-1.7M-TQ1_0.gguf"), ("sub/", "sub/Tiny-Bitnet-1.7M-TQ1_0.gguf")])
def test_placeholders_and_folders_name_the_output(tmp_path: Path, out: str, expected: str) -> None:
    result = cli("convert", FIXTURE, out, "--outtype", "tq1_0", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / expected).is_file()


def test_a_safetensors_name_for_a_checkpoint_is_refused(tmp_path: Path) -> None:
    result = cli("convert", FIXTURE, "x.safetensors", "--outtype", "hf-packed", cwd=tmp_path)
    assert result.returncode == 2 and "directory" in error_line(result)
    assert list(tmp_path.iterdir()) == []


# -- lossless choices ----------------------------------------------------------------------

def test_fp32_weight_scale_makes_i2s_to_packed_lossless(tiny_a: Path, tmp_path: Path) -> None:
    official = tiny_a / "tiny-a-i2_s.gguf"
    rounded = bitnet_pack.convert(official, tmp_path / "bf16-scale", outtype="hf-packed")
    assert any("weight_scale is bf16: rounded 14" in note for note in rounded.notes)
    assert not bitnet_pack.verify(rounded.output, official, ids=[1, 2, 3], tokens=2, strict=True).ok
    report = bitnet_pack.verify(rounded.output, official, ids=[1, 2, 3], tokens=2)  # the declared bf16 rounding
    assert report.ok and report.rounded == "β to bf16 (hf weight_scale BF16) in 14 tensors on B"
    exact = bitnet_pack.convert(official, tmp_path / "f32-scale", outtype="hf-packed", scale_dtype="f32")
    assert not any("weight_scale" in note for note in exact.notes)
    assert bitnet_pack.verify(exact.output, official, ids=[1, 2, 3], tokens=2).ok
    assert cli("diff", exact.output, official).returncode == 0


def test_f16_embedding_rounding_is_said_and_bf16_keeps_it(tiny_a: Path, tmp_path: Path) -> None:
    master = tiny_a / "tiny-a-bf16"
    default = bitnet_pack.convert(master, tmp_path / "f16.gguf", outtype="i2_s")
    assert any("not exact in F16" in n and "--embedding-type bf16" in n for n in default.notes)
    assert not bitnet_pack.verify(master, default.output, tokens=1, strict=True).ok
    report = bitnet_pack.verify(master, default.output, tokens=1)
    assert report.ok and report.rounded == "embedding to F16 (I2_S GGUF) in 1 tensor on A"
    lossless = bitnet_pack.convert(master, tmp_path / "bf16.gguf", outtype="i2_s", embedding_type="bf16")
    assert not any("F16" in n for n in lossless.notes)
    assert bitnet_pack.verify(master, lossless.output, tokens=1, strict=True).ok


@pytest.mark.interop
def test_transformers_loads_an_fp32_weight_scale_exactly_in_float32(tiny_a: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitnet import AutoBitLinear

    out = bitnet_pack.convert(tiny_a / "tiny-a-i2_s.gguf", tmp_path / "p", outtype="hf", scale_dtype="f32").output
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    assert not any(info.values())
    _, ours = load_weights(out)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, AutoBitLinear)}
    assert len(linears) == 14
    for name, module in linears.items():
        assert module.weight_scale.dtype == torch.float32
        assert module.weight_scale.numpy().tolist() == [float(ours[name + ".weight"].beta)], name


# -- the command line around it ------------------------------------------------------------

def test_push_to_hub_checks_token_and_endpoint_before_converting(tmp_path: Path) -> None:
    online = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home"), "HF_TOKEN": ""}
    no_token = cli("convert", FIXTURE, tmp_path / "a", "--outtype", "hf", "--push-to-hub", "org/x", env=online)
    assert no_token.returncode == 2 and "token" in error_line(no_token)
    closed = cli("convert", FIXTURE, tmp_path / "b", "--outtype", "hf", "--push-to-hub", "org/x",
                 env=online | {"HF_TOKEN": "hf_x"})
    assert closed.returncode == 1 and "http://127.0.0.1:9" in error_line(closed) and "hf_x" not in closed.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_quiet_leaves_results_and_errors_only(tmp_path: Path) -> None:
    loud = cli("convert", FIXTURE, tmp_path / "a.gguf", "--outtype", "tq2_0")
    quiet = cli("-q", "convert", FIXTURE, tmp_path / "b.gguf", "--outtype", "tq2_0")
    assert "note:" in loud.stderr and quiet.stderr == "" and quiet.stdout.startswith("wrote ")


@pytest.mark.parametrize("command", ["convert", "inspect", "roundtrip", "verify", "diff", "generate"])
def test_help_shows_examples(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0 and re.search(rf"Examples:\n\s+bitnet-pack {command} ", result.stdout)


# -- torch in and out ----------------------------------------------------------------------

def test_torch_weights_share_memory_both_ways() -> None:
    master = torch.randn(48, 256, dtype=torch.bfloat16)
    tw = bitnet_pack.ternarize(master)
    assert tw.same_as(bitnet_pack.ternarize(master.float().numpy()))
    codes, beta = tw.to_torch()
    assert codes.dtype == torch.int8 and np.shares_memory(codes.numpy(), tw.codes) and beta.item() == tw.beta
    back = bitnet_pack.TernaryWeight.from_torch(codes, beta)
    assert back.same_as(tw) and np.shares_memory(back.codes, tw.codes)
    assert bitnet_pack.TernaryWeight.from_torch(codes.float(), float(tw.beta)).same_as(tw)
    with pytest.raises(BitnetPackError):
        bitnet_pack.TernaryWeight.from_torch(codes.float() * 2, 1.0)


@pytest.mark.parametrize("layout", ["hf", "i2_s", "i2_s_arm", "tq2_0", "tq1_0"])
def test_layouts_decode_torch_tensors_like_numpy(layout: str) -> None:
    chosen = bitnet_pack.get_layout(layout)

    @given(layout_weights(layout))
    def check(weight: bitnet_pack.TernaryWeight) -> None:
        blob = chosen.encode(weight, lossy=True) if layout.startswith("tq") else chosen.encode(weight)
        beta = {"beta": weight.beta} if layout == "hf" else {}
        from_numpy = chosen.decode(blob, weight.shape, **beta)
        from_torch = chosen.decode(torch.from_numpy(blob), weight.shape, **beta)
        assert from_torch.same_as(from_numpy)
        assert np.array_equal(from_torch.to_torch()[0].numpy(), weight.codes)

    check()


@pytest.mark.parametrize("module", ["bitnet_pack.formats.ternary", "bitnet_pack.formats.layouts"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
