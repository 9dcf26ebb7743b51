"""The hostile corpus (hostile_cases.py) through the command line, in-process: for every case
the documented exit code, stderr exactly one `Error:` line, no traceback or warning,
the output directory exactly as before, the inputs unchanged. Then what cannot be a table
row: the all-zero projection in every layout, outputs that appear while we write, two
writers at once, --force on a directory, the kernel_config.ini beside a TL2 file, --dry-run
clearing leftovers, and the general.name of `convert .`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from corrupt_files import CODE_TENSOR, FIXTURE, copy_fixture
from hostile_cases import CASES, edit_safetensors, only, set_bits
from test_cli import NO_NETWORK, ROOT, digest

from bitnet_pack.cli.main import main
from bitnet_pack.containers import outputs
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.errors import OutputExists
from bitnet_pack.formats.layouts import layout_names
from bitnet_pack.formats.ternary import ZERO_BETA
from bitnet_pack.pipeline.convert import convert
from bitnet_pack.pipeline.sinks.factory import make_sink
from bitnet_pack.pipeline.sources import open_checkpoint

CASE_SECONDS, CASE_BYTES = 30, 256 << 20  # the tiny fixture needs a few MB and well under a second


def run(*args: object, cwd: Path | None = None) -> tuple[int, str, str]:
    """The CLI in-process, offline; (exit code, stdout, stderr). A Python exception escaping
    the command (instead of an exit) fails the test: the CLI must map everything."""
    runner = CliRunner()
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a numpy warning fails the case
            result = runner.invoke(main, [str(a) for a in args], env=NO_NETWORK)
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    """stderr is exactly one line, `Error: ...` (notes are printed only after a success)."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and stderr.endswith("\n"), stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): (digest(p)[p.name] if p.is_file() else "dir")
            for p in sorted(directory.rglob("*"))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    inputs, out = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    out.mkdir()
    args = case.build(inputs, out)
    before_in, before_out = snapshot(inputs), snapshot(out)
    tracemalloc.start()
    started = time.monotonic()
    try:
        code, _, stderr = run(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < CASE_SECONDS, name  # no bomb runs on
    assert peak < CASE_BYTES, (name, peak)  # and none grows: numpy's buffers are traced too
    assert code == case.code, stderr
    line = one_error_line(stderr)
    for fragment in case.message:
        assert fragment in line, (fragment, line)
    assert snapshot(out) == before_out  # nothing written, nothing left, nothing replaced
    assert snapshot(inputs) == before_in


# -- 2. the all-zero projection ----------------------------------------------------------

@pytest.fixture(scope="module")
def zero_master(tmp_path_factory) -> Path:
    model = copy_fixture(tmp_path_factory.mktemp("zero"))
    edit_safetensors(model, only(CODE_TENSOR, set_bits(0)))
    return model


@pytest.mark.parametrize("outtype", ["i2_s", "i2_s_arm", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32", "bf16-gguf",
                                     "hf-packed", "bf16"])
def test_an_all_zero_projection_reads_back_alike_from_every_layout(zero_master: Path, tmp_path: Path,
                                                                    outtype: str) -> None:
    gguf = outtype.endswith("-gguf") or outtype not in ("hf-packed", "bf16")
    outtype = outtype.removesuffix("-gguf")
    out = tmp_path / ("zero.gguf" if gguf else "zero")
    code, _, stderr = run("convert", zero_master, out, "--outtype", outtype)
    assert code == 0, stderr
    with open_checkpoint(out) as checkpoint:
        entry = next(e for e in checkpoint.entries() if e.name == CODE_TENSOR)
        weight = entry.load()
    assert not np.any(weight.codes) and weight.beta > 0 and np.isfinite(weight.beta)
    if outtype in ("tq1_0", "tq2_0", "f16", "f32", "bf16"):  # no beta stored for it, or 0 stored
        assert weight.beta == ZERO_BETA
    back = tmp_path / "back"
    code, _, stderr = run("convert", out, back, "--outtype", "hf-packed")
    assert code == 0, stderr
    code, _, stderr = run("inspect", back)
    assert code == 0, stderr


def test_roundtrip_calls_an_all_zero_projection_passed(zero_master: Path) -> None:
    code, stdout, stderr = run("roundtrip", zero_master, "--tokens", "2")
    assert code == 0, stdout + stderr
    assert f"{len(layout_names())} passed, 0 skipped, 0 broken" in stdout


# -- 4. two writers, one output ----------------------------------------------------------

def _intruding(path: Path, content: bytes | None):
    """A progress callback that makes `path` appear (a file, or a directory with a file)
    while the conversion is writing."""
    def progress(_n: int) -> None:
        if not path.exists():
            if content is None:
                path.mkdir()
                (path / "theirs.txt").write_text("theirs")
            else:
                path.write_bytes(content)
    return progress


@pytest.mark.parametrize("out_name,outtype", [("out.gguf", "i2_s"), ("out.gguf", "tq2_0"), ("out", "hf-packed"),
                                              ("out", "bf16")])
@pytest.mark.parametrize("force", [False, True])
def test_an_output_that_appears_while_writing_is_not_replaced_without_force(tmp_path: Path, out_name: str,
                                                                            outtype: str, force: bool) -> None:
    out = tmp_path / out_name
    theirs = None if outtype in ("hf-packed", "bf16") else b"written by another run"
    with open_checkpoint(FIXTURE) as source:
        sink = make_sink(out, outtype, force=force)
        if force:
            convert(source, sink, progress=_intruding(out, theirs))
        else:
            with pytest.raises(OutputExists, match="appeared while this run was writing it"):
                convert(source, sink, progress=_intruding(out, theirs))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    if not force:
        assert (out.read_bytes() == theirs) if theirs else (sorted(os.listdir(out)) == ["theirs.txt"])
        return
    with open_checkpoint(out) as checkpoint:
        assert len(checkpoint.entries()) == 24
    if theirs is None:
        assert (out / "theirs.txt").read_text() == "theirs"  # not a checkpoint file: kept


@pytest.mark.parametrize("fallback", ["renameat2", "link", "check-then-rename"])
def test_exclusive_publish_without_renameat2(tmp_path: Path, monkeypatch, fallback: str) -> None:
    if fallback != "renameat2":
        monkeypatch.setattr(outputs, "_libc_renameat2", lambda: None)
    if fallback == "check-then-rename":
        monkeypatch.setattr(outputs.os, "link", _no_links)
    for kind in ("file", "dir"):
        temp, final = tmp_path / f".{kind}.incomplete-1", tmp_path / kind
        temp.mkdir() if kind == "dir" else temp.write_text("new")
        final.write_text("old")
        with pytest.raises(OutputExists):
            outputs.publish(temp, final, force=False)
        assert final.read_text() == "old" and temp.exists()
        final.unlink()
        outputs.publish(temp, final, force=False)
        assert final.exists() and not temp.exists()


def _no_links(*_args: object) -> None:
    raise PermissionError(1, "hard links not supported here")


@pytest.mark.parametrize("out_name,outtypes", [("out.gguf", ("i2_s", "tq2_0")), ("out", ("hf-packed", "bf16"))])
def test_two_concurrent_writers_one_wins_and_the_other_fails(tmp_path: Path, out_name: str,
                                                             outtypes: tuple[str, str]) -> None:
    out = tmp_path / out_name
    env = {**os.environ, "PYTHONPATH": str(ROOT), **NO_NETWORK}
    procs = [subprocess.Popen([sys.executable, "-m", "bitnet_pack", "convert", FIXTURE, out, "--outtype", outtype],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
             for outtype in outtypes]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert one_error_line(loser) and out_name in loser and "--force" in loser
    winner = outtypes[[code for code, _ in results].index(0)]
    if out.suffix == ".gguf":
        with GGUFFile(out) as file:
            assert file.get("bitnet_pack.layout") == winner  # whole, and the winner's
    else:
        mode = json.loads((out / "config.json").read_text())["quantization_config"]["quantization_mode"]
        assert mode == {"hf-packed": "offline", "bf16": "online"}[winner]
        assert run("inspect", out)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]


def test_force_on_a_directory_replaces_only_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "hf-packed", "--max-shard-size", "200K")
    assert code == 0, stderr
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text("model card")
    (out / "pytorch_model.bin").write_bytes(b"their torch weights")
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "hf-packed", "--force")
    assert code == 0, stderr
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]  # old shards gone
    assert not (out / "model.safetensors.index.json").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "README.md").read_text() == "model card"
    assert (out / "pytorch_model.bin").read_bytes() == b"their torch weights"
    assert run("inspect", out)[0] == 0


def test_tl2_never_replaces_a_kernel_config_it_was_given(tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    assert run("convert", FIXTURE, out, "--outtype", "tl2")[0] == 0
    ini = tmp_path / "model.kernel_config.ini"
    given = ini.read_bytes() + b"; kept as given\n"
    ini.write_bytes(given)
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "tl2", "--force", "--kernel-config", ini)
    assert code == 0, stderr
    assert ini.read_bytes() == given and "kept model.kernel_config.ini" in stderr
    ini.write_text("; someone else's\n")
    out.unlink()
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "tl2")
    assert code == 2 and "model.kernel_config.ini exists" in one_error_line(stderr)
    assert ini.read_text() == "; someone else's\n" and not out.exists()
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "tl2", "--force")
    assert code == 0 and ini.read_text().startswith("[")


# -- 3. leftovers, 7. names ----------------------------------------------------------------

def test_dry_run_clears_what_a_killed_run_left(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".out.gguf.incomplete-{dead}"
    stale.write_bytes(b"partial")
    code, stdout, stderr = run("convert", FIXTURE, tmp_path / "out.gguf", "--outtype", "i2_s", "--dry-run")
    assert code == 0 and "dry run" in stdout, stderr
    assert not stale.exists() and list(tmp_path.iterdir()) == []


def test_convert_dot_names_the_model_after_the_folder(tmp_path: Path) -> None:
    model = copy_fixture(tmp_path, "my-model")
    config = json.loads((model / "config.json").read_text())
    config.pop("_name_or_path", None)
    (model / "config.json").write_text(json.dumps(config))
    code, _, stderr = run("convert", ".", tmp_path / "out.gguf", "--outtype", "i2_s", cwd=model)
    assert code == 0, stderr
    with GGUFFile(tmp_path / "out.gguf") as file:
        assert file.get("general.name") == "my-model"
    from bitnet_pack.pipeline.hub import resolve_source

    previous = Path.cwd()
    os.chdir(model)
    try:
        assert resolve_source(".").model_id == "my-model"  # default output names too
    finally:
        os.chdir(previous)


def test_the_hostile_table_covers_every_class() -> None:
    prefixes = ("master_", "gguf_beta", "packed_scale", "output_exists", "tl2_", "outtype_", "nested_", "config_",
                "eps_", "inspect_zero", "zero_element", "verify_", "vocab_", "file_st_", "file_gguf_", "gguf_inspect_",
                # issue 18: paths, costs, FIFOs, exit-0 acceptances, internal errors, habits
                "index_shard_", "revision_", "hub_id_", "config_layers_huge", "gguf_block_count", "trace_npz_bomb",
                "fifo_", "kernel_config_", "gguf_rope_scaling", "packed_linear_class", "packed_scale_integer",
                "master_nan_", "gguf_tokens_", "verify_i2s_beta", "generate_i2s_beta", "config_architectures",
                "verify_ids_", "i2s_variant_contradicts")
    for prefix in prefixes:
        assert any(name.startswith(prefix) for name in CASES), prefix
    assert len(CASES) >= 120
