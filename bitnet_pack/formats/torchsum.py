"""torch's CPU float32 sum, reproduced bit for bit in numpy.

transformers ternarizes with `w.abs().mean()` in float32, and the I2_S/TL scale is that
mean's reciprocal's reciprocal, stored as raw float32: an ulp off and the file differs.
numpy's pairwise sum and a float64 sum both miss torch's result on about a third of
tensors, so we replay torch's reduction order (aten/src/ATen/native/cpu/SumKernel.cpp,
`cascade_sum` -> `vectorized_inner_sum` -> `row_sum` -> `multi_row_sum`):

  * the range is split into min(threads, ceil(n / 32768)) equal chunks (`parallel_for`,
    GRAIN_SIZE 32768), each summed alone, the chunk sums then added in order;
  * a chunk is read as vectors of 8 float lanes, 4 vectors per step (ILP), giving 32
    independent lanes that each run a 4-level cascade: sequential sums of 2**p items,
    carried upward every 2**p blocks, p = max(4, ceil(log2(n)) // 4);
  * leftover vectors join lane group 0, groups 1..3 are added to group 0, then the scalar
    tail and the 8 lanes are added one by one to a float32 accumulator;
  * a chunk shorter than one vector takes the scalar path: 4 lanes of one item each, the
    tail added to lane 0, then lanes 1..3.

The result depends on torch's thread count; the conformance vectors were produced with 2
(torch's default on the 2-core reference machines), which is our default too.
"""
from __future__ import annotations

import numpy as np

GRAIN_SIZE = 32768
VEC_LANES = 8
ILP = 4
LEVELS = 4
DEFAULT_THREADS = 2


def _sequential(rows: np.ndarray) -> np.ndarray:
    """Sum along axis 0 one row at a time, in order (no pairwise regrouping)."""
    acc = np.zeros(rows.shape[1:], np.float32)
    for row in rows:
        acc += row
    return acc


def _grouped(items: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequential sums of each full group of `group` rows, and of the partial last group."""
    n_full = len(items) // group
    lanes = items.shape[1]
    full = items[: n_full * group].reshape(n_full, group, lanes)
    full_sums = _sequential(full.transpose(1, 0, 2)) if n_full else np.zeros((0, lanes), np.float32)
    return full_sums, _sequential(items[n_full * group :])


def _cascade(items: np.ndarray) -> np.ndarray:
    """`multi_row_sum`: items [n, lanes] -> per-lane cascade sums [lanes]."""
    n = items.shape[0]
    power = max(4, (int(n - 1).bit_length() if n > 1 else 0) // LEVELS)
    step = 1 << power
    blocks, tail = _grouped(items, step)
    level1, part1 = _grouped(blocks, step)
    level2, part2 = _grouped(level1, step)
    part3 = _sequential(level2)
    return tail + part1 + part2 + part3


def _scalar_row_sum(x: np.ndarray) -> np.float32:
    """`scalar_inner_sum` (chunks shorter than one vector): 4 scalar lanes, then the tail."""
    n_ilp = x.size // ILP
    lanes = _cascade(x[: n_ilp * ILP].reshape(n_ilp, ILP)) if n_ilp else np.zeros(ILP, np.float32)
    for value in x[n_ilp * ILP :]:
        lanes[0] = np.float32(lanes[0] + value)
    for k in range(1, ILP):
        lanes[0] = np.float32(lanes[0] + lanes[k])
    return np.float32(lanes[0])


def _inner_sum(x: np.ndarray) -> np.float32:
    """`vectorized_inner_sum` over one contiguous chunk."""
    if x.size < VEC_LANES:
        return _scalar_row_sum(x)
    n_vec = x.size // VEC_LANES
    n_ilp = n_vec // ILP
    vectors = x[: n_vec * VEC_LANES].reshape(n_vec, VEC_LANES)
    groups = _cascade(vectors[: n_ilp * ILP].reshape(n_ilp, ILP * VEC_LANES)).reshape(ILP, VEC_LANES)
    lanes = groups[0].copy()
    for leftover in vectors[n_ilp * ILP :]:
        lanes += leftover
    for k in range(1, ILP):
        lanes += groups[k]
    acc = np.float32(0.0)
    for value in x[n_vec * VEC_LANES :]:
        acc = np.float32(acc + value)
    for value in lanes:
        acc = np.float32(acc + value)
    return acc


def torch_chunks(size: int, threads: int = DEFAULT_THREADS) -> list[tuple[int, int]]:
    """torch's parallel_for split of a reduction over `size` elements: [begin, end) ranges."""
    chunk = size
    if threads > 1 and size >= GRAIN_SIZE:
        workers = min(threads, -(-size // GRAIN_SIZE))
        chunk = -(-size // workers)
    return [(begin, min(begin + chunk, size)) for begin in range(0, max(size, 1), max(chunk, 1))]


def torch_sum(values: np.ndarray, threads: int = DEFAULT_THREADS) -> np.float32:
    """Sum of a float32 array exactly as `torch.sum` on CPU with `threads` intra-op threads."""
    x = np.ascontiguousarray(values, dtype=np.float32).ravel()
    total = np.float32(0.0)
    for begin, end in torch_chunks(x.size, threads):
        total = np.float32(total + _inner_sum(x[begin:end]))
    return total



def torch_mean(values: np.ndarray, threads: int = DEFAULT_THREADS) -> np.float32:
    """`torch.mean` on CPU for float32: the sum above divided by the count in float32."""
    return np.float32(torch_sum(values, threads) / np.float32(np.asarray(values).size))
