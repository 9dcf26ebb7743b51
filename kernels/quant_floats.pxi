# ggml's reference K-quant quantizers (quant_floats.h), included by _kernels.pyx.
# bitnet_pack/formats/quant_floats.py is the API (shapes, names) and the numpy reference.
from libc.stdint cimport int64_t, uint8_t

cdef extern from "quant_floats.h" nogil:
    int bp_quantize_k(int kind, const float *x, int64_t blocks, uint8_t *out)
    int bp_quant_matmul(int kind, const uint8_t *w, int64_t v, int64_t k, const float *x, int64_t n, float *y)


def quantize_k(int kind, const float[:, ::1] x, uint8_t[:, ::1] out):
    """x [blocks, 256] -> out [blocks, block bytes] in ggml type `kind` (12, 13, 14)."""
    cdef int code
    if x.shape[0] == 0:
        return
    if x.shape[1] != 256 or out.shape[0] != x.shape[0] or out.shape[1] != {12: 144, 13: 176, 14: 210}.get(kind, -1):
        raise ValueError(f"quantize_k: x {x.shape[0]}x{x.shape[1]}, out {out.shape[0]}x{out.shape[1]}")
    with nogil:
        code = bp_quantize_k(kind, &x[0, 0], x.shape[0], &out[0, 0])
    if code:
        raise ValueError(f"quantize_k: ggml type {kind} is not a K-quant this kernel writes")


def quant_matmul(int kind, const uint8_t[:, ::1] w, int64_t k, const float[:, ::1] x, float[:, ::1] y):
    """y [n, v] = x [n, k] times the v rows of w (ggml type `kind`) through ggml's dot product."""
    cdef int code
    if x.shape[1] != k or y.shape[0] != x.shape[0] or y.shape[1] != w.shape[0]:
        raise ValueError(f"quant_matmul: w {w.shape[0]} rows, x {x.shape[0]}x{x.shape[1]}, k {k}")
    if x.shape[0] == 0 or w.shape[0] == 0:
        return
    with nogil:
        code = bp_quant_matmul(kind, &w[0, 0], w.shape[0], k, &x[0, 0], x.shape[0], &y[0, 0])
    if code:
        raise ValueError(f"quant_matmul: code {code} for ggml type {kind}, k {k}")
