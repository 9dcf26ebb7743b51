"""Memory follows the largest tensor, not the model.

Two synthetic models share every shape (8 MiB bf16 projections, the largest tensors) and
differ only in depth: 3 layers (95 MiB) and 8 layers (240 MiB). Each conversion runs in its
own process, and its peak RSS (VmHWM of that process, which a fork's copy of the parent
cannot inflate the way it inflates ru_maxrss) is compared with the same conversion of the
1-layer model and with a process that only imports what a conversion imports. A converter that held the
model, an f32 copy of it, or the pages of a memory-mapped input would grow by ~200 MiB with
the 5 extra layers; a streaming one stays within a few tensors of the import baseline (the
numpy reference, BITNET_PACK_PUREPYTHON=1, makes f32 temporaries of one tensor: more of them).
This is a structural check on measured memory, not a timing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))

import synthetic  # noqa: E402

MIB = 1 << 20
SHAPES = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 8, "num_key_value_heads": 2,
          "vocab_size": 4096}
LARGEST = 4096 * 1024 * 2  # gate/up/down and the embedding, bf16
LAYER = (2 * 1024 * 1024 + 2 * 256 * 1024 + 3 * 4096 * 1024) * 2
PURE = os.environ.get("BITNET_PACK_PUREPYTHON", "") not in ("", "0")
TENSORS_IN_FLIGHT = 16 if PURE else 8  # bound on peak RSS above the imports, in largest tensors
CONVERSIONS = [("bf16", "i2_s", "m.gguf"), ("bf16", "hf-packed", "packed"), ("packed", "i2_s", "p.gguf"),
               ("gguf", "hf-packed", "back"), ("gguf", "tq2_0", "t.gguf")]


def peak_rss(*args: str, imports_only: bool = False) -> int:
    """Peak RSS in bytes of `bitnet-pack ARGS` in a fresh process (see `synthetic.peak_rss_command`)."""
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"bitnet-pack-hwm-{os.getpid()}-{abs(hash(args))}"
    command = synthetic.peak_rss_command(report, list(args), imports_only=imports_only)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    peak = int(report.read_text()) * 1024
    report.unlink()
    return peak


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Path]]:
    base = tmp_path_factory.mktemp("models")
    made = {}
    for layers in (3, 8):
        master = synthetic.write_master(base / f"{layers}l-bf16", synthetic.config_for(layers, **SHAPES))
        packed, gguf = base / f"{layers}l-packed", base / f"{layers}l.gguf"
        for src, out, outtype in ((master, packed, "hf-packed"), (packed, gguf, "i2_s")):
            subprocess.run([sys.executable, "-m", "bitnet_pack", "convert", str(src), str(out), "--outtype",
                            outtype, "--json"], check=True, capture_output=True, cwd=ROOT)
        made[layers] = {"bf16": master, "packed": packed, "gguf": gguf}
    return made


@pytest.fixture(scope="module")
def baseline() -> int:
    return peak_rss("--version", imports_only=True)


@pytest.mark.parametrize("source, outtype, out", CONVERSIONS)
def test_peak_memory_tracks_the_largest_tensor_not_the_model(models, baseline: int, tmp_path: Path,
                                                             source: str, outtype: str, out: str) -> None:
    model_growth = 5 * LAYER
    peaks = {layers: peak_rss("convert", str(paths[source]), str(tmp_path / f"{layers}-{out}"), "--outtype",
                              outtype, "--json") for layers, paths in models.items()}
    deeper = peaks[8] - peaks[3]
    assert deeper < 2 * LARGEST, (f"{source} -> {outtype}: 5 more layers ({model_growth / MIB:.0f} MiB) "
                                  f"raised peak RSS by {deeper / MIB:.1f} MiB")
    above_imports = peaks[8] - baseline
    assert above_imports < TENSORS_IN_FLIGHT * LARGEST + 24 * MIB, (
        f"{source} -> {outtype}: peak {peaks[8] / MIB:.0f} MiB is {above_imports / MIB:.0f} MiB above the "
        f"imports alone ({baseline / MIB:.0f} MiB); the largest tensor is {LARGEST / MIB:.0f} MiB")
