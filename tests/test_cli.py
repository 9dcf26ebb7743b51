"""The real command line in subprocesses: corrupt inputs, interrupted runs, same bytes twice,
exit codes, default names, dry runs, progress bars, `inspect --raw`; and a fuzz of both
readers through the CLI (in-process, so hypothesis can run many examples)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from corrupt_files import CASES, FIXTURE, copy_fixture, write_sparse_master
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet_pack.cli.main import main
from bitnet_pack.containers.gguf import GGUFFile
from bitnet_pack.containers.safetensors import SafetensorsFile
from bitnet_pack.proof.testing import mutated_bytes

ROOT = Path(__file__).resolve().parents[1]
NO_NETWORK = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def cli(*args: object, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bitnet_pack ARGS` in a fresh interpreter, offline."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path, **NO_NETWORK, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bitnet_pack", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `Error:` line, which must also be the last thing on stderr (no traceback after)."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def digest(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = {}
    for file in files:
        h = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
        out[file.name] = h.hexdigest()
    return out


# -- 2. corrupt inputs: exit 1, one line naming file/tensor/cause, nothing written ----------

@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_input_fails_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    spec = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    src = spec.build(inputs)
    before = digest(src)
    out = tmp_path / ("out.gguf" if spec.outtype not in ("hf-packed",) else "out")
    result = cli("convert", src, out, "--outtype", spec.outtype)
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    for fragment in spec.message:
        assert fragment in line, (fragment, line)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["inputs"]  # no output, no temporary left
    assert digest(src) == before


def test_debug_shows_the_traceback_on_request(tmp_path: Path) -> None:
    src = CASES["st_truncated"].build(tmp_path)
    quiet = cli("inspect", src)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    for loud in (cli("inspect", src, "--debug"), cli("inspect", src, env={"BITNET_PACK_DEBUG": "1"})):
        assert loud.returncode == 1
        assert "Traceback" in loud.stderr and "TruncatedFile" in loud.stderr
        assert loud.stderr.strip().splitlines()[-1].startswith("Error:")


# -- 3. interrupted runs: nothing at OUT, the input unchanged -----------------------------

@pytest.fixture(scope="module")
def big_master(tmp_path_factory) -> tuple[Path, dict]:
    model = write_sparse_master(tmp_path_factory.mktemp("big") / "big-master")
    return model, digest(model)


def _started_writing(proc: subprocess.Popen, directory: Path, name: str) -> Path:
    """Wait (no time limit but the process's own life) until the output's temporary exists."""
    while True:
        found = list(directory.glob(f".{name}.incomplete-*"))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before writing: {proc.stderr.read()}")
        time.sleep(0.005)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("out_name,outtype", [("out.gguf", "i2_s"), ("packed", "hf-packed")])
def test_killed_conversion_leaves_no_output(big_master, tmp_path: Path, sig: int, out_name: str,
                                            outtype: str) -> None:
    src, before = big_master
    out = tmp_path / out_name
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "bitnet_pack", "convert", src, out, "--outtype", outtype],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path, **NO_NETWORK})
    try:
        temp = _started_writing(proc, tmp_path, out_name)
        os.kill(proc.pid, signal.SIGSTOP)
        assert temp.exists() and not out.exists(), "the conversion must be caught mid-way"
        os.kill(proc.pid, sig)
        os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    if sig == signal.SIGINT:  # Ctrl-C: the temporary is removed, exit 130
        assert proc.returncode == 130
        assert stderr.strip().splitlines()[-1] == "Error: interrupted (SIGINT); nothing was written", stderr
        assert list(tmp_path.iterdir()) == []
    else:  # a kill leaves at most the hidden temporary, which the next run clears
        assert proc.returncode == -signal.SIGKILL
        assert all(p.name.startswith(f".{out_name}.incomplete-") for p in tmp_path.iterdir())
        again = cli("convert", FIXTURE, out, "--outtype", outtype)
        assert again.returncode == 0, again.stderr
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert digest(src) == before


# -- 4. same input, same bytes ---------------------------------------------------------------

@pytest.mark.parametrize("outtype,name,extra", [
    ("hf-packed", "packed", ["--max-shard-size", "300K"]),
    ("bf16", "master", []),
    ("i2_s", "model.gguf", []),
    ("tl2", "model.gguf", []),
])
def test_same_input_gives_the_same_bytes(tmp_path: Path, outtype: str, name: str, extra: list[str]) -> None:
    runs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}" / name
        result = cli("convert", FIXTURE, out, "--outtype", outtype, *extra, env={"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        files = sorted(p for p in out.parent.rglob("*") if p.is_file())
        runs.append({str(p.relative_to(out.parent)): p.read_bytes() for p in files})
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) >= {"i2_s": 1, "tl2": 2}.get(outtype, 4)
    for key in runs[0]:
        assert runs[0][key] == runs[1][key], key


# -- exit codes, overwrite rules, names, dry runs ------------------------------------------

def test_help_documents_the_exit_codes() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert "Exit codes: 0 ok, 1 failure, 2 usage, 3 verification mismatch" in " ".join(result.stdout.split())
    for command in ("convert", "inspect", "diff", "roundtrip", "verify"):
        assert command in result.stdout


def test_usage_errors_exit_2_and_outputs_are_never_overwritten(tmp_path: Path) -> None:
    model = copy_fixture(tmp_path)
    before = digest(model)
    assert cli("convert", model, "--outtype", "nope").returncode == 2
    over_input = cli("convert", model, model, "--outtype", "hf-packed")
    assert over_input.returncode == 2 and "would overwrite the input" in error_line(over_input)
    forced = cli("convert", model, model, "--outtype", "hf-packed", "--force")
    assert forced.returncode == 2 and "would overwrite the input" in error_line(forced)
    inside = cli("convert", model, model / "sub", "--outtype", "hf-packed")
    assert inside.returncode == 2 and "would overwrite the input" in error_line(inside)
    assert digest(model) == before and listing(model) == listing(FIXTURE)
    out = tmp_path / "x.gguf"
    out.write_bytes(b"precious")
    refused = cli("convert", model, out, "--outtype", "i2_s")
    assert refused.returncode == 2 and "pass --force" in error_line(refused)
    assert out.read_bytes() == b"precious"
    assert cli("convert", model, out, "--outtype", "i2_s", "--force").returncode == 0
    assert out.read_bytes()[:4] == b"GGUF"
    wrong = cli("convert", model, tmp_path / "d", "--outtype", "i2_s")
    assert wrong.returncode == 2 and "needs a .gguf output path" in error_line(wrong)


def test_default_names_follow_the_gguf_convention(tmp_path: Path) -> None:
    for outtype in ("i2_s", "hf-packed"):
        assert cli("convert", FIXTURE, "--outtype", outtype, cwd=tmp_path).returncode == 0
    placeholder = cli("convert", FIXTURE, tmp_path / "tiny-{outtype}.gguf", "--outtype", "tq2_0")
    assert placeholder.returncode == 0, placeholder.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Tiny-Bitnet-1.7M-HF-PACKED", "Tiny-Bitnet-1.7M-I2_S.gguf", "tiny-tq2_0.gguf"]


@pytest.mark.parametrize("out_name,outtype", [("m.gguf", "tl1"), ("m.gguf", "i2_s"), ("packed", "hf-packed")])
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, out_name: str, outtype: str) -> None:
    result = cli("convert", FIXTURE, tmp_path / out_name, "--outtype", outtype, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["output"] == str(tmp_path / out_name) and plan["exists"] is False
    assert len(plan["tensors"]) == (24 if outtype != "hf-packed" else 38)
    assert plan["bytes_written"] == sum(t["nbytes"] for t in plan["tensors"]) > 0
    if outtype != "hf-packed":
        assert {t["dtype"] for t in plan["tensors"]} >= {outtype.upper(), "F32"}
    assert list(tmp_path.iterdir()) == []
    text = cli("convert", FIXTURE, "--outtype", outtype, "--dry-run", cwd=tmp_path)
    assert "dry run: nothing written" in text.stdout and "Tiny-Bitnet-1.7M-" in text.stdout
    assert list(tmp_path.iterdir()) == []


def _stderr_on_a_terminal(args: list[object], env: dict | None = None) -> str:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "bitnet_pack", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=slave, env={**os.environ, "PYTHONPATH": path, **NO_NETWORK, **(env or {})})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_in_bytes_only_on_a_terminal(tmp_path: Path) -> None:
    args = ["convert", FIXTURE, tmp_path / "m.gguf", "--outtype", "i2_s", "--force"]
    shown = _stderr_on_a_terminal(args)
    assert "tiny-bitnet -> m.gguf" in shown and "B/s" in shown
    assert "B/s" not in _stderr_on_a_terminal(args, {"HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    assert "B/s" not in _stderr_on_a_terminal([*args, "--json"])
    piped = cli(*args)
    assert piped.returncode == 0 and "B/s" not in piped.stderr and "\r" not in piped.stderr


# -- inspect, plain and raw ------------------------------------------------------------------

def test_inspect_raw_lists_the_files_own_view(tmp_path: Path) -> None:
    gguf_path, packed = tmp_path / "m.gguf", tmp_path / "packed"
    assert cli("convert", FIXTURE, gguf_path, "--outtype", "tl2").returncode == 0
    assert cli("convert", FIXTURE, packed, "--outtype", "hf-packed").returncode == 0
    raw = json.loads(cli("inspect", gguf_path, "--raw", "--json").stdout)
    with GGUFFile(gguf_path) as file:
        assert raw["kv"]["general.architecture"] == {"type": "string", "value": "bitnet-b1.58"}
        assert raw["kv"]["tokenizer.ggml.tokens"]["count"] == len(file.get("tokenizer.ggml.tokens"))
        assert [(t["name"], t["type_id"], t["offset"], t["nbytes"]) for t in raw["tensors"]] == [
            (t.name, t.type_id, t.abs_offset, t.nbytes) for t in file.tensors.values()]
    assert {t["type"] for t in raw["tensors"]} == {"TL2", "F16", "F32"} and raw["type_ids"] == "bitnet.cpp 2025"
    text = cli("inspect", gguf_path, "--raw").stdout
    assert "TL2 (39)" in text and "tokenizer.ggml.tokens" in text and "(448 in all)" in text
    raw_st = json.loads(cli("inspect", packed, "--raw", "--json").stdout)
    st_file = SafetensorsFile(packed / "model.safetensors")
    assert raw_st["files"][0]["metadata"] == {"format": "pt"}
    assert {t["name"]: (t["dtype"], t["offset"], t["nbytes"]) for t in raw_st["files"][0]["tensors"]} == {
        n: (i.dtype, i.begin, i.nbytes) for n, i in st_file.tensors.items()}
    checkpoint_view = json.loads(cli("inspect", gguf_path, "--json", "--hf-names").stdout)
    assert checkpoint_view["layout"] == "tl2" and checkpoint_view["tensors"][1]["name"].startswith("model.")


# -- fuzz: damaged headers through the CLI never escape the typed errors ---------------------

@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory) -> dict[str, tuple[Path, bytes, int]]:
    base = tmp_path_factory.mktemp("fuzz-base")
    gguf_path = base / "m.gguf"
    assert CliRunner().invoke(main, ["convert", str(FIXTURE), str(gguf_path), "--outtype", "i2_s"]).exit_code == 0
    with GGUFFile(gguf_path) as file:
        gguf_header = file.data_start
    st_data = (FIXTURE / "model.safetensors").read_bytes()
    return {"gguf": (gguf_path, gguf_path.read_bytes(), gguf_header),
            "safetensors": (FIXTURE / "model.safetensors", st_data, 8 + struct.unpack("<Q", st_data[:8])[0])}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(["gguf", "safetensors"]), command=st.sampled_from(["inspect", "convert"]))
def test_fuzzed_headers_through_the_cli(tmp_path_factory, fuzz_inputs, data, kind: str, command: str) -> None:
    _, content, header_end = fuzz_inputs[kind]
    damaged = data.draw(mutated_bytes(content, region=(0, header_end)))
    work = tmp_path_factory.mktemp("fuzz")
    if kind == "gguf":
        src = work / "m.gguf"
        src.write_bytes(damaged)
    else:
        src = work / "model"
        src.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            (src / name).write_bytes((FIXTURE / name).read_bytes())
        (src / "model.safetensors").write_bytes(damaged)
    args = ["inspect", str(src)] if command == "inspect" else \
        ["convert", str(src), str(work / "out"), "--outtype", "hf-packed"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("Error:") and "internal error" not in lines[-1], result.stderr
        assert not (work / "out").exists()
        assert [p.name for p in work.iterdir()] == [src.name]


# -- names -----------------------------------------------------------------------------------

def test_default_name_examples() -> None:
    from bitnet_pack.pipeline.naming import default_name, expand, resolve_output

    two_b = 2_412_000_000
    assert default_name("microsoft/bitnet-b1.58-2B-4T-bf16", two_b, "i2_s") == "Bitnet-B1.58-2B-4T-I2_S.gguf"
    assert default_name("bitnet-b1.58-2B-4T-gguf", two_b, "tq2_0") == "Bitnet-B1.58-2B-4T-TQ2_0.gguf"
    assert default_name("bitnet-b1.58-2B-4T", two_b, "hf-packed") == "Bitnet-B1.58-2B-4T-HF-PACKED"
    assert default_name("bitnet-b1.58-2B-4T", two_b, "bf16") == "Bitnet-B1.58-2B-4T-BF16"  # a master directory
    assert default_name("tiny-bitnet-i2_s", 1_650_000, "tl2") == "Tiny-Bitnet-1.6M-TL2.gguf"
    assert default_name("ggml-model-i2_s", 1_650_000, "f16") == "ggml-model-1.6M-F16.gguf"
    assert expand("out/{outtype}/m-{outtype}.gguf", "tq1_0") == "out/tq1_0/m-tq1_0.gguf"
    assert resolve_output(None, "i2_s", "tiny-bitnet", 1_650_000, Path("/x")) == Path("/x/Tiny-Bitnet-1.6M-I2_S.gguf")
