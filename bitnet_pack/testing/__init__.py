"""Test helpers for downstream projects: hypothesis strategies and assertions.

    from bitnet_pack.testing import layout_weights, assert_layout_round_trips
    @given(layout_weights("i2_s"))
    def test_my_i2s_reader(weight):
        blob = assert_layout_round_trips("i2_s", weight)
        assert my_reader(blob, weight.shape) == ...
"""
from .assertions import (
    assert_layout_round_trips,
    assert_round_trips,
    assert_same_checkpoint,
    assert_same_ternary,
)
from .strategies import (
    accepted_shapes,
    betas,
    layout_shapes,
    layout_weights,
    mutated_bytes,
    ternary_codes,
    ternary_weights,
)

__all__ = ["accepted_shapes", "assert_layout_round_trips", "assert_round_trips", "assert_same_checkpoint",
           "assert_same_ternary", "betas", "layout_shapes", "layout_weights", "mutated_bytes", "ternary_codes",
           "ternary_weights"]
