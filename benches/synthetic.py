"""A synthetic checkpoint in BitNet b1.58 2B4T's shapes, written once and reused.

    hidden 2560, intermediate 6912, 30 layers, 20 heads, 5 kv heads, vocab 128256, bf16

Deterministic: every tensor is drawn from its own numpy PCG64 stream seeded by its index, as
bf16 bit patterns (random sign, exponents 2^-9..2^0, random mantissa), so a 4.8 GB master is
made in seconds, one tensor at a time. The packed form is made from it by bitnet-pack itself.

    python benches/synthetic.py [CACHE_DIR] [--layers N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitnet_pack.containers.safetensors import SafetensorsWriter, TensorPlan  # noqa: E402
from bitnet_pack.families.arch import BITNET_2B4T, family_of_config  # noqa: E402

SHAPE_2B4T = {"hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
              "num_attention_heads": 20, "num_key_value_heads": 5, "vocab_size": 128256}
DEFAULT_CACHE = Path(os.environ.get("BITNET_PACK_BENCH_CACHE", ROOT / "out" / "bench-cache"))


def config_for(layers: int, **overrides: int) -> dict:
    shape = SHAPE_2B4T | {"num_hidden_layers": layers} | overrides
    return {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "bos_token_id": 128000,
            "eos_token_id": 128001, "hidden_act": "relu2", "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", **shape,
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                    "quantization_mode": "online"}}


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The architecture description's shapes (2B4T, or the family the config names)."""
    return family_of_config(config, default=BITNET_2B4T).tensor_shapes(config)


def draw_bf16(index: int, shape: tuple[int, ...], norm: bool) -> np.ndarray:
    rng = np.random.default_rng(index)
    if norm:  # 1 + small noise, as bf16 bits
        values = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        return (values.view(np.uint32) >> 16).astype(np.uint16)
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    exponent = (118 + (bits & 7) + ((bits >> 3) & 1)).astype(np.uint16)  # 2^-9 .. 2^0
    return (bits & 0x807F) | (exponent << 7)


def write_master(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shapes = tensor_shapes(config)
    writer = SafetensorsWriter(directory / "model.safetensors",
                               [TensorPlan(n, "BF16", s) for n, s in shapes.items()], {"format": "pt"})
    for index, (name, shape) in enumerate(shapes.items()):
        writer.write(name, draw_bf16(index, shape, norm=len(shape) == 1))
    writer.finish()
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    fixture_tokenizer = ROOT / "fixtures" / "tiny-bitnet"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((fixture_tokenizer / name).read_bytes())
    return directory


# A child's ru_maxrss counts the parent's pages it shared between fork and exec, so the peak
# is read as the child's own VmHWM (the high-water mark of the address space exec gave it).
_HWM = """
import atexit, runpy, sys
report, imports_only = sys.argv[1], sys.argv[2] == "1"

def write_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(report, "w") as out:
        out.write(peak)

atexit.register(write_peak)
sys.argv = ["bitnet-pack", *sys.argv[3:]]
if imports_only:
    import bitnet_pack.cli.main, bitnet_pack.pipeline.convert, bitnet_pack.formats.fastpath, bitnet_pack.pipeline.sinks.gguf, bitnet_pack.pipeline.sinks.hf
else:
    runpy.run_module("bitnet_pack", run_name="__main__", alter_sys=True)
"""


def peak_rss_command(report: Path, args: list[str], imports_only: bool = False) -> list[str]:
    """`python -c ...` running `bitnet-pack ARGS` (or only its imports) that writes its peak
    RSS in KiB to `report` at exit."""
    return [sys.executable, "-c", _HWM, str(report), "1" if imports_only else "0", *args]


def ensure(cache: Path = DEFAULT_CACHE, layers: int = 30) -> dict[str, Path]:
    """The master and packed checkpoints, made on first use."""
    name = f"bitnet-2b4t-shaped-{layers}l"
    master = cache / f"{name}-bf16"
    if not (master / "config.json").is_file():
        write_master(master, config_for(layers))
    packed = cache / f"{name}-packed"
    if not (packed / "config.json").is_file():
        from bitnet_pack.pipeline.convert import convert
        from bitnet_pack.pipeline.sinks.hf import HFSink
        from bitnet_pack.pipeline.sources import open_checkpoint

        with open_checkpoint(master) as source:
            convert(source, HFSink(packed, "hf-packed", force=True))
    return {"bf16": master, "packed": packed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", nargs="?", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--layers", type=int, default=30)
    args = parser.parse_args()
    for kind, path in ensure(args.cache, args.layers).items():
        print(kind, path)
