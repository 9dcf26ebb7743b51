"""Test helpers for downstream projects: assertions, golden traces, hypothesis strategies.

    from bitnet_pack.proof.testing import layout_weights, assert_layout_round_trips
    @given(layout_weights("i2_s"))
    def test_my_i2s_reader(weight):
        blob = assert_layout_round_trips("i2_s", weight)
        assert my_reader(blob, weight.shape) == ...

The assertions and traces need only bitnet-pack itself; the strategies need hypothesis
(`pip install 'bitnet-pack[testing]'`), imported the first time one of them is asked for.
"""
from __future__ import annotations

from importlib.util import find_spec

from .assertions import (
    assert_layout_round_trips,
    assert_round_trips,
    assert_same_checkpoint,
    assert_same_ternary,
)
from .traces import assert_matches_trace, load_model, load_trace, record_trace

STRATEGIES = ("accepted_shapes", "betas", "layout_shapes", "layout_weights", "mutated_bytes", "ternary_codes",
              "ternary_weights")

__all__ = ["assert_layout_round_trips", "assert_matches_trace", "assert_round_trips", "assert_same_checkpoint",
           "assert_same_ternary", "load_model", "load_trace", "record_trace"]
if find_spec("hypothesis") is not None:  # `import *` works in a plain install too
    __all__ += STRATEGIES


def __getattr__(name: str) -> object:
    """The strategies, imported on first use so that a plain install (no hypothesis) can
    import this package for its assertions and traces."""
    if name not in STRATEGIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import strategies
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ImportError(f"bitnet_pack.proof.testing.{name} is a hypothesis strategy and hypothesis is not "
                          f"installed: pip install 'bitnet-pack[testing]'") from None
    return getattr(strategies, name)
