"""SIGINT and SIGTERM at random points of real `bitnet-pack convert` runs (seeded, bounded):
every run ends within the timeout (no hang), with no traceback, exit 130/143 and one
`Error: interrupted` line (or 0 when the run finished first), nothing in the output
directory (or only the complete output, when the signal came after its final rename, which
the line then says), and the input unchanged.

A signal is sent a random delay after the process installed its handlers, which is the first
thing the entry point does (seen in /proc/PID/status: SIGTERM becomes caught), so the delays
cover the imports of click, numpy and the kernel, planning, writing and the final rename.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corrupt_files import write_sparse_master
from test_cli import NO_NETWORK, ROOT, digest

RUNS = int(os.environ.get("BITNET_PACK_INTERRUPT_RUNS", "40"))  # more for a soak run
SEED = int(os.environ.get("BITNET_PACK_INTERRUPT_SEED", "20261203"))
TIMEOUT = 90  # seconds for one run to end after its signal: a hang fails here
CASES = [("tq2_0", "out.gguf"), ("f16", "out.gguf"), ("i2_s", "out.gguf"), ("hf-packed", "packed")]


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> tuple[Path, dict]:
    model = write_sparse_master(tmp_path_factory.mktemp("interrupt") / "master", layers=1)
    return model, digest(model)


def _handlers_installed(pid: int) -> bool:
    """True once the process catches SIGTERM (bit 15 of SigCgt), i.e. `interrupts.install` ran."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _start(src: Path, out: Path, outtype: str) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, **NO_NETWORK, "BITNET_PACK_THREADS": "8"}
    return subprocess.Popen([sys.executable, "-m", "bitnet_pack", "convert", src, out, "--outtype", outtype],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _interrupt(proc: subprocess.Popen, delay: float, signum: int) -> tuple[int, str]:
    deadline = time.monotonic() + TIMEOUT
    while not _handlers_installed(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"hung after {signal.Signals(signum).name} at {delay:.3f} s") from None
    return proc.returncode, stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handlers installed")
def test_signals_at_random_points_end_cleanly(master, tmp_path: Path) -> None:
    src, before = master
    rng = random.Random(SEED)
    outcomes = {"interrupted": 0, "finished": 0}
    for run in range(RUNS):
        outtype, name = CASES[run % len(CASES)]
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        delay = rng.uniform(0.0, 1.1) ** 2  # dense in the first half second, up to 1.2 s
        directory = tmp_path / f"run{run}"
        directory.mkdir()
        code, stderr = _interrupt(_start(src, directory / name, outtype), delay, signum)
        where = f"run {run}: {outtype} {signal.Signals(signum).name} at {delay:.3f} s: {stderr!r}"
        assert "Traceback" not in stderr and "Warning" not in stderr, where
        lines = stderr.strip().splitlines()
        assert all(line.startswith(("note:", "Error:")) for line in lines), where
        if code == 0:  # finished before the signal: the whole output and nothing else
            outcomes["finished"] += 1
            assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [name], where
        else:
            outcomes["interrupted"] += 1
            assert code == 128 + signum, where
            assert sum(line.startswith("Error:") for line in lines) == 1, where
            head = f"Error: interrupted ({signal.Signals(signum).name}); "
            if lines[-1] == head + f"after writing {directory / name}":  # between the rename and the exit
                assert [p.name for p in directory.iterdir()] == [name], where
            else:  # stopped before its output was complete: that one line alone
                assert lines == [head + "nothing was written"], where
                assert list(directory.iterdir()) == [], where
        assert not list(directory.glob(".*incomplete*")), where
    assert outcomes["interrupted"] >= RUNS // 2, outcomes  # the signals mostly land mid-run
    assert digest(src) == before


def test_a_second_signal_during_cleanup_changes_nothing(master, tmp_path: Path) -> None:
    src, _ = master
    proc = _start(src, tmp_path / "out.gguf", "tq2_0")
    deadline = time.monotonic() + TIMEOUT
    while not list(tmp_path.glob(".out.gguf.incomplete-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "Error: interrupted (SIGINT); nothing was written"
    assert "Traceback" not in stderr and list(tmp_path.iterdir()) == []


def test_an_aborted_write_does_not_wait_for_an_unwoken_writer_thread(tmp_path: Path) -> None:
    """The library path (KeyboardInterrupt, no signal policy): an exception that lands inside
    Queue.put after the job is counted but before the writer thread is woken used to leave
    abort() waiting for that job forever (the futex hang). Abort must not wait for it."""
    import threading

    from bitnet_pack.containers.gguf import GGUFWriter
    from bitnet_pack.pipeline.sinks.direct_io import open_direct_file

    writer = GGUFWriter(tmp_path / "out.gguf", data_stream=open_direct_file)
    writer.add_tensor("t", (4096,), 0, 4 * 4096)
    writer.write_header()
    direct = writer._file._writer  # noqa: SLF001 - the state an interrupt leaves behind
    if not hasattr(direct, "_todo"):
        pytest.skip("this filesystem refuses O_DIRECT: no writer thread to strand")
    direct._submit()
    with direct._todo.mutex:  # a job counted but its notify lost, as an interrupted put leaves it
        buffer = direct._free.get()
        direct._todo.queue.append((buffer, 0, 4096))
        direct._todo.unfinished_tasks += 1
    done = threading.Event()
    threading.Thread(target=lambda: (writer.abort(), done.set()), daemon=True).start()
    assert done.wait(20), "abort() hung waiting for the writer thread"
    assert list(tmp_path.iterdir()) == []


def test_a_signal_inside_a_deferred_section_acts_when_it_ends(tmp_path: Path) -> None:
    temp = tmp_path / ".out.incomplete-1"
    script = f"""
import os, signal, sys
from pathlib import Path
from bitnet_pack import interrupts
interrupts.install()
interrupts.track(Path({str(temp)!r}))
Path({str(temp)!r}).write_text("partial")
with interrupts.deferred():
    os.kill(os.getpid(), signal.SIGTERM)
    print("finished the section", flush=True)
print("never", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 143 and done.stdout == "finished the section\n", done
    assert done.stderr == "Error: interrupted (SIGTERM); nothing was written\n"
    assert not temp.exists()
