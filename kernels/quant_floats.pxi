# ggml's reference K-quant quantizers (quant_floats.h), included by _kernels.pyx.
# bitnet_pack/quant_floats.py is the API (shapes, names) and the numpy reference.
from libc.stdint cimport int64_t, uint8_t

cdef extern from "quant_floats.h" nogil:
    int bp_quantize_k(int kind, const float *x, int64_t blocks, uint8_t *out)


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
