"""The conversion hot loops, compiled, and the switch back to the numpy reference.

Each function returns exactly what its numpy reference returns, byte for byte
(tests/test_fastpath.py), or None where the caller should run the reference instead: the
extension is missing, `reference()` is active, or the input is one the reference must judge
(codes outside {-1, 0, 1}, fields of 3, NaN/Inf in a master, blocks that disagree on d).

    ternarize_stored   absmean + ternarize of a bf16/f32 master as stored  (ternary.ternarize)
    torch_sum          torch's float32 sum order                            (torchsum.torch_sum)
    i2s_*, hf_*, tq_*  layout packing and unpacking                         (layouts/*.py)
    convert_float      bf16 <-> f16 of embedding chunks                     (dtypes + numpy casts)
    drop_mapped_pages  forget the file pages under a memory-mapped view (they stay cached)

Ternary weights read from a master, hf or I2_S bytes come back as `StoredTernary`: beta is
known, the bytes are checked, but the int8 codes are made only if something reads `.codes`.
The encoders here take such a weight a few hundred KB of rows at a time (decode into an
L2-sized scratch, encode into the output), so master -> I2_S or hf -> I2_S never writes a
whole int8 copy of a tensor.

Work is cut into row ranges run on up to THREADS threads (the C code releases the GIL).
torch's sum keeps its own two chunks, whose order is part of the result.

Environment, read at import:
    BITNET_PACK_PUREPYTHON=1   never load bitnet_pack.formats._fastconvert: the numpy reference runs
    BITNET_PACK_THREADS=N      threads for the hot loops (default: the CPUs we may use, <= 8)
"""
from __future__ import annotations

import mmap
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .dtypes import bf16_to_f32, f32_to_bf16
from .ternary import ABSMEAN_EPS, TernaryWeight, checked_absmean_beta, ternarize
from .torchsum import DEFAULT_THREADS, torch_chunks
from .torchsum import torch_sum as _reference_torch_sum

PARALLEL_MIN = 1 << 20  # elements below which one thread does the work
CHUNK_CODES = 1 << 18  # codes decoded at a time per thread when transcoding (fits in L2)
CHUNK_BYTES = 16 << 20  # rows of a large float tensor per step (below glibc's 32 MB mmap
#                         threshold, so the buffers are reused rather than faulted in afresh)


def _load_extension() -> object | None:
    if os.environ.get("BITNET_PACK_PUREPYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _fastconvert
    except ImportError as exc:
        warnings.warn(f"bitnet_pack.formats._fastconvert is not built ({exc}); conversions use the slow numpy "
                      "reference", RuntimeWarning, stacklevel=3)
        return None
    return _fastconvert


def _thread_count() -> int:
    wanted = os.environ.get("BITNET_PACK_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


_ext = _load_extension()
THREADS = _thread_count()
_reference_only = 0
_pool: ThreadPoolExecutor | None = None


def compiled() -> bool:
    """True when the compiled loops run (built, not disabled, not inside `reference()`)."""
    return _ext is not None and not _reference_only


def streaming() -> bool:
    """False inside `reference()`: large tensors are then handled whole, one at a time."""
    return not _reference_only


@contextmanager
def reference() -> Iterator[None]:
    """Run the block on the numpy reference, whole tensor by whole tensor (for comparisons)."""
    global _reference_only
    _reference_only += 1
    try:
        yield
    finally:
        _reference_only -= 1


# -- running ranges on threads ------------------------------------------------------------
def _parallel(tasks: Sequence[Callable[[], object]]) -> list[object]:
    """Results of `tasks`, run concurrently; the first runs on the calling thread."""
    global _pool
    if len(tasks) == 1:
        return [tasks[0]()]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(THREADS - 1, 1), thread_name_prefix="bitnet-pack")
    futures = [_pool.submit(task) for task in tasks[1:]]
    first = tasks[0]()
    return [first] + [future.result() for future in futures]


def _ranges(count: int, work: int) -> list[tuple[int, int]]:
    """Split `count` units of `work` elements each into up to THREADS ranges."""
    parts = min(THREADS, max(1, count * work // PARALLEL_MIN), max(1, count))
    step = -(-count // parts)
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def _over(count: int, work: int, task: Callable[[int, int], int | None]) -> int:
    """Sum of task(a, b) (None counts 0) over the ranges of `count` units, run in parallel."""
    return sum(_parallel([lambda a=a, b=b: task(a, b) or 0 for a, b in _ranges(count, work)]))


def _flat(array: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


# -- weights whose codes stay in their stored form ----------------------------------------
RowSource = Callable[[int, int, np.ndarray], np.ndarray]


class StoredTernary(TernaryWeight):
    """A TernaryWeight whose codes are made from the stored bytes on demand: `rows(r0, r1, out)`
    writes the codes of rows [r0, r1) into `out` (int8, at least (r1 - r0) * in long).
    `origin` names the stored form for one-pass kernels: ("bf16", flat bits, threshold),
    ("hf", flat packed bytes) or ("i2s", code bytes, block)."""

    def __init__(self, shape: tuple[int, int], beta: np.float32, rows: RowSource, origin: tuple = ()):
        object.__setattr__(self, "beta", np.float32(beta))
        object.__setattr__(self, "_shape", (int(shape[0]), int(shape[1])))
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "_codes", None)
        object.__setattr__(self, "_lock", threading.Lock())

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def codes(self) -> np.ndarray:  # type: ignore[override]
        with self._lock:
            if self._codes is None:
                out_features, in_features = self._shape
                codes = np.empty(self._shape, np.int8)
                flat = codes.reshape(-1)
                _over(out_features, in_features, lambda a, b: self._fill(a, b, flat[a * in_features:]))
                object.__setattr__(self, "_codes", codes)
            return self._codes

    def _fill(self, r0: int, r1: int, out: np.ndarray) -> None:
        self.rows(r0, r1, out)

    def __repr__(self) -> str:
        return f"StoredTernary(shape={self._shape}, beta={self.beta!r})"


def _row_source(weight: TernaryWeight) -> tuple[RowSource, bool]:
    """(rows function, whether it decodes into the scratch it is given)."""
    if isinstance(weight, StoredTernary) and weight._codes is None:
        return weight.rows, True
    codes = np.ascontiguousarray(weight.codes)
    return (lambda r0, r1, _out: codes[r0:r1]), False


def _by_rows(weight: TernaryWeight, emit: Callable[[int, int, np.ndarray], int]) -> int:
    """Sum of emit(r0, r1, codes of rows r0..r1 as flat int8) over all rows, on threads; a
    stored weight is decoded CHUNK_CODES at a time into a per-thread scratch."""
    source, decodes = _row_source(weight)
    out_features, in_features = weight.shape
    step = max(1, CHUNK_CODES // in_features) if decodes else out_features

    def work(a: int, b: int) -> int:
        scratch = np.empty(step * in_features, np.int8) if decodes else None
        bad = 0
        for r0 in range(a, b, step):
            r1 = min(r0 + step, b)
            bad += emit(r0, r1, source(r0, r1, scratch).reshape(-1))
        return bad

    return _over(out_features, in_features, work)


# -- torch's sum and absmean ternarization ------------------------------------------------
def _chunked_sum(flat: np.ndarray, inner: Callable[[np.ndarray], float], threads: int) -> np.float32:
    sums = _parallel([lambda a=a, b=b: inner(flat[a:b]) for a, b in torch_chunks(flat.size, threads)])
    total = np.float32(0.0)
    for part in sums:
        total = np.float32(total + np.float32(part))
    return total


def torch_sum(values: np.ndarray, threads: int = DEFAULT_THREADS) -> np.float32:
    """`torchsum.torch_sum`, bit for bit."""
    if not compiled():
        return _reference_torch_sum(values, threads)
    return _chunked_sum(_flat(values, "float32"), _ext.sum_f32, threads)


_MASTER_KERNELS = {"BF16": ("uint16", "abs_sum_bf16", "ternarize_bf16", "ternary_threshold_bf16"),
                   "F32": ("float32", "abs_sum_f32", "ternarize_f32", "ternary_threshold_f32")}


def ternarize_stored(raw: np.ndarray, dtype: str, *, tensor: str | None = None) -> TernaryWeight:
    """`ternary.ternarize` of a master weight as stored ("BF16" as uint16 bits, "F16", "F32").
    One pass finds mean|W| in torch's order; the codes are made when encoded (`StoredTernary`)."""
    def reference() -> TernaryWeight:
        return ternarize(bf16_to_f32(raw) if dtype == "BF16" else np.asarray(raw, np.float32), tensor=tensor)

    if not compiled() or dtype not in _MASTER_KERNELS or raw.ndim != 2 or raw.size == 0:
        return reference()
    storage, summer, quantizer, threshold = _MASTER_KERNELS[dtype]
    flat = _flat(raw, storage)
    total = _chunked_sum(flat, getattr(_ext, summer), DEFAULT_THREADS)
    if not np.isfinite(total):  # NaN/Inf inside (the reference names them) or an overflow
        return reference()
    mean = np.float32(total / np.float32(flat.size))
    beta = checked_absmean_beta(mean, tensor=tensor)
    scale = np.float32(1.0) / max(mean, ABSMEAN_EPS)
    bits, quantize = getattr(_ext, threshold)(scale), getattr(_ext, quantizer)
    stored = flat.view(np.uint32) if dtype == "F32" else flat
    in_features = raw.shape[1]

    def rows(r0: int, r1: int, out: np.ndarray) -> np.ndarray:
        part = out[:(r1 - r0) * in_features]
        quantize(stored[r0 * in_features:r1 * in_features], bits, part)
        return part

    origin = ("bf16", stored, bits) if dtype == "BF16" else ()
    return StoredTernary(raw.shape, beta, rows, origin)


# -- float conversions of large tensors --------------------------------------------------
_tables: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _table(source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(every 16-bit input's output, flag per input), made by the numpy reference itself.
    bf16 -> f16 flags values f16 does not hold exactly (NaN too); f16 -> bf16 flags NaN."""
    key = (source, target)
    if key not in _tables:
        every = np.arange(1 << 16, dtype=np.uint16)
        if key == ("BF16", "F16"):
            values = bf16_to_f32(every)
            with np.errstate(over="ignore"):
                half = values.astype(np.float16)
            _tables[key] = (half.view(np.uint16), (half.astype(np.float32) != values).view(np.uint8))
        else:
            values = every.view(np.float16).astype(np.float32)
            _tables[key] = (f32_to_bf16(values), np.isnan(values).view(np.uint8))
    return _tables[key]


def convert_float(data: np.ndarray, source: str, target: str) -> tuple[np.ndarray, int] | None:
    """bf16 -> f16 (and how many values f16 does not hold exactly) or f16 -> bf16 (count 0),
    in `data`'s shape; None for other pairs, NaN inputs (the reference picks their bits) or
    no extension."""
    if not compiled() or (source, target) not in (("BF16", "F16"), ("F16", "BF16")):
        return None
    table, flags = _table(source, target)
    flat = _flat(data.view(np.uint16), "uint16")
    out = np.empty(flat.size, np.uint16)
    flagged = _over(flat.size, 1, lambda a, b: _ext.lut16(flat[a:b], table, flags, out[a:b]))
    if flagged and (target == "BF16" or np.any((flat & 0x7FFF) > 0x7F80)):
        return None
    out = out.reshape(data.shape)
    return (out.view(np.float16) if target == "F16" else out), int(flagged)


# -- memory-mapped inputs -----------------------------------------------------------------
PAGE = mmap.PAGESIZE
_CAN_DROP = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")
_byte_bounds = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or np.byte_bounds


def drop_mapped_pages(array: np.ndarray) -> None:
    """If `array` is a view of a read-only mmap, drop the pages under it from this process
    (they stay in the page cache: touching them again maps them back). Otherwise nothing.

    Mapped file pages count in a process's RSS: a conversion that reads a 4.8 GB model
    through a map would otherwise end up 4.8 GB large."""
    if not _CAN_DROP or array.size == 0:
        return
    owner = array
    while isinstance(owner, (np.ndarray, memoryview)):
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    if not isinstance(owner, mmap.mmap) or owner.closed:
        return
    with memoryview(owner) as whole:
        if not whole.readonly:  # a writable map may hold private changes: leave it alone
            return
        start = np.frombuffer(whole, np.uint8, count=1).__array_interface__["data"][0]
    low, high = _byte_bounds(array)
    begin = (low - start) // PAGE * PAGE
    end = min(high - start, len(owner))
    if 0 <= begin < end:
        owner.madvise(mmap.MADV_DONTNEED, begin, end - begin)


# The compiled layout encoders and decoders live in fastpath_layouts; they are part of this
# module's API (the layouts call fastpath.i2s_encode etc.).
from .fastpath_layouts import hf_decode as hf_decode  # noqa: E402
from .fastpath_layouts import hf_encode as hf_encode  # noqa: E402
from .fastpath_layouts import i2s_decode as i2s_decode  # noqa: E402
from .fastpath_layouts import i2s_encode as i2s_encode  # noqa: E402
from .fastpath_layouts import tq_decode as tq_decode  # noqa: E402
from .fastpath_layouts import tq_encode as tq_encode  # noqa: E402
