"""Test helpers for downstream projects: hypothesis strategies and assertions.

    from bitnet_pack.testing import layout_weights, assert_layout_round_trips
    @given(layout_weights("i2_s"))
    def test_my_i2s_reader(weight):
        blob = assert_layout_round_trips("i2_s", weight)
        assert my_reader(blob, weight.shape) == ...

The assertions need only numpy; the strategies need hypothesis (`pip install
'bitnet-pack[testing]'`), imported on first use so a plain install can still import this.
"""
from __future__ import annotations

from .assertions import (
    assert_layout_round_trips,
    assert_round_trips,
    assert_same_checkpoint,
    assert_same_ternary,
)

STRATEGIES = ("accepted_shapes", "betas", "layout_shapes", "layout_weights", "mutated_bytes", "ternary_codes",
              "ternary_weights")


def __getattr__(name: str) -> object:
    if name not in STRATEGIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import strategies
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ImportError(f"bitnet_pack.testing.{name} needs hypothesis: pip install 'bitnet-pack[testing]'") from None
    return getattr(strategies, name)

__all__ = ["accepted_shapes", "assert_layout_round_trips", "assert_round_trips", "assert_same_checkpoint",
           "assert_same_ternary", "betas", "layout_shapes", "layout_weights", "mutated_bytes", "ternary_codes",
           "ternary_weights"]
