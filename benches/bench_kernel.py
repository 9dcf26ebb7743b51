"""Kernel throughput on the BitNet b1.58 2B4T projection shapes, every layout in one run.

    python benches/bench_kernel.py [--layouts i2_s tl2 ...] [--tokens 1 128] [--backends ...]
                                   [--decode-layout i2_s] [--no-model]

Per shape and token count (1: a decode GEMV, 128: a prefill GEMM): numpy's float32 matmul on
the unpacked weights (x @ W.T, W float32 [M, K]), then `ternary_linear` on each layout's own
bytes (random codes encoded by the layout, TL tilings from `choose_tiling`) on each compiled
backend, as the fastest and the median single call. "vs i2_s" is the I2_S kernel's fastest
time on the same backend over this one (above 1: faster than I2_S); "vs f32" the fastest f32
time over this one. Then one decode step of the whole model in `--decode-layout`: 30 layers
x 7 distinct projections at one token (about 521 MB of I2_S bytes, more than the caches),
which bounds decode speed.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np

from bitnet_pack.engine import kernel
from bitnet_pack.formats.layouts import layouts
from bitnet_pack.formats.ternary import TernaryWeight

SHAPES = {"q/o 2560x2560": (2560, 2560), "k/v 640x2560": (640, 2560),
          "gate/up 6912x2560": (6912, 2560), "down 2560x6912": (2560, 6912)}
LAYER = [(2560, 2560), (640, 2560), (640, 2560), (2560, 2560), (6912, 2560), (6912, 2560), (2560, 6912)]
LAYERS = 30
LAYOUTS = [layout.name for layout in layouts() if layout.spec.kernel != "generic"]  # every C walk


def random_matrix(rng: np.random.Generator, shape: tuple[int, int], layout: str) -> kernel.PackedMatrix:
    """Random codes (about a third each of -1, 0, +1), encoded by the layout; beta 0.5."""
    codes = (rng.integers(0, 3, shape, dtype=np.int8) - 1).astype(np.int8)
    return kernel.PackedMatrix.from_ternary(TernaryWeight(codes, np.float32(0.5)), layout)


def timings(fn, repeat: int, budget: float = 0.5) -> tuple[float, float]:
    """(fastest, median) single-call time over ~`budget` seconds, at least `repeat` calls.
    On a shared machine the fastest call is the kernel's own speed; the median shows what
    other processes took away."""
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < repeat or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def shape_table(args: argparse.Namespace, backends: list[str]) -> None:
    rng = np.random.default_rng(0)
    print(f"threads {kernel.num_threads()}, backends {', '.join(backends)}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'shape':<20}{'N':>5} {'layout':<10}{'backend':<12}{'fastest':>10}{'median':>10}"
          f"{'weight GB/s':>13}{'vs i2_s':>9}{'vs f32':>8}")
    for label, shape in SHAPES.items():
        matrices = {layout: random_matrix(rng, shape, layout) for layout in args.layouts}
        dense = next(iter(matrices.values())).codes().astype(np.float32) * np.float32(0.5)
        for n in args.tokens:
            x = rng.standard_normal((n, shape[1])).astype(np.float32)
            f32, f32_median = timings(partial(np.matmul, x, dense.T), args.repeat)
            print(f"{label:<20}{n:>5} {'dense f32':<10}{'numpy':<12}{f32 * 1e3:>8.3f}ms{f32_median * 1e3:>8.3f}ms"
                  f"{shape[0] * shape[1] * 4 / f32 / 1e9:>13.1f}{'':>9}{1:>8.1f}")
            for backend in backends:
                i2s = None
                for layout, matrix in matrices.items():
                    with kernel.use_backend(backend):
                        t, median = timings(partial(kernel.ternary_linear, matrix, x), args.repeat)
                    i2s = t if layout == "i2_s" else i2s
                    versus = f"{i2s / t:>9.2f}" if i2s else f"{'':>9}"
                    print(f"{'':<26}{layout:<10}{backend:<12}{t * 1e3:>8.3f}ms{median * 1e3:>8.3f}ms"
                          f"{matrix.codes_bytes.size / t / 1e9:>13.1f}{versus}{f32 / t:>8.1f}")


def decode_step(matrices: list[kernel.PackedMatrix], inputs: dict[int, np.ndarray]) -> None:
    for m in matrices:
        kernel.ternary_linear(m, inputs[m.shape[1]])


def model_step(args: argparse.Namespace, backends: list[str]) -> None:
    rng = np.random.default_rng(1)
    matrices = [random_matrix(rng, shape, args.decode_layout) for _ in range(LAYERS) for shape in LAYER]
    total = sum(m.codes_bytes.size for m in matrices)
    inputs = {k: rng.standard_normal((1, k)).astype(np.float32) for k in (2560, 6912)}
    print(f"\none decode step, {LAYERS} layers x {len(LAYER)} projections, {total / 1e6:.0f} MB of {args.decode_layout} bytes")
    for backend in backends:
        with kernel.use_backend(backend):
            t, median = timings(partial(decode_step, matrices, inputs), args.repeat, budget=3.0)
        print(f"  {backend:<12}{t * 1e3:7.1f} ms/token (median {median * 1e3:6.1f})  {total / t / 1e9:5.1f} GB/s  "
              f"projections alone bound decode at {1 / t:5.1f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=LAYOUTS, choices=LAYOUTS,
                        help="i2_s first, the others are compared with it")
    parser.add_argument("--decode-layout", default="i2_s", choices=LAYOUTS)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--backends", nargs="+", default=None,
                        help="default: the best one this CPU runs, and avx2 when that is another")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-model", action="store_true", help="skip the 30-layer decode step")
    parser.add_argument("--only-model", action="store_true", help="only the 30-layer decode step")
    args = parser.parse_args()
    if args.threads:
        kernel.set_num_threads(args.threads)
    compiled = [b for b in kernel.available_backends() if b != "numpy"]
    backends = args.backends or list(dict.fromkeys(b for b in ("avx2", compiled[-1]) if b in compiled))
    args.layouts = sorted(set(args.layouts), key=lambda name: name != "i2_s")
    if not args.only_model:
        shape_table(args, backends)
    if not args.no_model:
        model_step(args, [b for b in backends if b != "scalar"] or backends)


if __name__ == "__main__":
    main()
