"""Golden traces as assertions for other projects' test suites (`bitnet-pack verify --record
/ --against` as functions).

    from bitnet_pack.proof.testing import assert_matches_trace, record_trace
    record_trace("model-i2_s.gguf", "golden.npz", [1, 15, 27], n_tokens=16)   # once, committed
    assert_matches_trace("converted-i2_s.gguf", "golden.npz")                  # in CI
"""
from __future__ import annotations

from pathlib import Path

from ..trace import Trace, load_trace, record, save_trace, verify_trace
from ..verify import VerifyReport

__all__ = ["assert_matches_trace", "load_model", "load_trace", "record_trace"]


def load_model(model: object, numerics: str = "reference", **read_options: object):
    """A BitNetModel as given, or loaded from a checkpoint path (directory, .gguf, .safetensors)."""
    from ...engine.model import BitNetModel

    if isinstance(model, BitNetModel):
        return model
    from ...pipeline.sources import load_weights

    config, weights = load_weights(model, **read_options)
    return BitNetModel(config, weights, numerics=numerics)


def record_trace(model: object, path: str | Path, prompt_ids: list[int], n_tokens: int = 16, *,
                 numerics: str = "reference", force: bool = False, **read_options: object) -> Trace:
    """Greedy-decode `model` (a BitNetModel or a checkpoint path) and write the trace to `path`."""
    trace = record(load_model(model, numerics, **read_options), prompt_ids, n_tokens)
    inputs = [] if not isinstance(model, (str, Path)) else [Path(model)]
    save_trace(trace, path, force=force, inputs=inputs)
    return trace


def assert_matches_trace(model: object, trace: Trace | str | Path, *, numerics: str | None = None,
                         atol: float = 0.0, **read_options: object) -> VerifyReport:
    """`model` gives the trace's logits bit for bit (or within `atol`), fed the trace's prompt
    and ids; else an AssertionError with the first differing step and position. A path is
    loaded with `numerics`, by default the trace's own."""
    recorded = trace if isinstance(trace, Trace) else load_trace(trace)
    loaded = load_model(model, numerics or recorded.numerics or "reference", **read_options)
    report = verify_trace(loaded, recorded, atol=atol)
    if not report.ok:
        first = report.first_divergence or report.first_token_mismatch
        step = "prompt" if first.step is None else f"step {first.step}"
        raise AssertionError(f"{model} differs from the trace at {step}, position {first.position}: "
                             f"max |diff| {first.max_abs_diff:.4g}, argmax trace {first.token_a} / model "
                             f"{first.token_b}; {report.cause}")
    return report
