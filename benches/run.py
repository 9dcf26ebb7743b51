"""`make bench`: conversion speed and memory on a 2B4T-shaped model, then the kernel benches.

Each conversion runs as its own `bitnet-pack convert` process on a warm page cache (the
input is read once just before), `--repeat` times; the table shows the median wall time,
the largest peak RSS (the process's own VmHWM, see `synthetic.peak_rss_command`) and GB/s
of input. While it runs, the output's directory and the child's TMPDIR are watched: any
file but the output, its own `.NAME.incomplete-PID` name (and, with --force over an earlier
output, `.NAME.replaced-PID` for the instant of the swap) is reported. The yardstick is
a plain copy of the same input bytes (page cache to page cache, no fsync).

    python benches/run.py [--layers N] [--repeat N] [--skip-kernel] [--json out/bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402


def input_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".gguf"))


def warm(path: Path) -> None:
    for file in [path] if path.is_file() else path.iterdir():
        with open(file, "rb") as handle:
            while handle.read(64 << 20):
                pass


class Watcher:
    """Names that appear in `directories` while a conversion runs, other than `allowed`."""

    def __init__(self, directories: list[Path], allowed: set[str]):
        self.directories, self.allowed, self.extra = directories, allowed, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for directory in self.directories:
                self.extra.update(n for n in os.listdir(directory) if n not in self.allowed)
            time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_convert(src: Path, out: Path, outtype: str, scratch: Path) -> dict:
    warm(src)
    report, tmpdir = scratch / "peak-rss", scratch / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    args = ["convert", str(src), str(out), "--outtype", outtype, "--force", "--json"]
    before = set(os.listdir(out.parent))
    allowed = before | {out.name}
    with Watcher([out.parent, tmpdir], allowed) as watcher:
        start = time.perf_counter()
        process = subprocess.Popen(synthetic.peak_rss_command(report, args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=os.environ | {"TMPDIR": str(tmpdir)})
        _, stderr = process.communicate()
        wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"bitnet-pack {' '.join(args)} failed:\n{stderr.decode()}")
    own = (f".{out.name}.incomplete-{process.pid}", f".{out.name}.replaced-{process.pid}")  # --force swaps
    extra = sorted(n for n in watcher.extra if n not in own)
    return {"wall_s": wall, "peak_rss_mb": int(report.read_text()) / 1024, "extra_files": extra}


def copy_yardstick(src: Path, scratch: Path) -> float:
    """GB/s of a plain copy of `src`'s tensor files."""
    warm(src)
    start = time.perf_counter()
    for file in input_files(src):
        shutil.copyfile(file, scratch / file.name)
        (scratch / file.name).unlink()
    return sum(f.stat().st_size for f in input_files(src)) / 1e9 / (time.perf_counter() - start)


def conversions(layers: int, out: Path, repeat: int) -> list[dict]:
    models = synthetic.ensure(layers=layers)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "scratch"
    scratch.mkdir(exist_ok=True)
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
        runs = [run_convert(src, dst, outtype, scratch) for _ in range(repeat)]
        size = sum(f.stat().st_size for f in input_files(src))
        wall = statistics.median(r["wall_s"] for r in runs)
        rows.append({"conversion": label, "wall_s": round(wall, 2), "walls": [round(r["wall_s"], 2) for r in runs],
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)), "input_gb": round(size / 1e9, 3),
                     "gb_per_s": round(size / 1e9 / wall, 2), "copy_gb_per_s": round(copy_yardstick(src, scratch), 2),
                     "extra_files": sorted({n for r in runs for n in r["extra_files"]})})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'conversion':<16} {'wall s':>7} {'peak RSS MB':>12} {'input GB':>9} {'GB/s':>6} {'copy GB/s':>10}  "
          f"{'temporary files':<16} runs")
    for row in rows:
        extra = ", ".join(row["extra_files"]) or "none"
        print(f"{row['conversion']:<16} {row['wall_s']:>7.2f} {row['peak_rss_mb']:>12} {row['input_gb']:>9} "
              f"{row['gb_per_s']:>6} {row['copy_gb_per_s']:>10}  {extra:<16} {row['walls']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-kernel", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = synthetic.DEFAULT_CACHE.parent / "bench-out"
    try:
        rows = conversions(args.layers, out, args.repeat)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{args.layers}-layer 2B4T-shaped model, {os.cpu_count()} CPUs, median of {args.repeat} runs")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.skip_kernel:
        subprocess.run([sys.executable, str(HERE / "bench_kernel.py")], check=True)
        subprocess.run([sys.executable, str(HERE / "bench_decode.py")], check=True)
        subprocess.run([sys.executable, str(HERE / "bench_load.py"), "--layers", str(args.layers), "--skip-old"],
                       check=True)


if __name__ == "__main__":
    main()
