"""Greedy decode speed of a 2B4T-shaped BitNetModel built in memory (no files).

    python benches/bench_decode.py [--steps 32] [--threads 2] [--backends avx2 avx512vnni]
                                   [--layers 30] [--f32-head]

Shapes of microsoft/bitnet-b1.58-2B-4T: hidden 2560, ffn 6912, 30 layers, 20 heads (5 KV),
vocab 128256; random valid I2_S bytes with beta 0.02,
bf16-valued embedding and norms, from a fixed seed. Per backend: a 16-token prompt
(prefill time), then `--steps` one-token steps (decode tokens/s), then the same steps again
with timers around the projections, the lm_head and each float op (floatops: rms_norm,
rope_tables, apply_rope, attention, activation), which split a step's milliseconds; "rest" is
the numpy glue (residual adds, reshapes, f16 rounding, the cache). `--f32-head` runs the
lm_head as the float32 product (floatops.f32_matmul), for comparison.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bitnet_pack.engine import floatops, kernel, model
from bitnet_pack.engine.model import BitNetModel, HalfTensor

CONFIG = {"model_type": "bitnet", "hidden_act": "relu2", "hidden_size": 2560, "intermediate_size": 6912,
          "num_hidden_layers": 30, "num_attention_heads": 20, "num_key_value_heads": 5,
          "vocab_size": 128256, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
PROMPT = 16
SEED = 2025


def random_words(rng: np.random.Generator, count: int, dtype: type) -> np.ndarray:
    return np.frombuffer(rng.bytes(count * np.dtype(dtype).itemsize), dtype).copy()


def bf16_values(rng: np.random.Generator, shape: tuple[int, ...], exponent: int) -> np.ndarray:
    """float32 values that are bf16: random sign and 7-bit mantissa, exponent `exponent` or
    one above (e.g. 120: magnitudes in [2^-7, 2^-5))."""
    words = random_words(rng, int(np.prod(shape)), np.uint16).reshape(shape)
    words &= np.uint16(0x80FF)
    words |= np.uint16((exponent & 0xFE) << 7)
    return (words.astype(np.uint32) << 16).view(np.float32)


# byte -> a byte whose four 2-bit fields are 0, 1 or 2 (codes -1, 0, +1); nearly uniform
_DIGITS = np.arange(256) % 81
VALID_BYTE = (_DIGITS // 27 % 3 << 6 | _DIGITS // 9 % 3 << 4 | _DIGITS // 3 % 3 << 2 | _DIGITS % 3).astype(np.uint8)


def random_i2s(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> kernel.PackedMatrix:
    body = shape[0] * shape[1] // 4
    blob = np.zeros(body + 32, np.uint8)
    blob[:body] = VALID_BYTE[random_words(rng, body, np.uint8)]
    blob[body: body + 4] = np.array([beta], "<f4").view(np.uint8)
    return kernel.PackedMatrix.from_bytes("i2_s", blob, shape)


def build_model(layers: int, numerics: str = "reference") -> BitNetModel:
    rng = np.random.default_rng(SEED)
    config = dict(CONFIG, num_hidden_layers=layers)
    shapes = model.ModelConfig.from_hf(config).tensor_shapes()
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("_proj.weight"):
            weights[name] = random_i2s(rng, shape, 0.02)
        elif name == "model.embed_tokens.weight":
            weights[name] = bf16_values(rng, shape, 120)
        else:
            weights[name] = np.abs(bf16_values(rng, shape, 126))  # norms: 0.5 .. 2
    return BitNetModel(config, weights, numerics=numerics)


class Timers:
    """Wraps the projections (model.ternary_linear), the lm_head (BitNetModel._logits) and
    each float op of floatops with timers; `seconds[part]` accumulates."""

    FLOAT_OPS = ("rms_norm", "rope_tables", "apply_rope", "attention", "activation")

    def __init__(self, bitnet: BitNetModel):
        self.bitnet, self.seconds, self._saved = bitnet, {}, []

    def _wrap(self, owner: object, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args):
            t0 = time.perf_counter()
            try:
                return original(*args)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t0

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds = {}

    def __enter__(self) -> Timers:
        self._wrap(model, "ternary_linear", "projections")
        self._wrap(self.bitnet, "_logits", "lm_head")
        for op in self.FLOAT_OPS:
            self._wrap(floatops, op, op)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            if owner is self.bitnet:
                del self.bitnet._logits
            else:
                setattr(owner, name, original)


def decode(bitnet: BitNetModel, steps: int, timers: Timers | None = None) -> tuple[float, float, list[int]]:
    """(prefill seconds, decode seconds, ids); `timers` count the decode steps only."""
    prompt = [int(i) for i in np.random.default_rng(SEED).integers(0, CONFIG["vocab_size"], PROMPT)]
    t0 = time.perf_counter()
    logits = bitnet.prefill(prompt)
    prefill = time.perf_counter() - t0
    ids = [int(np.argmax(logits))]
    if timers:
        timers.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        ids.append(int(np.argmax(bitnet.step(ids[-1]))))
    return prefill, time.perf_counter() - t0, ids


def run_backend(bitnet: BitNetModel, backend: str, steps: int) -> None:
    with kernel.use_backend(backend):
        decode(bitnet, 2)  # warm: pool threads, page faults
        prefill, seconds, ids = decode(bitnet, steps)
        with Timers(bitnet) as timers:
            _, timed_seconds, timed_ids = decode(bitnet, steps, timers)
    assert timed_ids == ids, "the timed run decoded other tokens"
    per_token = 1000 * timed_seconds / steps
    parts = {part: 1000 * sec / steps for part, sec in timers.seconds.items()}
    rest = per_token - sum(parts.values())
    split = ", ".join(f"{part} {ms:.2f}" for part, ms in parts.items())
    print(f"{backend:>11}  prefill {PROMPT} tokens {prefill * 1000:7.1f} ms   decode {steps / seconds:6.2f} tok/s "
          f"({1000 * seconds / steps:6.1f} ms/token)\n             per token (ms): {split}, rest {rest:.2f} "
          f"(timed {per_token:.1f} ms/token)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=CONFIG["num_hidden_layers"])
    parser.add_argument("--backends", nargs="*", default=[kernel.BACKEND],
                        help=f"any of {', '.join(kernel.available_backends())} (default: {kernel.BACKEND})")
    parser.add_argument("--f32-head", action="store_true", help="float32 lm_head (floatops.f32_matmul), for comparison")
    args = parser.parse_args()
    kernel.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bitnet = build_model(args.layers)
    if args.f32_head:
        bitnet.lm_head = bitnet.embedding = np.asarray(bitnet.embedding)
    head = bitnet.lm_head
    kind = head.kind if isinstance(head, HalfTensor) else "float32 numpy"
    print(f"2B4T-shaped model, {args.layers} layers, lm_head {kind}, built in {time.perf_counter() - t0:.1f} s; "
          f"{args.threads} threads, {args.steps} decode steps after a {PROMPT}-token prompt")
    for backend in args.backends:
        run_backend(bitnet, backend, args.steps)


if __name__ == "__main__":
    main()
