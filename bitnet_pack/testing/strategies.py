"""Hypothesis strategies for ternary tensors (reusable by other projects' test suites).

    from bitnet_pack.testing import ternary_weights
    @given(ternary_weights(col_multiple=128))
    def test_my_kernel(weight): ...
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..dtypes import round_to_bf16
from ..ternary import TernaryWeight


@st.composite
def ternary_codes(draw, rows: int, cols: int) -> np.ndarray:
    """int8 codes in {-1, 0, 1} with a drawn density of zeros (all-zero and dense included)."""
    zero_share = draw(st.sampled_from([0.0, 0.1, 0.4, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1], np.int8), size=(rows, cols))
    return np.where(rng.random((rows, cols)) < zero_share, np.int8(0), signs).astype(np.int8)


def betas(bf16: bool = True) -> st.SearchStrategy[np.float32]:
    """Positive per-tensor multipliers; bf16-representable ones by default (what packed
    checkpoints store, and exactly representable in every layout)."""
    values = st.floats(2.0**-14, 60000.0, allow_nan=False, allow_infinity=False)
    return values.map(lambda v: np.float32(round_to_bf16(v)) if bf16 else np.float32(v))


@st.composite
def ternary_weights(draw, *, max_rows: int = 64, max_cols: int = 64, row_multiple: int = 1,
                    col_multiple: int = 1, bf16_beta: bool = True) -> TernaryWeight:
    """A TernaryWeight with rows a multiple of `row_multiple` (<= max_rows) and columns a
    multiple of `col_multiple` (<= max_cols blocks when col_multiple > 1)."""
    rows = draw(st.integers(1, max(1, max_rows // row_multiple))) * row_multiple
    if col_multiple > 1:
        cols = draw(st.integers(1, max(1, max_cols // col_multiple))) * col_multiple
    else:
        cols = draw(st.integers(1, max_cols))
    return TernaryWeight(draw(ternary_codes(rows, cols)), draw(betas(bf16_beta)))
