# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin wrapper over the C kernel (driver.c + isa_*.c). bitnet_pack/engine/kernel.py is the API:
it checks shapes and dtypes, so these functions trust their arguments' shapes and only
map C return codes to exceptions. Every product runs with the GIL released."""
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t

cdef extern from "bitnet_kernels.h" nogil:
    int BP_ENOMEM, BP_EBACKEND, BP_ESHAPE
    int bp_backend_count()
    const char *bp_backend_name(int backend)
    int bp_backend_built(int backend)
    int bp_backend_supported(int backend)
    int bp_best_backend()
    void bp_set_threads(int n)
    int bp_get_threads()
    int64_t bp_quantize(int backend, const float *x, int64_t n, int64_t k, int8_t *q, float *s)
    int bp_matmul_int(int backend, int layout, const uint8_t *w, int64_t m, int64_t k,
                      const int64_t *tiling, const int8_t *q, int64_t n, int32_t *out)
    int64_t bp_linear(int backend, int layout, const uint8_t *w, int64_t m, int64_t k,
                      const int64_t *tiling, float beta, const float *x, int64_t n, float *y)
    int BP_BAD_TABLE, BP_BAD_FIELD3, BP_BAD_NIBBLE_ABOVE_8, BP_BAD_NIBBLE_ABOVE_13
    int64_t bp_count_bad(const uint8_t *w, int64_t nrows, int64_t len, int64_t stride, int pattern,
                         const uint8_t *table)
    int BP_HALF_BF16, BP_HALF_F16
    int bp_half_matmul(int backend, int kind, const uint16_t *w, int64_t v, int64_t k,
                       const float *x, int64_t n, float *y)

BACKENDS = tuple(bp_backend_name(i).decode() for i in range(bp_backend_count()))


def built_backends():
    return tuple(name for i, name in enumerate(BACKENDS) if bp_backend_built(i))


def supported_backends():
    return tuple(name for i, name in enumerate(BACKENDS) if bp_backend_supported(i))


def best_backend():
    return BACKENDS[bp_best_backend()]


def set_threads(int n):
    bp_set_threads(n)


def get_threads():
    return bp_get_threads()


def _shape_error(str message):
    """The project's typed error for a length or shape the C would read past (see errors.py)."""
    from bitnet_pack.errors import ShapeError

    return ShapeError(message)


cdef _same_rows(str what, int64_t n_in, int64_t n_out, int64_t cols, int64_t want_cols):
    if n_out != n_in or cols != want_cols:
        raise _shape_error(f"{what}: {n_in} input rows need an output of [{n_in}, {want_cols}], "
                           f"got [{n_out}, {cols}]")


cdef int _check(int64_t code, str what) except -1:
    if code == BP_ENOMEM:
        raise MemoryError(f"{what}: out of memory for activation panels")
    if code == BP_EBACKEND:
        raise RuntimeError(f"{what}: backend not built or not supported by this CPU")
    if code == BP_ESHAPE:
        raise _shape_error(f"{what}: shape rejected by the C kernel")
    return 0


def quantize(str backend, const float[:, ::1] x, int8_t[:, ::1] q, float[::1] s):
    """Fill q [N, K] and s [N]; return the number of rows holding NaN/Inf."""
    cdef int b = BACKENDS.index(backend)
    cdef int64_t bad
    _same_rows("quantize", x.shape[0], q.shape[0], q.shape[1], x.shape[1])
    if s.shape[0] != x.shape[0]:
        raise _shape_error(f"quantize: {x.shape[0]} rows need {x.shape[0]} scales, got {s.shape[0]}")
    if x.shape[0] == 0:
        return 0
    with nogil:
        bad = bp_quantize(b, &x[0, 0], x.shape[0], x.shape[1], &q[0, 0], &s[0])
    return bad


cdef void _tiling(tuple tiling, int64_t *t):
    t[0], t[1], t[2] = tiling if tiling else (0, 0, 0)


def matmul_int(str backend, int walk, const uint8_t[::1] w, int64_t m, int64_t k, tuple tiling,
               const int8_t[:, ::1] q, int32_t[:, ::1] out):
    """Fill out [N, M]; `walk` is the layout entry's kernel_id (BP_LAYOUT_*: the C refuses
    others), `tiling` is (BM, BK, bm) for TL layouts, else ()."""
    cdef int b = BACKENDS.index(backend)
    cdef int64_t n = q.shape[0]
    cdef int64_t t[3]
    cdef int code
    if q.shape[1] != k:
        raise _shape_error(f"matmul {m}x{k}: activations have {q.shape[1]} columns, not {k}")
    _same_rows(f"matmul {m}x{k}", n, out.shape[0], out.shape[1], m)
    if n == 0:
        return
    _tiling(tiling, t)
    with nogil:
        code = bp_matmul_int(b, walk, &w[0], m, k, t, &q[0, 0], n, &out[0, 0])
    _check(code, f"walk {walk} matmul {m}x{k}")


def linear(str backend, int walk, const uint8_t[::1] w, int64_t m, int64_t k, tuple tiling, float beta,
           const float[:, ::1] x, float[:, ::1] y):
    """Fill y [N, M]; return the number of activation rows holding NaN/Inf (y untouched then)."""
    cdef int b = BACKENDS.index(backend)
    cdef int64_t n = x.shape[0]
    cdef int64_t t[3]
    cdef int64_t code
    if x.shape[1] != k:
        raise _shape_error(f"linear {m}x{k}: activations have {x.shape[1]} columns, not {k}")
    _same_rows(f"linear {m}x{k}", n, y.shape[0], y.shape[1], m)
    if n == 0:
        return 0
    _tiling(tiling, t)
    with nogil:
        code = bp_linear(b, walk, &w[0], m, k, t, beta, &x[0, 0], n, &y[0, 0])
    _check(code, f"walk {walk} linear {m}x{k}")
    return code


BAD_PATTERNS = {"table": BP_BAD_TABLE, "field3": BP_BAD_FIELD3, "nibble>8": BP_BAD_NIBBLE_ABOVE_8,
                "nibble>13": BP_BAD_NIBBLE_ABOVE_13}


def count_bad(const uint8_t[::1] w, int64_t offset, int64_t nrows, int64_t length, int64_t stride,
              str pattern, const uint8_t[::1] table):
    """sum of table[byte] over `length` bytes at offset + r * stride, r < nrows (`pattern`
    computes the same 8 bytes at a time)."""
    cdef int64_t count
    cdef int kind = BAD_PATTERNS[pattern]
    if nrows == 0 or length == 0:
        return 0
    if table.shape[0] != 256 or offset < 0 or stride < 0 or length < 0 or nrows < 0 \
            or offset + (nrows - 1) * stride + length > w.shape[0]:
        raise _shape_error(f"count_bad: table of {table.shape[0]} entries (256), {nrows} rows of {length} bytes "
                           f"at {offset} + r * {stride} in {w.shape[0]} bytes")
    with nogil:
        count = bp_count_bad(&w[offset], nrows, length, stride, kind, &table[0])
    return count


HALF_KINDS = {"bf16": BP_HALF_BF16, "f16": BP_HALF_F16}


def half_matmul(str backend, str kind, const uint16_t[:, ::1] w, const float[:, ::1] x,
                float[:, ::1] y):
    """Fill y [N, V] = x [N, K] . float(w [V, K])^T (order: half_isa.h)."""
    cdef int b = BACKENDS.index(backend)
    cdef int kd = HALF_KINDS[kind]
    cdef int64_t n = x.shape[0]
    cdef int code
    if x.shape[1] != w.shape[1]:
        raise _shape_error(f"{kind} matmul {w.shape[0]}x{w.shape[1]}: activations have {x.shape[1]} columns")
    _same_rows(f"{kind} matmul", n, y.shape[0], y.shape[1], w.shape[0])
    if n == 0:
        return
    with nogil:
        code = bp_half_matmul(b, kd, &w[0, 0], w.shape[0], w.shape[1], &x[0, 0], n, &y[0, 0])
    _check(code, f"{kind} matmul {w.shape[0]}x{w.shape[1]}")


include "floatops.pxi"
include "quant_floats.pxi"
