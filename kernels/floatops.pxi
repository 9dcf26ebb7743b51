# The decode's float operations (floatops.h), included by _kernels.pyx so that they share
# the module's thread pool. bitnet_pack/engine/floatops.py is the API and checks shapes and dtypes.
from libc.stdint cimport int64_t, uint16_t

cdef extern from "floatmath.h" nogil:
    float bp_fmaf(float a, float b, float c)

cdef extern from "floatops.h" nogil:
    void bp_float_set_parallel_min(int64_t work)
    int64_t bp_float_parallel_min()
    void bp_rms_norm(const float *x, int64_t n, int64_t k, const float *w, float eps, float *y)
    void bp_rope_tables(const int64_t *positions, int64_t t, int64_t head_dim, double theta, int mode,
                        float *cos_out, float *sin_out)
    void bp_rope_apply(float *x, int64_t t, int64_t heads, int64_t head_dim, const float *cos_t,
                       const float *sin_t)
    int bp_attention(const float *q, int64_t t, int64_t heads, int64_t head_dim, const float *keys,
                     const float *values, int64_t kv_heads, int64_t capacity, int64_t start, float scale,
                     int flags, float *out)
    void bp_activation(const float *gate, const float *up, int64_t n, int kind, float *out)
    void bp_f32_matmul(const float *w, int64_t v, int64_t k, const float *x, int64_t n, float *y)
    void bp_ggml_f16_matmul(const uint16_t *w, int64_t v, int64_t k, const float *x, int64_t n, int variant,
                            float *y)
    void bp_expf_array(const float *x, int64_t n, float *y)
    void bp_ggml_expf_avx512_array(const float *x, int64_t n, float *y)
    void bp_sincos_array(const float *x, int64_t n, float *sin_out, float *cos_out)
    void bp_round_f16_array(const float *x, int64_t n, float *y)


def float_parallel_min(work=None):
    """The work below which float ops stay on the calling thread; set it when given."""
    if work is not None:
        bp_float_set_parallel_min(work)
    return bp_float_parallel_min()


def rms_norm(const float[:, ::1] x, const float[::1] w, float eps, float[:, ::1] y):
    if w.shape[0] != x.shape[1]:
        raise _shape_error(f"rms_norm: {x.shape[1]} features but a weight of {w.shape[0]}")
    _same_rows("rms_norm", x.shape[0], y.shape[0], y.shape[1], x.shape[1])
    if x.shape[0] == 0:
        return
    with nogil:
        bp_rms_norm(&x[0, 0], x.shape[0], x.shape[1], &w[0], eps, &y[0, 0])


def rope_tables(const int64_t[::1] positions, int64_t head_dim, double theta, int mode,
                float[:, ::1] cos_out, float[:, ::1] sin_out):
    _same_rows("rope_tables cos", positions.shape[0], cos_out.shape[0], cos_out.shape[1], head_dim // 2)
    _same_rows("rope_tables sin", positions.shape[0], sin_out.shape[0], sin_out.shape[1], head_dim // 2)
    if positions.shape[0] == 0 or head_dim < 2:
        return
    with nogil:
        bp_rope_tables(&positions[0], positions.shape[0], head_dim, theta, mode, &cos_out[0, 0],
                       &sin_out[0, 0])


def rope_apply(float[:, :, ::1] x, const float[:, ::1] cos_t, const float[:, ::1] sin_t):
    _same_rows("rope_apply cos", x.shape[0], cos_t.shape[0], cos_t.shape[1], x.shape[2] // 2)
    _same_rows("rope_apply sin", x.shape[0], sin_t.shape[0], sin_t.shape[1], x.shape[2] // 2)
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] < 2:
        return
    with nogil:
        bp_rope_apply(&x[0, 0, 0], x.shape[0], x.shape[1], x.shape[2], &cos_t[0, 0], &sin_t[0, 0])


def attention(const float[:, :, ::1] q, const float[:, :, ::1] keys, const float[:, :, ::1] values,
              int64_t start, float scale, int flags, float[:, :, ::1] out):
    """q [T, H, d]; keys, values [KV, capacity, d] holding positions < start + T; out [T, H, d]."""
    cdef int code
    cdef tuple qs = (q.shape[0], q.shape[1], q.shape[2]), ks = (keys.shape[0], keys.shape[1], keys.shape[2])
    cdef tuple vs = (values.shape[0], values.shape[1], values.shape[2]), os = (out.shape[0], out.shape[1], out.shape[2])
    if os != qs or vs != ks or ks[2] != qs[2] or start < 0 or start + qs[0] > ks[1]:
        raise _shape_error(f"attention: q {list(qs)}, keys {list(ks)}, values {list(vs)}, out {list(os)}, "
                           f"positions {start}..{start + qs[0]}")
    if q.shape[0] == 0 or q.shape[1] == 0:
        return
    with nogil:
        code = bp_attention(&q[0, 0, 0], q.shape[0], q.shape[1], q.shape[2], &keys[0, 0, 0],
                            &values[0, 0, 0], keys.shape[0], keys.shape[1], start, scale, flags,
                            &out[0, 0, 0])
    if code == -1:
        raise MemoryError("attention: out of memory for a score row")
    if code:
        raise _shape_error("attention: shape rejected by the C kernel")


def activation(const float[::1] gate, const float[::1] up, int kind, float[::1] out):
    if up.shape[0] != gate.shape[0] or out.shape[0] != gate.shape[0]:
        raise _shape_error(f"activation: gate {gate.shape[0]}, up {up.shape[0]} and out {out.shape[0]} values differ")
    if gate.shape[0] == 0:
        return
    with nogil:
        bp_activation(&gate[0], &up[0], gate.shape[0], kind, &out[0])


def f32_matmul(const float[:, ::1] w, const float[:, ::1] x, float[:, ::1] y):
    if x.shape[1] != w.shape[1]:
        raise _shape_error(f"f32_matmul {w.shape[0]}x{w.shape[1]}: activations have {x.shape[1]} columns")
    _same_rows("f32_matmul", x.shape[0], y.shape[0], y.shape[1], w.shape[0])
    if x.shape[0] == 0:
        return
    with nogil:
        bp_f32_matmul(&w[0, 0], w.shape[0], w.shape[1], &x[0, 0], x.shape[0], &y[0, 0])


def ggml_f16_matmul(const uint16_t[:, ::1] w, const float[:, ::1] x, int variant, float[:, ::1] y):
    if x.shape[1] != w.shape[1]:
        raise _shape_error(f"ggml_f16_matmul {w.shape[0]}x{w.shape[1]}: activations have {x.shape[1]} columns")
    _same_rows("ggml_f16_matmul", x.shape[0], y.shape[0], y.shape[1], w.shape[0])
    if x.shape[0] == 0:
        return
    with nogil:
        bp_ggml_f16_matmul(&w[0, 0], w.shape[0], w.shape[1], &x[0, 0], x.shape[0], variant, &y[0, 0])


def _same_length(str what, *views):
    if len({v.shape[0] for v in views}) > 1:
        raise _shape_error(f"{what}: lengths {[v.shape[0] for v in views]} differ")


def expf_array(const float[::1] x, float[::1] y):
    _same_length("expf_array", x, y)
    if x.shape[0]:
        bp_expf_array(&x[0], x.shape[0], &y[0])


def ggml_expf_avx512_array(const float[::1] x, float[::1] y):
    _same_length("ggml_expf_avx512_array", x, y)
    if x.shape[0]:
        bp_ggml_expf_avx512_array(&x[0], x.shape[0], &y[0])


def fmaf_array(const float[::1] a, const float[::1] b, const float[::1] c, float[::1] y):
    cdef int64_t i
    _same_length("fmaf_array", a, b, c, y)
    for i in range(a.shape[0]):
        y[i] = bp_fmaf(a[i], b[i], c[i])


def sincos_array(const float[::1] x, float[::1] sin_out, float[::1] cos_out):
    _same_length("sincos_array", x, sin_out, cos_out)
    if x.shape[0]:
        bp_sincos_array(&x[0], x.shape[0], &sin_out[0], &cos_out[0])


def round_f16_array(const float[::1] x, float[::1] y):
    _same_length("round_f16_array", x, y)
    if x.shape[0]:
        bp_round_f16_array(&x[0], x.shape[0], &y[0])
