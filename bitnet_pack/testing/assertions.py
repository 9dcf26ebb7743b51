"""Assertions with messages that say where two ternary tensors differ."""
from __future__ import annotations

import numpy as np

from ..ternary import TernaryWeight


def assert_same_ternary(actual: TernaryWeight, expected: TernaryWeight, name: str = "tensor") -> None:
    """Codes equal element for element and beta equal bit for bit, or an AssertionError
    naming the first differing position and the counts."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    differ = np.argwhere(actual.codes != expected.codes)
    if differ.size:
        row, col = differ[0]
        raise AssertionError(f"{name}: {len(differ)} codes differ, first at [{row}, {col}]: "
                             f"{actual.codes[row, col]} != {expected.codes[row, col]}")
    a, e = np.float32(actual.beta), np.float32(expected.beta)
    assert a.tobytes() == e.tobytes(), f"{name}: beta {float(a)!r} != {float(e)!r}"
