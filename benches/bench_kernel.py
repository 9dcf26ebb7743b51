"""Kernel throughput on the BitNet b1.58 2B4T projection shapes.

    python benches/bench_kernel.py [--layout i2_s|hf] [--tokens 1 32 128] [--no-model]

Per shape and token count: the time of `ternary_linear` on every compiled backend next to
numpy's float32 matmul on the unpacked weights (x @ W.T with W float32 [M, K]), as the
fastest and the median single call; weight GB/s counts the packed bytes (M*K/4) read once
per call; "vs f32" is the fastest f32 time over the fastest kernel time. Then one decode step of the whole model: 30 layers x 7 distinct projections at one
token (about 521 MB of I2_S bytes, more than the caches), which bounds decode speed.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np

from bitnet_pack import kernel

SHAPES = {"q/o 2560x2560": (2560, 2560), "k/v 640x2560": (640, 2560),
          "gate/up 6912x2560": (6912, 2560), "down 2560x6912": (2560, 6912)}
LAYER = [(2560, 2560), (640, 2560), (640, 2560), (2560, 2560), (6912, 2560), (6912, 2560), (2560, 6912)]
LAYERS = 30


def random_matrix(rng: np.random.Generator, shape: tuple[int, int], layout: str) -> kernel.PackedMatrix:
    """Random valid bytes (every 2-bit field 0, 1 or 2) without going through encode."""
    digits = np.arange(81)
    table = ((digits // 27 % 3) << 6 | (digits // 9 % 3) << 4 | (digits // 3 % 3) << 2 | digits % 3).astype(np.uint8)
    m, k = shape
    beta = np.float32(1.5)
    if layout == "hf":
        return kernel.PackedMatrix("hf", table[rng.integers(0, 81, ((m + 3) // 4, k), dtype=np.uint8)], shape, beta)
    blob = np.zeros(m * k // 4 + 32, np.uint8)
    blob[: m * k // 4] = table[rng.integers(0, 81, m * k // 4, dtype=np.uint8)]
    blob[m * k // 4: m * k // 4 + 4] = np.array([beta], "<f4").view(np.uint8)
    return kernel.PackedMatrix.from_bytes("i2_s", blob, shape)


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
    print(f"layout {args.layout}, threads {kernel.num_threads()}, backends {', '.join(backends)}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'shape':<20}{'N':>5} {'backend':<12}{'fastest':>10}{'median':>10}{'weight GB/s':>13}{'vs f32':>8}")
    for label, shape in SHAPES.items():
        matrix = random_matrix(rng, shape, args.layout)
        dense = matrix.codes().astype(np.float32) * matrix.beta
        packed_bytes = shape[0] * shape[1] / 4
        for n in args.tokens:
            x = rng.standard_normal((n, shape[1])).astype(np.float32)
            f32, f32_median = timings(partial(np.matmul, x, dense.T), args.repeat)
            print(f"{label:<20}{n:>5} {'numpy f32':<12}{f32 * 1e3:>8.3f}ms{f32_median * 1e3:>8.3f}ms"
                  f"{shape[0] * shape[1] * 4 / f32 / 1e9:>13.1f}{1:>8.1f}")
            for backend in backends:
                with kernel.use_backend(backend):
                    t, median = timings(partial(kernel.ternary_linear, matrix, x), args.repeat)
                print(f"{'':<25} {backend:<12}{t * 1e3:>8.3f}ms{median * 1e3:>8.3f}ms"
                      f"{packed_bytes / t / 1e9:>13.1f}{f32 / t:>8.1f}")


def decode_step(matrices: list[kernel.PackedMatrix], inputs: dict[int, np.ndarray]) -> None:
    for m in matrices:
        kernel.ternary_linear(m, inputs[m.shape[1]])


def model_step(args: argparse.Namespace, backends: list[str]) -> None:
    rng = np.random.default_rng(1)
    matrices = [random_matrix(rng, shape, args.layout) for _ in range(LAYERS) for shape in LAYER]
    total = sum(m.codes_bytes.size for m in matrices)
    inputs = {k: rng.standard_normal((1, k)).astype(np.float32) for k in (2560, 6912)}
    print(f"\none decode step, {LAYERS} layers x {len(LAYER)} projections, {total / 1e6:.0f} MB of {args.layout} bytes")
    for backend in backends:
        with kernel.use_backend(backend):
            t, median = timings(partial(decode_step, matrices, inputs), args.repeat, budget=3.0)
        print(f"  {backend:<12}{t * 1e3:7.1f} ms/token (median {median * 1e3:6.1f})  {total / t / 1e9:5.1f} GB/s  "
              f"projections alone bound decode at {1 / t:5.1f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="i2_s", choices=["i2_s", "hf"])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--backends", nargs="+", default=None, help="default: every compiled one")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-model", action="store_true", help="skip the 30-layer decode step")
    parser.add_argument("--only-model", action="store_true", help="only the 30-layer decode step")
    args = parser.parse_args()
    if args.threads:
        kernel.set_num_threads(args.threads)
    backends = args.backends or [b for b in kernel.available_backends() if b != "numpy"]
    if not args.only_model:
        shape_table(args, backends)
    if not args.no_model:
        model_step(args, [b for b in backends if b != "scalar"] or backends)


if __name__ == "__main__":
    main()
