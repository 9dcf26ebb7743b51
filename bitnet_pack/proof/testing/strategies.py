"""Hypothesis strategies for ternary tensors (reusable by other projects' test suites).

    from bitnet_pack.proof.testing import ternary_weights
    @given(ternary_weights(col_multiple=128))
    def test_my_kernel(weight): ...
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ...formats.dtypes import round_to_bf16
from ...formats.ternary import TernaryWeight


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
    return values.map(lambda v: _bf16_scalar(v) if bf16 else np.float32(v))


def _bf16_scalar(value: float) -> np.float32:
    """A scalar (round_to_bf16 returns an array, which would make beta an array too)."""
    return np.float32(round_to_bf16(value).reshape(-1)[0])


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


ROW_CANDIDATES = (1, 3, 4, 16, 32, 48, 64, 96, 128, 160, 256)


def accepted_shapes(layout: str, *, max_rows: int = 256, max_cols: int = 1024) -> list[tuple[int, int]]:
    """Small [out, in] shapes `layout` accepts (its `check_shape` rules, TL tilings included);
    odd row counts are among them where the layout allows them."""
    from ...errors import ShapeError
    from ...formats.layouts import get_layout

    chosen = get_layout(layout)
    step = 32 if chosen.spec.block_size < 32 else chosen.spec.block_size
    valid = []
    for rows in (r for r in ROW_CANDIDATES if r <= max_rows):
        for cols in range(step, max_cols + 1, step):
            try:
                chosen.check_shape((rows, cols))
            except ShapeError:
                continue
            valid.append((rows, cols))
    return valid


def layout_shapes(layout: str, *, max_rows: int = 256, max_cols: int = 1024) -> st.SearchStrategy[tuple[int, int]]:
    """A strategy over `accepted_shapes`."""
    valid = accepted_shapes(layout, max_rows=max_rows, max_cols=max_cols)
    if not valid:
        raise ValueError(f"no {layout} shape fits within {max_rows}x{max_cols}")
    return st.sampled_from(valid)


@st.composite
def layout_weights(draw, layout: str, *, max_rows: int = 256, max_cols: int = 1024,
                   bf16_beta: bool = True) -> TernaryWeight:
    """A TernaryWeight `layout` can encode: an accepted shape, and by default a bf16 beta in
    fp16's normal range, which every layout stores exactly (TQ's fp16 d included)."""
    rows, cols = draw(layout_shapes(layout, max_rows=max_rows, max_cols=max_cols))
    beta = draw(betas(bf16_beta))
    return TernaryWeight(draw(ternary_codes(rows, cols)), beta)


@st.composite
def mutated_bytes(draw, data: bytes, *, region: tuple[int, int] | None = None, max_edits: int = 6,
                  truncate: bool = True) -> bytes:
    """`data` with up to `max_edits` bytes overwritten inside `region` (default: all of it) and,
    optionally, cut short: for fuzzing readers with damaged headers."""
    start, end = region if region is not None else (0, len(data))
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        out[draw(st.integers(start, max(start, end - 1)))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(out)))) if truncate else None
    return bytes(out[:cut])
