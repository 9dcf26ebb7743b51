"""`make bench`: conversion speed and memory on a 2B4T-shaped model, then the kernel benches.

Each conversion runs as its own `bitnet-pack convert` process, timed on a warm page cache;
peak RSS is that process's ru_maxrss. The yardstick is a plain copy of the same input bytes.

    python benches/run.py [--layers N] [--skip-kernel] [--json out/bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402


def input_bytes(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.suffix in (".safetensors", ".gguf")]
    return sum(p.stat().st_size for p in files)


def warm(path: Path) -> None:
    for file in [path] if path.is_file() else path.iterdir():
        with open(file, "rb") as handle:
            while handle.read(64 << 20):
                pass


def run_convert(src: Path, out: Path, outtype: str, *extra: str) -> dict:
    warm(src)
    command = [sys.executable, "-m", "bitnet_pack", "convert", str(src), str(out), "--outtype", outtype,
               "--force", "--json", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    size = input_bytes(src)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "input_gb": round(size / 1e9, 3),
            "gb_per_s": round(size / 1e9 / wall, 2)}


def copy_yardstick(src: Path, scratch: Path) -> dict:
    files = [src] if src.is_file() else [p for p in src.iterdir() if p.suffix == ".safetensors"]
    warm(src)
    start = time.perf_counter()
    for file in files:
        shutil.copyfile(file, scratch / file.name)
        (scratch / file.name).unlink()
    wall = time.perf_counter() - start
    size = sum(f.stat().st_size for f in files)
    return {"wall_s": round(wall, 2), "gb_per_s": round(size / 1e9 / wall, 2)}


def conversions(layers: int, out: Path) -> list[tuple[str, dict, dict]]:
    models = synthetic.ensure(layers=layers)
    out.mkdir(parents=True, exist_ok=True)
    i2s = out / "bench-i2_s.gguf"
    plan = [
        ("bf16 -> packed", models["bf16"], out / "bench-packed", "hf-packed"),
        ("bf16 -> I2_S", models["bf16"], i2s, "i2_s"),
        ("packed -> I2_S", models["packed"], i2s, "i2_s"),
        ("I2_S -> TQ2_0", i2s, out / "bench-tq2_0.gguf", "tq2_0"),
        ("GGUF -> packed", i2s, out / "bench-back", "hf-packed"),
    ]
    rows = []
    for label, src, dst, outtype in plan:
        scratch = out / "copy-scratch"
        scratch.mkdir(exist_ok=True)
        rows.append((label, run_convert(src, dst, outtype), copy_yardstick(src, scratch)))
    return rows


def print_table(rows: list[tuple[str, dict, dict]]) -> None:
    print(f"{'conversion':<16} {'wall s':>7} {'peak RSS MB':>12} {'input GB':>9} {'GB/s':>6} {'copy GB/s':>10}")
    for label, result, copy in rows:
        print(f"{label:<16} {result['wall_s']:>7} {result['peak_rss_mb']:>12} {result['input_gb']:>9} "
              f"{result['gb_per_s']:>6} {copy['gb_per_s']:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--skip-kernel", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = synthetic.DEFAULT_CACHE.parent / "bench-out"
    rows = conversions(args.layers, out)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([{"conversion": r[0], **r[1], "copy": r[2]} for r in rows], indent=2))
    if not args.skip_kernel:
        subprocess.run([sys.executable, str(HERE / "bench_kernel.py")], check=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
