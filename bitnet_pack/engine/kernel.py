"""Ternary x int8 products straight from packed bytes.

`ternary_linear(matrix, x)` computes, per token row of x (bitnet.cpp's I2_S semantics):

    q, s = absmax int8 quantization of x        (ternary.quantize_activations)
    acc  = sum_k t[m, k] * q[k]                 (exact int32)
    y[m] = float32(acc) / s * beta              (float32, in this order)

A layout with a C walk of its own (its entry's `kernel` and `kernel_id`) is read as
stored: `PackedMatrix` holds a tensor's own bytes, often a read-only view of a mapped file,
and the kernel walks them; nothing is decoded or re-encoded. `kernel_formats.py` describes
each walk's bytes, where beta is (TQ: the blocks' one non-zero d) and which byte values are
refused, and keeps the numpy reading of the bytes the reference products use. A layout whose
entry says `kernel="generic"` is decoded once by its own `decode` (which refuses bad bytes)
and multiplied through the hf walk: the same products, from codes the kernel did not read.
A layout with `kernel_rows` (a `RowOrder`) is another walk's tile with its rows in
another order: that walk reads its code bytes in place, and the outputs are put in row order.

The compiled kernel (`bitnet_pack.engine._kernels`, built from kernels/) sums code * q and
subtracts sum(q) (TL: adds table entries of t * q); it is tested bit for bit against the
numpy reference kept here (`reference_*`). `half_matmul` is the float product of the model's lm_head over 16-bit
(bf16 / f16) weights, in a fixed float32 summation order (see its section below).
Backends: "numpy" (the reference), "scalar", "avx2", "avx512", "avx512vnni"; at import
the best one this CPU runs is chosen (`BACKEND`).

Environment, read once at import:
    BITNET_PACK_PUREPYTHON=1   skip the extension: every function runs the numpy reference
    BITNET_PACK_CPU=<backend>  start on that backend; one the build or CPU lacks warns
                               (RuntimeWarning) and falls back to the best available
    BITNET_PACK_THREADS=N      threads of the pool (default: the CPUs this process may use)
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, NonFiniteActivation, NotTernary, ShapeError, UsageError
from ..formats.kernel_config import Tiling, resolve_tiling
from ..formats.kernel_formats import (
    RowOrder,
    beta_in_bytes,
    byte_problems,
    count_run,
    reference_codes,
    walk_of,
)
from ..formats.layouts import Layout, get_layout
from ..formats.ternary import TernaryWeight
from ..formats.ternary import quantize_activations as _numpy_quantize
from ..formats.ternary import stored_beta as checked_beta

__all__ = ["BACKEND", "HALF_KINDS", "NonFiniteActivation", "PackedMatrix", "available_backends", "exact_half_bits",
           "half_matmul", "half_to_float32", "num_threads",
           "quantize_activations", "reference_half_matmul", "reference_linear", "reference_matmul_int",
           "reference_quantize_activations", "set_backend",
           "set_num_threads", "ternary_linear", "ternary_matmul_int", "use_backend"]

GENERIC_WALK = "hf"  # the walk of layouts whose entry says kernel="generic": any [M, K], beta given
MAX_IN_FEATURES = 1 << 16  # the kernel's int32 lanes hold code << 6 sums (see isa_avx512vnni.c)



def _load_extension() -> object | None:
    if os.environ.get("BITNET_PACK_PUREPYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _kernels
    except ImportError as exc:
        warnings.warn(f"bitnet_pack.engine._kernels is not built ({exc}); using the slow numpy reference",
                      RuntimeWarning, stacklevel=3)
        return None
    return _kernels


_ext = _load_extension()


def available_backends() -> tuple[str, ...]:
    """Backends this build and CPU run, slowest first; "numpy" is always there."""
    return ("numpy",) + (tuple(_ext.supported_backends()) if _ext else ())


def _best() -> str:
    return _ext.best_backend() if _ext else "numpy"


def _initial_backend() -> str:
    wanted = os.environ.get("BITNET_PACK_CPU", "").strip().lower()
    if not wanted:
        return _best()
    if wanted not in available_backends():
        warnings.warn(f"BITNET_PACK_CPU={wanted} is not available here (available: "
                      f"{', '.join(available_backends())}); using {_best()}", RuntimeWarning, stacklevel=3)
        return _best()
    return wanted


BACKEND = _initial_backend()
if _ext and os.environ.get("BITNET_PACK_THREADS", "").strip().isdigit() and int(os.environ["BITNET_PACK_THREADS"]) > 0:
    _ext.set_threads(int(os.environ["BITNET_PACK_THREADS"]))


def set_backend(name: str) -> None:
    """Run every following product on `name` (one of `available_backends()`)."""
    global BACKEND
    if name not in available_backends():
        raise UsageError(f"backend {name!r} is not available here; available: {', '.join(available_backends())}")
    BACKEND = name


@contextmanager
def use_backend(name: str) -> Iterator[str]:
    """`with use_backend("scalar"): ...` runs the block on that backend, then restores."""
    previous = BACKEND
    set_backend(name)
    try:
        yield name
    finally:
        set_backend(previous)


def set_num_threads(n: int) -> None:
    """Threads for large products (the caller included); the default is one per CPU this
    process may use."""
    if n < 1:
        raise UsageError(f"thread count must be >= 1, got {n}")
    if _ext:
        _ext.set_threads(n)


def num_threads() -> int:
    return _ext.get_threads() if _ext else 1


@dataclass(frozen=True, eq=False)
class PackedMatrix:
    """A weight as a layout stores it, which the kernel multiplies from directly: `data` is the
    tensor's bytes (flat uint8; hf: uint8 [ceil(M/4), K]), possibly a read-only view of a
    mapped file; `tiling` is the (BM, BK, bm) of a tiled layout's bytes. See kernel_formats.py.
    `walk` / `kernel_id` are the kernel walk the layout's entry names (a generic layout's:
    hf's, over `codes_bytes` encoded from its decoded codes)."""

    layout: str  # a registered layout's name
    data: np.ndarray
    shape: tuple[int, int]
    beta: np.float32
    tiling: Tiling | None = None
    codes_bytes: np.ndarray = field(init=False, repr=False)  # what the kernel walks, flat
    walk: str = field(init=False, repr=False)
    kernel_id: int = field(init=False, repr=False)
    row_order: np.ndarray | None = field(init=False, repr=False, default=None)  # walk output row of row m

    def __post_init__(self) -> None:
        layout = _kernel_layout(self.layout)
        shape = tuple(int(d) for d in self.shape)
        tiling = _checked_tiling(layout, shape, self.tiling)
        if shape[1] > MAX_IN_FEATURES:
            raise ShapeError(f"the kernel takes in_features <= {MAX_IN_FEATURES}, got {shape[1]}")
        object.__setattr__(self, "layout", layout.name)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "tiling", tiling)
        object.__setattr__(self, "beta", np.float32(self.beta))
        if layout.spec.kernel == "generic":
            self._set_generic(layout)
            return
        if layout.kernel_rows is not None:
            self._set_reordered(layout, layout.kernel_rows)
            return
        object.__setattr__(self, "walk", layout.spec.kernel)
        object.__setattr__(self, "kernel_id", layout.spec.kernel_id)
        object.__setattr__(self, "data", _checked_bytes(layout, self.data, shape, tiling, self.beta))
        object.__setattr__(self, "codes_bytes", self.data.reshape(-1))

    def _set_generic(self, layout: Layout) -> None:
        """Decode once (the layout's decode refuses bad bytes and a beta other than the stored
        one), then hold the codes as the generic walk's bytes."""
        given = None if np.isnan(self.beta) else self.beta  # from_bytes without beta: the bytes say
        decoded = layout.decode(_flat_bytes(layout.name, self.data), self.shape, beta=given)
        walk = get_layout(GENERIC_WALK)
        object.__setattr__(self, "walk", walk.spec.kernel)
        object.__setattr__(self, "kernel_id", walk.spec.kernel_id)
        object.__setattr__(self, "beta", np.float32(decoded.beta))
        object.__setattr__(self, "codes_bytes", np.ascontiguousarray(walk.encode(decoded)).reshape(-1))

    def _set_reordered(self, layout: Layout, order: RowOrder) -> None:
        """Walk the code bytes in place with another walk's tile (checked as that walk checks
        them), the products taken in the layout's row order; beta from the layout's bytes."""
        flat = _flat_bytes(layout.name, self.data)
        _check_size(layout, flat, self.shape, None)
        stored = np.float32(order.beta(flat, self.shape))
        if not np.isnan(self.beta) and stored.tobytes() != self.beta.tobytes():
            raise FormatError(f"{layout.name} bytes carry beta {float(stored)!r} but beta={float(self.beta)!r} "
                              "was given")
        body = order.body(flat, self.shape)
        _refuse_problems(layout.name, layout.spec.kernel, body, self.shape, None)
        object.__setattr__(self, "walk", layout.spec.kernel)
        object.__setattr__(self, "kernel_id", layout.spec.kernel_id)
        object.__setattr__(self, "beta", stored)
        object.__setattr__(self, "codes_bytes", body)
        object.__setattr__(self, "row_order", np.asarray(order.rows(self.shape), np.intp))

    @classmethod
    def from_ternary(cls, weight: TernaryWeight, layout: str = "i2_s", tiling: Tiling | None = None) -> PackedMatrix:
        """`weight` encoded by the layout module (TL: `tiling`, default `choose_tiling`)."""
        entry = _kernel_layout(layout)
        options = {}
        if entry.spec.tiled:
            tiling = resolve_tiling(entry.name, weight.shape, tiling)
            options["tiling"] = tiling
        return cls.from_bytes(entry.name, entry.encode(weight, **options), weight.shape,
                              None if entry.embeds_scale else np.float32(weight.beta), tiling=tiling)

    @classmethod
    def from_bytes(cls, layout: str, data: np.ndarray, shape: tuple[int, int], beta: float | None = None,
                   *, tiling: Tiling | None = None) -> PackedMatrix:
        """Stored bytes as read from a file; most layouts carry beta (TQ: its blocks' d), those
        whose entry keeps it outside (hf) need `beta=`. No copy, no decode for a layout with a
        C walk: the bytes are checked and kept."""
        entry = _kernel_layout(layout)
        if beta is None and not entry.embeds_scale:
            raise UsageError(f"the {layout} layout keeps beta outside the bytes; pass beta=")
        if beta is None and (entry.spec.kernel == "generic" or entry.kernel_rows is not None):
            return cls(entry.name, data, shape, np.float32(np.nan), tiling)  # decode / the row order finds beta
        if beta is None:
            shape = tuple(int(d) for d in shape)
            flat = _flat_bytes(entry.name, data)
            _check_size(entry, flat, shape, _checked_tiling(entry, shape, tiling))
            beta = beta_in_bytes(entry.spec.kernel, flat, shape)
        if not (np.isfinite(beta) and beta > 0):  # as convert refuses it: NaN, Inf, 0 or < 0 next to codes
            checked_beta(beta, lambda: bool(np.any(_codes_of(entry, data, shape, tiling))), layout=entry.name)
        return cls(entry.name, data, shape, np.float32(beta), tiling)

    def codes(self) -> np.ndarray:
        """int8 ternary codes [M, K], read from the bytes as the kernel reads them."""
        codes = reference_codes(self.walk, self.codes_bytes, self.shape, self.tiling)
        return codes if self.row_order is None else codes[self.row_order]


def _kernel_layout(layout: str) -> Layout:
    """The registered layout (UnknownLayout by name otherwise), with a walk the kernel knows."""
    entry = get_layout(layout)
    if entry.spec.kernel != "generic":
        walk_of(entry.spec.kernel)
    return entry


def _checked_tiling(layout: Layout, shape: tuple[int, int], tiling: Tiling | None) -> Tiling | None:
    """The layout's shape rule; tiled layouts (TL) need their tiling (checked), the others none."""
    if layout.spec.tiled:
        if tiling is None:
            raise UsageError(f"{layout.name} bytes depend on the kernel tiling: pass tiling= (BM, BK, bm)")
        layout.check_shape(shape, tiling=tiling)
        return tiling
    layout.check_shape(shape)
    return None


def _codes_of(entry: Layout, data: np.ndarray, shape: tuple[int, int], tiling: Tiling | None) -> np.ndarray:
    """The codes of stored bytes (only to tell an all-zero tensor from one with codes)."""
    flat, shape = _flat_bytes(entry.name, data), tuple(int(d) for d in shape)
    if entry.spec.kernel == "generic":
        return entry.decode(flat, shape).codes
    return reference_codes(entry.spec.kernel, flat, shape, _checked_tiling(entry, shape, tiling))


def _flat_bytes(layout: str, data: np.ndarray) -> np.ndarray:
    array = np.asarray(data)
    if array.dtype != np.uint8:
        raise ShapeError(f"{layout} data must be uint8, got {array.dtype}")
    return np.ascontiguousarray(array).reshape(-1)


def _check_size(layout: Layout, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None) -> None:
    size = layout.file_nbytes(*shape) if tiling is not None else layout.nbytes(shape)
    if flat.size != size:
        raise ShapeError(f"{layout.name} data for shape {list(shape)} is {size} bytes, got {flat.size}")


def _checked_bytes(entry: Layout, data: np.ndarray, shape: tuple[int, int], tiling: Tiling | None,
                   beta: np.float32) -> np.ndarray:
    """The caller's bytes (a contiguous copy only if needed), after the checks the kernel
    relies on: size, the stored beta, and no byte value that no encoder writes."""
    layout, walk = entry.name, entry.spec.kernel
    flat = _flat_bytes(layout, data)
    array = np.ascontiguousarray(data)  # the caller's array itself when it is contiguous
    want = entry.stored_shape(shape)
    if len(want) > 1 and array.shape != want:
        raise ShapeError(f"{layout} packed weight for shape {list(shape)} must be {list(want)}, "
                         f"got {list(array.shape)}")
    _check_size(entry, flat, shape, tiling)
    stored = beta_in_bytes(walk, flat, shape)
    if stored is not None and stored.tobytes() != np.float32(beta).tobytes():
        raise FormatError(f"{layout} bytes carry beta {float(stored)!r} but beta={float(beta)!r} was given")
    _refuse_problems(layout, walk, flat, shape, tiling)
    return array


def _refuse_problems(layout: str, walk: str, flat: np.ndarray, shape: tuple[int, int], tiling: Tiling | None) -> None:
    """NotTernary when the walk's byte runs hold a byte value no encoder writes."""
    found = []
    for run in byte_problems(walk, flat, shape, tiling):
        n = (_ext.count_bad(flat, run.offset, run.rows, run.length, run.stride, run.pattern, run.table) if _ext
             else count_run(run, flat))
        if n:
            found.append((run.what, n))
    if found:
        what = ", ".join(f"{n} of {shape[0] * shape[1]} {layout} {what}" for what, n in found)
        raise NotTernary(f"{what} (no ternary value), shape {list(shape)}")


# ---- the products ----------------------------------------------------------------------


def _tiling_tuple(matrix: PackedMatrix) -> tuple[int, ...]:
    t = matrix.tiling
    return () if t is None else (t.BM, t.BK, t.bm)



def _rows(array: np.ndarray, k: int, what: str) -> np.ndarray:
    if array.ndim == 0 or array.shape[-1] != k:
        raise ShapeError(f"{what} must end in in_features {k}, got shape {list(array.shape)}")
    return array.reshape(-1, k)


def _raise_non_finite(bad: int, rows: int) -> None:
    if bad:
        raise NonFiniteActivation(f"{bad} of {rows} activation rows hold NaN/Inf")


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax int8 (q [..., K], s [...]), bit-identical to
    `ternary.quantize_activations` (the reference); NonFiniteActivation on NaN/Inf rows."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if BACKEND == "numpy" or x.ndim == 0 or x.size == 0:
        return _numpy_quantize(x)
    rows = x.reshape(-1, x.shape[-1])
    q = np.empty(rows.shape, np.int8)
    scale = np.empty(rows.shape[0], np.float32)
    _raise_non_finite(_ext.quantize(BACKEND, rows, q, scale), rows.shape[0])
    return q.reshape(x.shape), scale.reshape(x.shape[:-1])


def _in_row_order(matrix: PackedMatrix, out: np.ndarray) -> np.ndarray:
    """The tile's outputs [N, M] as the matrix's rows (a layout read with another walk's tile)."""
    return out if matrix.row_order is None else out[:, matrix.row_order]


def ternary_matmul_int(matrix: PackedMatrix, q: np.ndarray) -> np.ndarray:
    """Exact int32 sums: q int8 [..., K] -> [..., M]."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        if q.dtype.kind not in "iu" or (q.size and (q.min() < -128 or q.max() > 127)):
            raise UsageError(f"activations must be int8 (or integers in [-128, 127]), got {q.dtype}")
        q = q.astype(np.int8)
    rows = _rows(q, matrix.shape[1], "q")
    if BACKEND == "numpy" or rows.shape[0] == 0:
        out = reference_matmul_int(matrix, rows)
    else:
        out = np.empty((rows.shape[0], matrix.shape[0]), np.int32)
        _ext.matmul_int(BACKEND, matrix.kernel_id, matrix.codes_bytes, *matrix.shape, _tiling_tuple(matrix),
                        np.ascontiguousarray(rows), out)
        out = _in_row_order(matrix, out)
    return out.reshape(q.shape[:-1] + (matrix.shape[0],))


def ternary_linear(matrix: PackedMatrix, x: np.ndarray) -> np.ndarray:
    """float32 x [..., K] -> float32 y [..., M] with per-token int8 activations."""
    x = np.asarray(x, dtype=np.float32)
    rows = _rows(x, matrix.shape[1], "x")
    if BACKEND == "numpy" or rows.shape[0] == 0:
        y = reference_linear(matrix, rows)
    else:
        y = np.empty((rows.shape[0], matrix.shape[0]), np.float32)
        bad = _ext.linear(BACKEND, matrix.kernel_id, matrix.codes_bytes, *matrix.shape, _tiling_tuple(matrix),
                          matrix.beta, np.ascontiguousarray(rows), y)
        _raise_non_finite(bad, rows.shape[0])
        y = _in_row_order(matrix, y)
    return y.reshape(x.shape[:-1] + (matrix.shape[0],))


# ---- the numpy reference ----------------------------------------------------------------


reference_quantize_activations = _numpy_quantize  # the one numpy definition (ternary's)


def reference_matmul_int(matrix: PackedMatrix, q: np.ndarray) -> np.ndarray:
    """int32 [N, M] sums from `PackedMatrix.codes()` (kernel_formats' reading of the bytes).
    A float product is exact here, in any order: every partial sum is an integer below
    128 * K, under 2**24 (f32) or 2**53 (f64)."""
    dtype = np.float32 if 128 * matrix.shape[1] <= 1 << 24 else np.float64
    codes = matrix.codes().astype(dtype)
    return (np.asarray(q).astype(dtype) @ codes.T).astype(np.int32)


def reference_linear(matrix: PackedMatrix, x: np.ndarray) -> np.ndarray:
    """float32 [N, M] = float32(sums) / s * beta, with ternary.quantize_activations."""
    q, scale = _numpy_quantize(x)
    acc = reference_matmul_int(matrix, q).astype(np.float32)
    return acc / scale[..., None] * matrix.beta


# The 16-bit lm_head product lives in kernel_half; it is part of this module's API.
from .kernel_half import HALF_KINDS as HALF_KINDS  # noqa: E402
from .kernel_half import exact_half_bits as exact_half_bits  # noqa: E402
from .kernel_half import half_matmul as half_matmul  # noqa: E402
from .kernel_half import half_to_float32 as half_to_float32  # noqa: E402
from .kernel_half import reference_half_matmul as reference_half_matmul  # noqa: E402
