# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""bitnet_pack.formats._fastconvert: thin GIL-free wrappers over fastconvert.h (see that file).

Arrays are flat and C-contiguous; outputs are allocated by the caller (bitnet_pack.formats.fastpath),
which also splits work into ranges for its threads and checks the returned counts.
"""
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint32_t


cdef extern from "fastconvert.h" nogil:
    ctypedef struct fc_tq_stats:
        int64_t bad
        int64_t nonzero
        int64_t mismatch
        uint16_t first_d

    float fc_sum_f32(const float *x, int64_t n)
    float fc_abs_sum_f32(const float *x, int64_t n)
    float fc_abs_sum_bf16(const uint16_t *x, int64_t n)
    uint16_t fc_ternary_threshold_bf16(float scale)
    uint32_t fc_ternary_threshold_f32(float scale)
    void fc_ternarize_f32(const uint32_t *bits, int64_t n, uint32_t threshold_bits, int8_t *codes)
    void fc_ternarize_bf16(const uint16_t *x, int64_t n, uint16_t threshold_bits, int8_t *codes)
    int64_t fc_i2s_encode(const int8_t *codes, int64_t n, int64_t block, uint8_t *out)
    int64_t fc_i2s_decode(const uint8_t *src, int64_t n, int64_t block, int8_t *codes)
    int64_t fc_hf_encode(const int8_t *const plane[4], int64_t count, uint8_t *packed)
    void fc_hf_decode_plane(const uint8_t *packed, int64_t count, int plane, int8_t *codes)
    int64_t fc_count_threes(const uint8_t *src, int64_t n)
    int64_t fc_tq2_encode(const int8_t *codes, int64_t blocks, uint16_t d, uint8_t *out)
    void fc_tq2_decode(const uint8_t *src, int64_t blocks, int8_t *codes, fc_tq_stats *stats)
    int64_t fc_tq1_encode(const int8_t *codes, int64_t blocks, uint16_t d, uint8_t *out)
    void fc_tq1_decode(const uint8_t *src, int64_t blocks, int8_t *codes, fc_tq_stats *stats)
    void fc_bf16_to_i2s(const uint16_t *w, int64_t n, uint16_t threshold_bits, int64_t block, uint8_t *out)
    void fc_bf16_to_hf(const uint16_t *w, int64_t out, int64_t inf, uint16_t threshold_bits, int64_t j0, int64_t j1,
                       uint8_t *packed)
    void fc_hf_to_i2s(const uint8_t *packed, int64_t out, int64_t inf, int64_t block, int64_t j0, int64_t j1,
                      uint8_t *dst)
    void fc_i2s_to_hf(const uint8_t *body, int64_t out, int64_t inf, int64_t block, int64_t j0, int64_t j1,
                      uint8_t *packed)
    void fc_i2s_to_tq2(const uint8_t *body, int64_t blocks, uint16_t d, uint8_t *out)
    int64_t fc_lut16(const uint16_t *src, int64_t n, const uint16_t *lut, const uint8_t *flag, uint16_t *out)


cdef inline const float *f32p(const float[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline const uint16_t *u16p(const uint16_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline const uint32_t *u32p(const uint32_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline const uint8_t *u8p(const uint8_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline const int8_t *i8p(const int8_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline int8_t *i8w(int8_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline uint8_t *u8w(uint8_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL

cdef inline uint16_t *u16w(uint16_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL


# -- torch-order sums (one parallel_for chunk) ----------------------------------------------
def sum_f32(const float[::1] x):
    cdef float total
    with nogil:
        total = fc_sum_f32(f32p(x), x.shape[0])
    return total


def abs_sum_f32(const float[::1] x):
    cdef float total
    with nogil:
        total = fc_abs_sum_f32(f32p(x), x.shape[0])
    return total


def abs_sum_bf16(const uint16_t[::1] x):
    cdef float total
    with nogil:
        total = fc_abs_sum_bf16(u16p(x), x.shape[0])
    return total


# -- boundary checks: real ones, not asserts (python -O drops those), as the project's typed errors --
def _error(message, usage=False):
    from bitnet_pack.errors import ShapeError, UsageError

    return (UsageError if usage else ShapeError)(message)


cdef _check_blocks(str what, int64_t n, int64_t block):
    if block <= 0 or n % block:
        raise _error(f"{what}: {n} codes are not whole blocks of {block}")


cdef _check_tq(str what, int64_t codes, int64_t nbytes, int64_t block_bytes):
    if codes % 256 or nbytes != codes // 256 * block_bytes:
        raise _error(f"{what}: {codes} codes (whole blocks of 256) need {codes // 256 * block_bytes} bytes, "
                     f"got {nbytes}")


cdef _check_hf(str what, int64_t packed, int64_t out, int64_t inf, int64_t j0, int64_t j1):
    cdef int64_t rows = (out + 3) // 4
    if packed != rows * inf or not 0 <= j0 <= j1 <= rows:
        raise _error(f"{what}: a {out} x {inf} matrix packs into {rows * inf} bytes (got {packed}), "
                     f"rows [{j0}, {j1}) must lie in [0, {rows}]")


# -- ternarize ------------------------------------------------------------------------------
def ternary_threshold_bf16(float scale):
    """The least bf16 magnitude bits whose value times `scale` (> 0) exceeds 0.5 in float32."""
    if not scale > 0:
        raise _error(f"ternary_threshold_bf16: scale must be > 0, got {scale!r}", usage=True)
    return fc_ternary_threshold_bf16(scale)


def ternary_threshold_f32(float scale):
    """The least float32 magnitude bits whose value times `scale` (> 0) exceeds 0.5 in float32."""
    if not scale > 0:
        raise _error(f"ternary_threshold_f32: scale must be > 0, got {scale!r}", usage=True)
    return fc_ternary_threshold_f32(scale)


def ternarize_f32(const uint32_t[::1] bits, uint32_t threshold_bits, int8_t[::1] codes):
    """Codes from float32 weights seen as their uint32 bit patterns."""
    if codes.shape[0] != bits.shape[0]:
        raise _error(f"ternarize_f32: {bits.shape[0]} weights but {codes.shape[0]} codes")
    with nogil:
        fc_ternarize_f32(u32p(bits), bits.shape[0], threshold_bits, i8w(codes))


def ternarize_bf16(const uint16_t[::1] x, uint16_t threshold_bits, int8_t[::1] codes):
    if codes.shape[0] != x.shape[0]:
        raise _error(f"ternarize_bf16: {x.shape[0]} weights but {codes.shape[0]} codes")
    with nogil:
        fc_ternarize_bf16(u16p(x), x.shape[0], threshold_bits, i8w(codes))


# -- layouts -------------------------------------------------------------------------------
def i2s_encode(const int8_t[::1] codes, int64_t block, uint8_t[::1] out):
    cdef int64_t bad
    _check_blocks("i2s_encode", codes.shape[0], block)
    if out.shape[0] < codes.shape[0] // 4:
        raise _error(f"i2s_encode: {codes.shape[0]} codes need {codes.shape[0] // 4} bytes, out holds {out.shape[0]}")
    with nogil:
        bad = fc_i2s_encode(i8p(codes), codes.shape[0], block, u8w(out))
    return bad


def i2s_decode(const uint8_t[::1] src, int64_t block, int8_t[::1] codes):
    cdef int64_t bad
    _check_blocks("i2s_decode", codes.shape[0], block)
    if src.shape[0] < codes.shape[0] // 4:
        raise _error(f"i2s_decode: {codes.shape[0]} codes need {codes.shape[0] // 4} bytes, src holds {src.shape[0]}")
    with nogil:
        bad = fc_i2s_decode(u8p(src), codes.shape[0], block, i8w(codes))
    return bad


def hf_encode(planes, uint8_t[::1] packed):
    """Pack four planes (int8 arrays of len(packed) codes, or None for padding rows)."""
    cdef const int8_t *ptr[4]
    cdef const int8_t[::1] view
    cdef int64_t bad, count = packed.shape[0]
    keep = []
    for p in range(4):
        ptr[p] = NULL
        if planes[p] is not None:
            view = planes[p]
            if view.shape[0] != count:
                raise _error(f"hf_encode: plane {p} holds {view.shape[0]} codes, packed {count} bytes")
            keep.append(view)
            ptr[p] = i8p(view)
    with nogil:
        bad = fc_hf_encode(ptr, count, u8w(packed))
    return bad


def hf_decode_plane(const uint8_t[::1] packed, int plane, int8_t[::1] codes):
    if codes.shape[0] != packed.shape[0] or not 0 <= plane < 4:
        raise _error(f"hf_decode_plane: {packed.shape[0]} bytes, {codes.shape[0]} codes, plane {plane} (0-3)")
    with nogil:
        fc_hf_decode_plane(u8p(packed), packed.shape[0], plane, i8w(codes))


def count_threes(const uint8_t[::1] src):
    """How many 2-bit fields of `src` hold 3."""
    cdef int64_t count
    with nogil:
        count = fc_count_threes(u8p(src), src.shape[0])
    return count


def tq2_encode(const int8_t[::1] codes, uint16_t d, uint8_t[::1] out):
    cdef int64_t bad, blocks = codes.shape[0] // 256
    _check_tq("tq2_encode", codes.shape[0], out.shape[0], 66)
    with nogil:
        bad = fc_tq2_encode(i8p(codes), blocks, d, u8w(out))
    return bad


def tq1_encode(const int8_t[::1] codes, uint16_t d, uint8_t[::1] out):
    cdef int64_t bad, blocks = codes.shape[0] // 256
    _check_tq("tq1_encode", codes.shape[0], out.shape[0], 54)
    with nogil:
        bad = fc_tq1_encode(i8p(codes), blocks, d, u8w(out))
    return bad


def tq2_decode(const uint8_t[::1] src, int8_t[::1] codes):
    """(bad fields, non-zero blocks, their first d, how many differ from it)."""
    cdef fc_tq_stats stats = fc_tq_stats(0, 0, 0, 0)
    cdef int64_t blocks = codes.shape[0] // 256
    _check_tq("tq2_decode", codes.shape[0], src.shape[0], 66)
    with nogil:
        fc_tq2_decode(u8p(src), blocks, i8w(codes), &stats)
    return stats.bad, stats.nonzero, stats.first_d, stats.mismatch


def tq1_decode(const uint8_t[::1] src, int8_t[::1] codes):
    """(bad bytes, non-zero blocks, their first d, how many differ from it)."""
    cdef fc_tq_stats stats = fc_tq_stats(0, 0, 0, 0)
    cdef int64_t blocks = codes.shape[0] // 256
    _check_tq("tq1_decode", codes.shape[0], src.shape[0], 54)
    with nogil:
        fc_tq1_decode(u8p(src), blocks, i8w(codes), &stats)
    return stats.bad, stats.nonzero, stats.first_d, stats.mismatch


# -- one pass between stored forms ---------------------------------------------------------
def bf16_to_i2s(const uint16_t[::1] w, uint16_t threshold_bits, int64_t block, uint8_t[::1] out):
    _check_blocks("bf16_to_i2s", w.shape[0], block)
    if out.shape[0] != w.shape[0] // 4:
        raise _error(f"bf16_to_i2s: {w.shape[0]} weights need {w.shape[0] // 4} bytes, out holds {out.shape[0]}")
    with nogil:
        fc_bf16_to_i2s(u16p(w), w.shape[0], threshold_bits, block, u8w(out))


def bf16_to_hf(const uint16_t[::1] w, int64_t out, int64_t inf, uint16_t threshold_bits, int64_t j0, int64_t j1,
               uint8_t[::1] packed):
    if w.shape[0] != out * inf:
        raise _error(f"bf16_to_hf: {w.shape[0]} weights for a {out} x {inf} matrix")
    _check_hf("bf16_to_hf", packed.shape[0], out, inf, j0, j1)
    with nogil:
        fc_bf16_to_hf(u16p(w), out, inf, threshold_bits, j0, j1, u8w(packed))


def hf_to_i2s(const uint8_t[::1] packed, int64_t out, int64_t inf, int64_t block, int64_t j0, int64_t j1,
              uint8_t[::1] dst):
    """The I2_S code bytes (all of `dst`, out * inf / 4) of the rows packed rows [j0, j1) hold."""
    _check_hf("hf_to_i2s", packed.shape[0], out, inf, j0, j1)
    _check_blocks("hf_to_i2s", inf, block)
    if dst.shape[0] < out * (inf // 4):
        raise _error(f"hf_to_i2s: a {out} x {inf} matrix needs {out * (inf // 4)} bytes, dst holds {dst.shape[0]}")
    with nogil:
        fc_hf_to_i2s(u8p(packed), out, inf, block, j0, j1, u8w(dst))


def i2s_to_hf(const uint8_t[::1] body, int64_t out, int64_t inf, int64_t block, int64_t j0, int64_t j1,
              uint8_t[::1] packed):
    """hf packed rows [j0, j1) (into the whole `packed`) from all of a weight's I2_S code bytes."""
    _check_blocks("i2s_to_hf", inf, block)
    if body.shape[0] != out * (inf // 4):
        raise _error(f"i2s_to_hf: a {out} x {inf} matrix has {out * (inf // 4)} code bytes, body holds {body.shape[0]}")
    _check_hf("i2s_to_hf", packed.shape[0], out, inf, j0, j1)
    with nogil:
        fc_i2s_to_hf(u8p(body), out, inf, block, j0, j1, u8w(packed))


def i2s_to_tq2(const uint8_t[::1] body, uint16_t d, uint8_t[::1] out):
    """TQ2_0 blocks from x86 I2_S code bytes (64 bytes per 256 codes)."""
    cdef int64_t blocks = body.shape[0] // 64
    if body.shape[0] % 64 or out.shape[0] != blocks * 66:
        raise _error(f"i2s_to_tq2: {body.shape[0]} code bytes (a multiple of 64) need {blocks * 66} bytes, out holds {out.shape[0]}")
    with nogil:
        fc_i2s_to_tq2(u8p(body), blocks, d, u8w(out))


# -- 16-bit maps ---------------------------------------------------------------------------
def lut16(const uint16_t[::1] src, const uint16_t[::1] lut, const uint8_t[::1] flag, uint16_t[::1] out):
    cdef int64_t flagged
    if lut.shape[0] != 65536 or flag.shape[0] != 65536 or out.shape[0] != src.shape[0]:
        raise _error(f"lut16: lut {lut.shape[0]} and flag {flag.shape[0]} entries (65536 each), src {src.shape[0]}, out {out.shape[0]}")
    with nogil:
        flagged = fc_lut16(u16p(src), src.shape[0], u16p(lut), u8p(flag), u16w(out))
    return flagged
