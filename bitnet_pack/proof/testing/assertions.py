"""Assertions with messages that say where two ternary tensors, layouts or checkpoints differ."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...formats.ternary import TernaryWeight


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


def assert_layout_round_trips(layout: str, weight: TernaryWeight, **options: object) -> np.ndarray:
    """encode -> decode gives `weight` back exactly, the blob has the planned size, and the
    caller's codes are untouched; returns the encoded bytes (e.g. to compare with a peer's)."""
    from ...formats.layouts import get_layout

    chosen = get_layout(layout)
    before = weight.codes.copy()
    blob = chosen.encode(weight, **options)
    assert blob.nbytes == chosen.nbytes(weight.shape), \
        f"{layout}: encode gave {blob.nbytes} bytes, nbytes() plans {chosen.nbytes(weight.shape)}"
    assert np.array_equal(weight.codes, before), f"{layout}: encode modified the caller's codes"
    decode_options = {k: v for k, v in options.items() if k == "tiling"}
    # beta travels outside the bytes (hf), or cannot be in them (TQ blocks that are all zero)
    beta = weight.beta if not chosen.embeds_scale or not weight.codes.any() else None
    assert_same_ternary(chosen.decode(blob, weight.shape, beta=beta, **decode_options), weight,
                        f"{layout} {list(weight.shape)}")
    return blob


def assert_same_checkpoint(a: str | Path, b: str | Path, *, strict: bool = False) -> None:
    """Every tensor of checkpoints A and B equal in ternary space (codes, beta bits, float
    bits; any containers and layouts) after the roundings their storage declares (TQ's fp16
    beta, a bf16 weight_scale, an F16 embedding; `strict`: none), or an AssertionError with
    the cause per tensor."""
    from ..diff import diff_checkpoints

    report = diff_checkpoints(a, b, strict=strict)
    if not report.identical:
        raise AssertionError(f"{a} and {b} differ: {report.cause()}")


def assert_round_trips(model: str | Path, layouts: list[str] | None = None, *, n_tokens: int = 2) -> None:
    """`bitnet-pack roundtrip` as an assertion: every fitting layout there and back, exactly
    (scales rounded only to the layout's own type); the message names layout and tensor."""
    from ..roundtrip import roundtrip

    report = roundtrip(model, layouts, n_tokens=n_tokens)
    if not report.ok:
        raise AssertionError("; ".join(r.reason for r in report.broken))
