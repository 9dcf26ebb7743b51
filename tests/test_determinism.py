"""The same logits bytes on every machine setting: tiny-a (packed folder and the peer I2_S
file), both numerics, both prompts, 16 greedy steps, decoded in subprocesses over every
OPENBLAS_CORETYPE below that this CPU can execute (SkylakeX needs AVX-512) x every BITNET_PACK_CPU this build and CPU run (threads 1, 2 and 3,
every float op split over the pool) x pure mode, each compared byte for byte with this
process's numpy-backend decode.

Before the float ops moved into kernels/floatops.c, Haswell and SkylakeX core types gave
OpenBLAS kernels with other summation orders, and the bitnet.cpp-numerics margins of prompt
1 moved by up to 0.42 from step 9 (issue 10).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet_pack.engine import kernel
from bitnet_pack.engine.model import BitNetModel
from bitnet_pack.pipeline.sources import load_weights

sys.path.insert(0, str(Path(__file__).parent))
from determinism_worker import MODELS, NUMERICS, TOKENS  # noqa: E402

# OpenBLAS core types and the CPU flag each one's kernels execute; a core type this CPU lacks
# dies with SIGILL inside OpenBLAS before our code runs, so it is no setting this machine has.
CORETYPE_NEEDS = {"Haswell": "avx2", "SkylakeX": "avx512f", "Zen": "avx2", "Prescott": "pni"}  # pni: SSE3


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


CORETYPES = tuple(core for core, flag in CORETYPE_NEEDS.items() if flag in cpu_flags())
WORKER = Path(__file__).with_name("determinism_worker.py")
RECORDED = {("packed", "reference"): "hf_packed_offline", ("i2_s", "bitnet.cpp"): "bitnet_cpp_i2_s"}


@pytest.fixture(scope="module")
def baseline(tiny_a):
    """{key: (ids, logits)} from this process on the numpy backend, the bits all must equal."""
    prompts = json.loads((tiny_a / "tiny-a.decode.json").read_text())["prompts"]
    out = {}
    with kernel.use_backend("numpy"):
        for name, path in MODELS.items():
            config, weights = load_weights(tiny_a / path)
            for numerics in NUMERICS:
                model = BitNetModel(config, weights, numerics=numerics)
                for index, entry in enumerate(prompts):
                    ids, logits = model.generate_ids(entry["prompt"], TOKENS)
                    if (name, numerics) in RECORDED:  # the bits everyone must share decode the record
                        assert ids == entry[RECORDED[name, numerics]]["ids"], (name, numerics, index)
                    out[f"{name}/{numerics}/p{index}"] = (ids, logits)
    return out


def settings() -> list[dict[str, str]]:
    """Per run: the environment and the thread counts decoded in that process."""
    runs = [{"BITNET_PACK_PUREPYTHON": "1", "threads": "1"}, {"BITNET_PACK_CPU": "numpy", "threads": "1"}]
    for i, backend in enumerate(b for b in kernel.available_backends() if b != "numpy"):
        runs.append({"BITNET_PACK_CPU": backend, "BITNET_PACK_THREADS": str(1 + i % 3), "threads": "1,2,3"})
    return runs


def run_worker(tmp_path: Path, tiny_a: Path, coretype: str, setting: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITNET_PACK_") or k == "BITNET_PACK_SHARED"}
    env.update({k: v for k, v in setting.items() if k != "threads"}, OPENBLAS_CORETYPE=coretype)
    out = tmp_path / f"{coretype}-{setting.get('BITNET_PACK_CPU', 'pure')}.npz"
    subprocess.run([sys.executable, str(WORKER), str(out), str(tiny_a), setting["threads"]], env=env, check=True,
                   capture_output=True, timeout=300)
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def first_difference(ours: np.ndarray, theirs: np.ndarray) -> str:
    step, position = np.argwhere(ours.view(np.uint32) != theirs.view(np.uint32))[0]
    return f"step {step}, position {position}: {ours[step, position]!r} != {theirs[step, position]!r}"


def test_at_least_three_blas_core_types_run_here():
    assert len(CORETYPES) >= 3, f"runnable OpenBLAS core types here: {CORETYPES}"


@pytest.mark.parametrize("coretype", CORETYPES)
def test_logits_bytes_do_not_depend_on_cpu_threads_or_blas(tmp_path, tiny_a, baseline, coretype):
    for setting in settings():
        result = run_worker(tmp_path, tiny_a, coretype, setting)
        want_backend = "numpy" if "BITNET_PACK_PUREPYTHON" in setting else setting["BITNET_PACK_CPU"]
        assert str(result["backend"]) == want_backend
        if "BITNET_PACK_THREADS" in setting:
            assert int(result["env_threads"]) == int(setting["BITNET_PACK_THREADS"])
        for key, (ids, logits) in baseline.items():
            for threads in setting["threads"].split(","):
                run = f"{coretype} {setting} {key} threads {threads}"
                theirs = result[f"{key}/t{threads}/logits"]
                assert result[f"{key}/t{threads}/ids"].tolist() == ids, run
                assert theirs.tobytes() == logits.tobytes(), f"{run}: {first_difference(logits, theirs)}"
