"""Time to load a 2B4T-shaped GGUF for a decode: the model ready to run its first token.

    python benches/bench_load.py [--layers 30] [--layouts i2_s tl2] [--repeat 3]

The files are made once from `synthetic.py`'s checkpoint (cached beside it). Per layout, on
a warm page cache (the file is read once before): "own bytes" is what `verify` and
`generate` do, `read_weights(stored=True)` and `BitNetModel` over the mapped tensors
(checks of the bytes, no decode); "decode + re-encode" is the former way, every projection
decoded to codes and packed again as I2_S (the embedding through float32), once. "own
bytes" is the median of `--repeat` loads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402

from bitnet_pack.engine.model import BitNetModel  # noqa: E402
from bitnet_pack.pipeline.sources import open_checkpoint, read_weights  # noqa: E402


def ensure_gguf(layers: int, layout: str) -> Path:
    path = synthetic.DEFAULT_CACHE / f"bitnet-2b4t-shaped-{layers}l-{layout}.gguf"
    if not path.is_file():
        from bitnet_pack.pipeline.convert import convert
        from bitnet_pack.pipeline.sinks.factory import make_sink

        with open_checkpoint(synthetic.ensure(layers=layers)["packed"]) as source:
            convert(source, make_sink(path, layout, force=True))
    return path


def load_seconds(path: Path, stored: bool) -> float:
    start = time.perf_counter()
    with open_checkpoint(path) as source:
        BitNetModel(source.config, read_weights(source, stored=stored))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--layouts", nargs="+", default=["i2_s", "tl2"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-old", action="store_true", help="only the own-bytes load")
    args = parser.parse_args()
    print(f"load for a decode, {args.layers}-layer 2B4T-shaped GGUF, load average {os.getloadavg()[0]:.1f}")
    print(f"{'layout':<8}{'file GB':>9}{'own bytes s':>13}{'decode + re-encode s':>22}")
    for layout in args.layouts:
        path = ensure_gguf(args.layers, layout)
        synthetic_warm(path)
        own = statistics.median(load_seconds(path, True) for _ in range(args.repeat))
        old = "skipped" if args.skip_old else f"{load_seconds(path, False):.2f}"
        print(f"{layout:<8}{path.stat().st_size / 1e9:>9.2f}{own:>13.2f}{old:>22}")


def synthetic_warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


if __name__ == "__main__":
    main()
