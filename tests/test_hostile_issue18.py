"""Issue 18 beyond the table rows (hostile_issue18.py): what must succeed or is not a CLI
case — the library's typed errors, start-up signals, a closed stdout, a full disk while the
TL ini is written, inputs that are also outputs, strict JSON, bounded tokenizer rebuilds."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from corrupt_files import FIXTURE, copy_fixture
from gguf import GGUFValueType as VT
from hostile_cases import converted, gguf_with, kv_set
from test_cli import NO_NETWORK, ROOT
from test_hostile import one_error_line, run, snapshot

import bitnet_pack
from bitnet_pack.errors import BitnetPackError, UsageError
from bitnet_pack.families.tokenizers.spm import spm_merges
from bitnet_pack.formats.layouts import variants

ENV = {**os.environ, "PYTHONPATH": str(ROOT), **NO_NETWORK}


# -- the library: the project's errors, bounded work ------------------------------------------

def test_library_verify_is_bounded_by_the_context() -> None:
    started = time.monotonic()
    with pytest.raises(UsageError, match="max_position_embeddings"):
        bitnet_pack.verify(FIXTURE, FIXTURE, tokens=10**9)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("ids", [[1.5], [True], [-1], [2**63], ["1"]])
def test_library_ids_must_be_token_ids(ids: list) -> None:
    with pytest.raises(UsageError, match="token ids are integers"):
        bitnet_pack.verify(FIXTURE, FIXTURE, ids=ids, tokens=1)


def test_library_refuses_an_unknown_i2s_variant(tmp_path: Path) -> None:
    known = ", ".join(variants())  # the registry's, x86 and arm among them
    assert {"x86", "arm"} <= set(variants())
    with pytest.raises(UsageError, match=f"i2s_variant: unknown variant 'mips'; known: {known}$"):
        bitnet_pack.open(converted(tmp_path, "i2_s"), i2s_variant="mips")
    with pytest.raises(UsageError, match="'mips'"):
        bitnet_pack.convert(converted(tmp_path, "i2_s"), tmp_path / "x.gguf", outtype="tq2_0", i2s_variant="mips")


@pytest.mark.parametrize("edit", [{"architectures": 5}, {"quantization_config": "bitnet"},
                                  {"model_type": ["bitnet"]}, {"num_hidden_layers": 10**6}])
def test_library_raises_project_errors_for_wrongly_typed_configs(tmp_path: Path, edit: dict) -> None:
    model = copy_fixture(tmp_path)
    config = json.loads((model / "config.json").read_text()) | edit
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(BitnetPackError):
        bitnet_pack.convert(model, tmp_path / "x.gguf", outtype="i2_s")
    assert not (tmp_path / "x.gguf").exists()


def test_an_overflowing_betas_table_is_ignored_not_an_internal_error(tmp_path: Path) -> None:
    from bitnet_pack.containers.safetensors import SafetensorsFile
    from bitnet_pack.pipeline.sources.hf import BETAS_KEY

    master = tmp_path / "master"
    assert run("convert", converted(tmp_path, "i2_s"), master, "--outtype", "bf16")[0] == 0
    with SafetensorsFile(master / "model.safetensors") as file:
        table = json.loads(file.metadata[BETAS_KEY])
    edited = {name: "f" * 40 for name in table}  # beyond uint32
    _set_metadata(master, BETAS_KEY, json.dumps(edited))
    code, _, stderr = run("convert", master, tmp_path / "out.gguf", "--outtype", "i2_s")
    assert code == 0, stderr


def _set_metadata(model: Path, key: str, value: str) -> None:
    from bitnet_pack.containers.safetensors import SafetensorsFile, SafetensorsWriter, TensorPlan

    path = model / "model.safetensors"
    with SafetensorsFile(path) as file:
        tensors = {n: (i.dtype, np.array(file.raw(n))) for n, i in file.tensors.items()}
        metadata = dict(file.metadata) | {key: value}
    writer = SafetensorsWriter(path, [TensorPlan(n, d, t.shape) for n, (d, t) in tensors.items()], metadata)
    for name, (_, data) in tensors.items():
        writer.write(name, data)
    writer.finish()


# -- metadata that is text: NUL, NaN ---------------------------------------------------------

def test_a_nul_in_general_name_does_not_become_a_path(tmp_path: Path) -> None:
    src = gguf_with("i2_s", kv=kv_set("general.name", "evil\0name/../x", VT.STRING))(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run("convert", src, f"{out}/", "--outtype", "tq2_0")
    assert code == 0, stderr
    [written] = list(out.iterdir())
    assert written.suffix == ".gguf" and "\0" not in written.name and written.name.startswith("Edited")


def test_inspect_raw_json_is_strict_json_with_nan_metadata(tmp_path: Path) -> None:
    src = gguf_with("i2_s", kv=kv_set("bitnet-b1.58.rope.freq_base", float("nan"), VT.FLOAT32))(tmp_path)
    code, stdout, stderr = run("inspect", src, "--raw", "--json")
    assert code == 0, stderr

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")
    data = json.loads(stdout, parse_constant=refuse)
    assert data["kv"]["bitnet-b1.58.rope.freq_base"]["value"] == "NaN"


def test_the_sentencepiece_merge_rebuild_is_linear_in_a_long_token() -> None:
    vocab = {"a": 0, "b": 1, "ab": 2, "ab" * 500_000: 3, "b" * 1_000_000: 4}
    started = time.monotonic()
    merges = spm_merges(vocab)
    assert time.monotonic() - started < 5
    assert merges == [["a", "b"]]
    rule = {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}  # every split, by id then cut
    assert spm_merges(rule) == [["a", "b"], ["b", "c"], ["a", "bc"], ["ab", "c"]]


# -- outputs that are inputs, a full disk ----------------------------------------------------

def test_record_does_not_replace_a_dangling_symlink_without_force(tmp_path: Path) -> None:
    link = tmp_path / "golden.npz"
    link.symlink_to(tmp_path / "nowhere")
    code, _, stderr = run("verify", FIXTURE, "--record", link, "--ids", "1,2", "--tokens", "2")
    assert code == 2 and "golden.npz exists" in one_error_line(stderr)
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
    assert run("verify", FIXTURE, "--record", link, "--ids", "1,2", "--tokens", "2", "--force")[0] == 0


def test_force_never_rewrites_a_source_kernel_config_that_is_the_outputs_sibling(tmp_path: Path) -> None:
    src = converted(tmp_path, "tl2")
    ini = tmp_path / "out.kernel_config.ini"
    assert run("convert", FIXTURE, tmp_path / "first.gguf", "--outtype", "tl2")[0] == 0
    ini.write_bytes((tmp_path / "first.kernel_config.ini").read_bytes() + b"; the source's\n")
    given = ini.read_bytes()
    code, _, stderr = run("convert", src, tmp_path / "out.gguf", "--outtype", "tl1", "--src-kernel-config", ini,
                          "--force")
    assert code == 2 and "would overwrite the input" in one_error_line(stderr)
    assert ini.read_bytes() == given and not (tmp_path / "out.gguf").exists()


def test_a_full_disk_while_writing_the_tl_ini_publishes_nothing(tmp_path: Path, monkeypatch) -> None:
    real = Path.write_text

    def full(self: Path, text: str, *args, **kwargs) -> int:
        if "kernel_config.ini" in self.name:
            real(self, text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "out"
    out.mkdir()
    code, _, stderr = run("convert", FIXTURE, out / "model.gguf", "--outtype", "tl2")
    assert code == 1 and "No space left" in one_error_line(stderr)
    assert snapshot(out) == {}


def test_an_existing_directory_as_gguf_out_gets_the_default_name_inside(tmp_path: Path) -> None:
    out = tmp_path / "models"
    out.mkdir()
    code, _, stderr = run("convert", FIXTURE, out, "--outtype", "i2_s")
    assert code == 0, stderr
    [written] = list(out.iterdir())
    assert written.name.startswith("Tiny-Bitnet-") and written.name.endswith("-I2_S.gguf")


# -- processes: start-up signals, a closed stdout ---------------------------------------------

def _caught(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def test_the_handler_is_installed_before_numpy_is_imported() -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "bitnet_pack", "--version"],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    order = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert order.index("bitnet_pack.interrupts") < order.index("numpy")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1])
def test_a_signal_during_start_up_is_one_line(signum: int, code: int, delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bitnet_pack", "inspect", str(FIXTURE)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _caught(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(delay)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        return  # it finished first
    assert proc.returncode == code, stderr
    assert one_error_line(stderr).startswith("Error: interrupted")


def test_a_closed_stdout_is_one_error_line() -> None:
    result = subprocess.run(f"'{sys.executable}' -m bitnet_pack inspect '{FIXTURE}' >&-", shell=True,
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "stdout" in one_error_line(result.stderr)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "model.gguf"
    os.mkfifo(pipe)
    result = subprocess.run([sys.executable, "-m", "bitnet_pack", "convert", str(pipe), str(tmp_path / "o.gguf"),
                             "--outtype", "tq2_0"], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 1 and one_error_line(result.stderr)


def test_an_editable_install_rebuilds_with_a_ninja_binary_not_a_shell_shim() -> None:
    try:
        import _bitnet_pack_editable_loader as loader
    except ImportError:
        pytest.skip("not an editable install: no rebuild check at start-up")
    import inspect as source_of

    text = source_of.getsource(loader.init)
    command = text.split("[", 1)[1].split("]", 1)[0].strip().strip("'\"")
    with open(command, "rb") as binary:
        assert binary.read(4) == b"\x7fELF", f"{command} is a script (make install sets NINJA to the venv's ninja)"


def test_library_maps_os_and_unforeseen_errors_to_project_errors(tmp_path: Path, monkeypatch) -> None:
    from bitnet_pack.errors import OutputExists

    keep = tmp_path / "keep"
    keep.write_text("a file where a directory is wanted")
    with pytest.raises(OutputExists) as caught:
        bitnet_pack.roundtrip(FIXTURE, ["i2_s"], tokens=0, keep=keep)
    assert isinstance(caught.value.__cause__, FileExistsError)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("a crafted input no check caught")
    monkeypatch.setattr(bitnet_pack.api, "describe", broken)
    with pytest.raises(BitnetPackError, match="unforeseen KeyError") as caught:
        bitnet_pack.inspect(FIXTURE)
    assert isinstance(caught.value.__cause__, KeyError)
    monkeypatch.setattr(bitnet_pack.api, "describe", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(BitnetPackError, match="out of memory"):
        bitnet_pack.inspect(FIXTURE)


SHRINKING_INPUT = """
import os, sys
from pathlib import Path
import numpy as np
from bitnet_pack import interrupts
interrupts.install()
work = Path(sys.argv[1])
temp = work / ".out.gguf.incomplete-1"
temp.write_bytes(b"partial")
interrupts.track(temp)
source = work / "in.gguf"
source.write_bytes(b"x" * (1 << 20))
mapped = np.memmap(source, dtype=np.uint8, mode="r")
os.truncate(source, 4096)  # another process shortens the input
print(int(mapped[1 << 19:].sum()))
"""


def test_an_input_truncated_while_mapped_is_one_error_line_and_leaves_nothing(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SHRINKING_INPUT, str(tmp_path)], capture_output=True, text=True,
                            env=ENV, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "SIGBUS" in one_error_line(result.stderr) and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.gguf"]
