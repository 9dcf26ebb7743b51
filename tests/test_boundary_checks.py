"""The Cython boundary checks every length and shape it hands to C, with the project's typed
errors, and the checks are real code: they hold under `python -O` (asserts would vanish)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import bitnet_pack.engine.floatops as floatops
import bitnet_pack.engine.kernel as kernel
import bitnet_pack.formats.fastpath as fastpath
from bitnet_pack.errors import ShapeError, UsageError

compiled_kernel = pytest.mark.skipif(kernel._ext is None, reason="pure mode: no compiled kernel")
compiled_convert = pytest.mark.skipif(fastpath._ext is None, reason="pure mode: no compiled converter")


def f32(*shape: int) -> np.ndarray:
    return np.ones(shape, np.float32)


def test_activation_with_mismatched_gate_and_up_is_refused() -> None:
    """Before: the compiled path multiplied len(gate) values of up, reading past a shorter up."""
    for kind in ("relu2", "silu"):
        with pytest.raises(ShapeError, match=r"gate \[2, 8\] and up \[2, 6\]"):
            floatops.activation(f32(2, 8), f32(2, 6), kind)


@compiled_kernel
@pytest.mark.parametrize(("call", "match"), [
    (lambda ext: ext.activation(f32(8), f32(6), 0, f32(8)), "gate 8, up 6 and out 8"),
    (lambda ext: ext.activation(f32(8), f32(8), 0, f32(4)), "gate 8, up 8 and out 4"),
    (lambda ext: ext.rms_norm(f32(2, 8), f32(7), 1e-5, f32(2, 8)), "8 features but a weight of 7"),
    (lambda ext: ext.rms_norm(f32(2, 8), f32(8), 1e-5, f32(1, 8)), r"output of \[2, 8\], got \[1, 8\]"),
    (lambda ext: ext.f32_matmul(f32(5, 8), f32(3, 7), f32(3, 5)), "activations have 7 columns"),
    (lambda ext: ext.f32_matmul(f32(5, 8), f32(3, 8), f32(3, 4)), r"output of \[3, 5\], got \[3, 4\]"),
    (lambda ext: ext.expf_array(f32(8), f32(7)), r"lengths \[8, 7\] differ"),
    (lambda ext: ext.sincos_array(f32(8), f32(8), f32(9)), r"lengths \[8, 8, 9\] differ"),
    (lambda ext: ext.rope_tables(np.arange(4, dtype=np.int64), 8, 10000.0, 0, f32(4, 3), f32(4, 4)),
     r"output of \[4, 4\], got \[4, 3\]"),
    (lambda ext: ext.quantize("scalar", f32(3, 8), np.zeros((3, 7), np.int8), f32(3)), r"got \[3, 7\]"),
    (lambda ext: ext.quantize("scalar", f32(3, 8), np.zeros((3, 8), np.int8), f32(2)), "need 3 scales, got 2"),
    (lambda ext: ext.half_matmul("scalar", "bf16", np.zeros((5, 8), np.uint16), f32(2, 6), f32(2, 5)),
     "activations have 6 columns"),
])
def test_the_kernel_wrappers_refuse_lengths_the_c_would_overrun(call, match) -> None:
    with pytest.raises(ShapeError, match=match):
        call(kernel._ext)


@compiled_convert
@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda ext: ext.i2s_encode(np.zeros(256, np.int8), 128, np.zeros(63, np.uint8)), ShapeError,
     "256 codes need 64 bytes, out holds 63"),
    (lambda ext: ext.i2s_decode(np.zeros(60, np.uint8), 128, np.zeros(256, np.int8)), ShapeError,
     "256 codes need 64 bytes, src holds 60"),
    (lambda ext: ext.i2s_encode(np.zeros(200, np.int8), 128, np.zeros(64, np.uint8)), ShapeError,
     "200 codes are not whole blocks of 128"),
    (lambda ext: ext.tq2_encode(np.zeros(256, np.int8), 0, np.zeros(65, np.uint8)), ShapeError,
     "need 66 bytes, got 65"),
    (lambda ext: ext.tq1_decode(np.zeros(54, np.uint8), np.zeros(300, np.int8)), ShapeError,
     "300 codes"),
    (lambda ext: ext.hf_decode_plane(np.zeros(8, np.uint8), 4, np.zeros(8, np.int8)), ShapeError,
     "plane 4"),
    (lambda ext: ext.ternarize_f32(np.zeros(8, np.uint32), 0, np.zeros(7, np.int8)), ShapeError,
     "8 weights but 7 codes"),
    (lambda ext: ext.i2s_to_hf(np.zeros(63, np.uint8), 2, 128, 128, 0, 1, np.zeros(128, np.uint8)), ShapeError,
     "has 64 code bytes, body holds 63"),
    (lambda ext: ext.bf16_to_hf(np.zeros(256, np.uint16), 2, 128, 0, 0, 2, np.zeros(128, np.uint8)), ShapeError,
     r"rows \[0, 2\) must lie in \[0, 1\]"),
    (lambda ext: ext.ternary_threshold_f32(0.0), UsageError, "scale must be > 0"),
])
def test_the_converter_wrappers_refuse_bad_sizes(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(fastpath._ext)


OPTIMIZED = """
import sys
import numpy as np
import bitnet_pack.formats.fastpath as fastpath
import bitnet_pack.engine.kernel as kernel
from bitnet_pack.errors import ShapeError
assert sys.flags.optimize == 1
calls = []
if fastpath._ext is not None:
    calls += [lambda: fastpath._ext.i2s_encode(np.zeros(256, np.int8), 128, np.zeros(8, np.uint8)),
              lambda: fastpath._ext.tq2_decode(np.zeros(10, np.uint8), np.zeros(256, np.int8))]
if kernel._ext is not None:
    f = np.ones(8, np.float32)
    calls += [lambda: kernel._ext.activation(f, f[:5], 0, f.copy())]
for call in calls:
    try:
        call()
    except ShapeError:
        print("ShapeError")
    else:
        print("no error")
"""


def test_the_checks_hold_under_python_dash_o() -> None:
    result = subprocess.run([sys.executable, "-O", "-c", OPTIMIZED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split()
    assert lines == ["ShapeError"] * len(lines)
    expected = 2 * (fastpath._ext is not None) + (kernel._ext is not None)
    assert len(lines) == expected
