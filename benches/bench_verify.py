"""`verify` and `roundtrip` at full size: peak RSS and wall time against the conversion they prove.

    python benches/bench_verify.py [--shape 2b4t|8b] [--layers N] [--tokens 4] [--only verify-master-i2s ...]

Every command runs as its own `bitnet-pack` process on a warm page cache; the peak RSS is the
process's own VmHWM (`synthetic.peak_rss_command`). Targets (issue 19): peak RSS at most 1.5x
the larger side's packed size (the I2_S file's bytes), wall time at most 3x the conversion of
the same pair.

    verify MASTER I2_S    vs  convert MASTER -> I2_S
    verify PACKED TL2     vs  convert PACKED -> TL2
    roundtrip MASTER      vs  convert MASTER -> I2_S and back (--layouts i2_s, two conversions)

--shape 8b: a Llama3-8B-1.58-shaped pair (hidden 4096, intermediate 14336, 32 layers, 32/8
heads, vocab 128256, untied), made as a bf16 master (16 GB of disk) and converted by
bitnet-pack itself. A benchmark, not a test: it asserts nothing, it prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402

SHAPE_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256}
IDS = "128000,1,2,3,4,5,6,7"


def ensure_models(shape: str, layers: int, rows: list[str]) -> dict[str, Path]:
    """MASTER (bf16), PACKED (hf-packed), I2_S and TL2 GGUFs of the shape, made once (those
    the chosen rows need: TL2 and PACKED only for verify-packed-tl2)."""
    cache = synthetic.DEFAULT_CACHE
    if shape == "2b4t":
        models = synthetic.ensure(cache, layers)
        name = f"bitnet-2b4t-shaped-{layers}l"
    else:  # as Llama3-8B-1.58 ships: packed (BitLinear's bf16 1/beta); a 16 GB master is not made
        name = f"llama3-8b-shaped-{layers}l"
        models = {"packed": write_llama_packed(cache / f"{name}-packed", layers)}
        models["bf16"] = models["packed"]  # the pair's source: `verify PACKED I2_S`
    plan = [] if shape == "8b" else [("packed", models["bf16"], models["packed"], "hf-packed")]
    plan += [
        ("i2_s", models["bf16"], cache / f"{name}-i2_s.gguf", "i2_s"),
        ("tl2", models["packed"], cache / f"{name}-tl2.gguf", "tl2")]
    for key, src, dst, outtype in plan:
        if key != "i2_s" and "verify-packed-tl2" not in rows:
            continue
        if not (dst / "config.json" if outtype == "hf-packed" else dst).exists():
            subprocess.run([sys.executable, "-m", "bitnet_pack", "convert", str(src), str(dst), "--outtype",
                            outtype, "--force"], check=True, stdout=subprocess.DEVNULL)
        models[key] = dst
    return models


VALID_BYTES = np.array([a | b << 2 | c << 4 | d << 6 for a in range(3) for b in range(3) for c in range(3)
                        for d in range(3)], np.uint8)  # four 2-bit hf codes, each 0, 1 or 2 (-1, 0, +1)


def write_llama_packed(directory: Path, layers: int) -> Path:
    """A Llama3-8B-1.58-shaped packed checkpoint: random valid code bytes, a bf16 weight_scale
    (1/beta) per projection, bf16 embedding, lm_head and norms; written once."""
    if (directory / "config.json").is_file():
        return directory
    from bitnet_pack.containers.safetensors import SafetensorsWriter, TensorPlan

    config = synthetic.config_for(layers, **SHAPE_8B) | {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "tie_word_embeddings": False, "quantization_config": {"quant_method": "bitnet",
                                                              "modules_to_not_convert": ["lm_head"]}}
    shapes = synthetic.tensor_shapes(config)
    plans = []
    for tensor, shape in shapes.items():
        if tensor.endswith("_proj.weight"):
            plans += [TensorPlan(tensor, "U8", (-(-shape[0] // 4), shape[1])), TensorPlan(tensor + "_scale", "BF16", (1,))]
        else:
            plans.append(TensorPlan(tensor, "BF16", shape))
    directory.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsWriter(directory / "model.safetensors", plans, {"format": "pt"})
    for index, (tensor, shape) in enumerate(shapes.items()):
        if tensor.endswith("_proj.weight"):
            rng = np.random.default_rng(index)
            rows = -(-shape[0] // 4)
            writer.write_chunks(tensor, (VALID_BYTES[rng.integers(0, 81, (min(256, rows - r), shape[1]), np.uint8)]
                                         for r in range(0, rows, 256)))
            scale = np.float32(1 / (0.01 + 0.001 * (index % 7)))
            writer.write(tensor + "_scale", (np.array([scale], np.float32).view(np.uint32) >> 16).astype(np.uint16))
        else:
            writer.write(tensor, synthetic.draw_bf16(index, shape, norm=len(shape) == 1))
    writer.finish()
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        (directory / file).write_bytes((synthetic.ROOT / "fixtures" / "tiny-bitnet" / file).read_bytes())
    return directory


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())


def warm(*paths: Path) -> None:
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.iterdir()):
            with open(file, "rb") as handle:
                while handle.read(64 << 20):
                    pass


def run(args: list[str], scratch: Path, warm_paths: list[Path]) -> dict:
    """One `bitnet-pack ARGS` process: wall seconds, peak RSS MB, exit code."""
    warm(*warm_paths)
    report = scratch / "peak-rss"
    start = time.perf_counter()
    process = subprocess.run(synthetic.peak_rss_command(report, args), capture_output=True)
    wall = time.perf_counter() - start
    tail = (process.stdout.decode() + process.stderr.decode()).strip().splitlines()[-3:]
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(int(report.read_text()) / 1024),
            "exit": process.returncode, "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["2b4t", "8b"], default="2b4t")
    parser.add_argument("--layers", type=int, default=None, help="default: 30 (2b4t), 32 (8b)")
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--only", nargs="+", default=None, help="rows to run (verify-master-i2s, "
                        "verify-packed-tl2, roundtrip)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    layers = args.layers or (30 if args.shape == "2b4t" else 32)
    models = ensure_models(args.shape, layers, args.only or ["verify-packed-tl2"])
    scratch = synthetic.DEFAULT_CACHE / "bench-verify-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    budget_mb = 1.5 * size_of(models["i2_s"]) / 2**20
    decode = ["--ids", IDS, "--tokens", str(args.tokens)]
    rows = {} if "tl2" not in models else {
        "verify-packed-tl2": (
            ["verify", str(models["packed"]), str(models["tl2"]), *decode],
            [["convert", str(models["packed"]), str(scratch / "c.gguf"), "--outtype", "tl2", "--force"]],
            [models["packed"], models["tl2"]])}
    rows = {
        "verify-master-i2s": (
            ["verify", str(models["bf16"]), str(models["i2_s"]), *decode],
            [["convert", str(models["bf16"]), str(scratch / "c.gguf"), "--outtype", "i2_s", "--force"]],
            [models["bf16"], models["i2_s"]]),
        **rows,
        "roundtrip": (
            ["roundtrip", str(models["bf16"]), "--layouts", "i2_s", "--ids", IDS, "--tokens", str(args.tokens)],
            [["convert", str(models["bf16"]), str(scratch / "c.gguf"), "--outtype", "i2_s", "--force"],
             ["convert", str(scratch / "c.gguf"), str(scratch / "back"), "--outtype", "bf16", "--force"]],
            [models["bf16"]]),
    }
    print(f"{args.shape}-shaped, {layers} layers, I2_S file {size_of(models['i2_s']) / 1e9:.2f} GB: RSS budget "
          f"{budget_mb:.0f} MB; load average {os.getloadavg()[0]:.1f}"
          + ("; 8b: MASTER is the packed checkpoint (the shape Llama3-8B-1.58 ships in)" if args.shape == "8b" else ""))
    print(f"{'command':<20}{'exit':>5}{'wall s':>8}{'peak MB':>9}{'convert s':>11}{'ratio':>7}{'RSS ok':>8}"
          f"{'time ok':>8}")
    results = []
    for name, (command, conversions, inputs) in rows.items():
        if args.only and name not in args.only:
            continue
        convert_s = sum(run(c, scratch, inputs)["wall_s"] for c in conversions)
        result = run(command, scratch, inputs) | {"command": name, "convert_s": round(convert_s, 1),
                                                  "budget_mb": round(budget_mb)}
        ratio = result["wall_s"] / max(convert_s, 1e-9)
        print(f"{name:<20}{result['exit']:>5}{result['wall_s']:>8}{result['peak_rss_mb']:>9}{convert_s:>11.1f}"
              f"{ratio:>7.1f}{str(result['peak_rss_mb'] <= budget_mb):>8}{str(ratio <= 3):>8}", flush=True)
        if result["exit"] not in (0, 3):
            print("  " + "\n  ".join(result["tail"]))
        results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
