/* AVX-512 VNNI tiles: _mm512_dpbusd_epi32 adds four u8 x s8 products straight into int32
 * lanes without saturation, so no int16 stage and no flushes.
 *
 * The products of several tokens (tile_impl.h) shift each 2-bit plane down once and reuse
 * it for every token. A single token (decode) cannot amortise that, so its tiles skip the
 * shift: plane j is w & (3 << s), a code times 2^s (at most 128 as u8), summed in its own
 * accumulator and shifted back at the end (exact: every lane is a multiple of 2^s).
 * Lanes stay far from int32 limits: |2^s * c * q| <= 128 * 128, four per dot, one dot per
 * 256 weights, so |lane| <= 2^16 * K / 256 <= 2^24 (i2_s) or 2^16 * K / 64 <= 2^26 (hf) for K <= 2^16. */
#include <immintrin.h>
#include <stdint.h>

#define VB 64
typedef __m512i vec;

static inline vec v_load(const void *p) { return _mm512_loadu_si512(p); }

static inline vec v_load_part(const uint8_t *p, int n)
{
    return _mm512_maskz_loadu_epi8((__mmask64)((1ULL << n) - 1), p);
}

static inline vec v_plane(vec w, int shift)
{
    return _mm512_and_si512(_mm512_srli_epi16(w, shift), _mm512_set1_epi8(3));
}

typedef struct { vec s32; } acc_t;
#define FLUSH_DOTS 0

static inline void acc_zero(acc_t *a) { a->s32 = _mm512_setzero_si512(); }

/* _mm512_dpbusd_epi32 as inline asm: around the intrinsic GCC 12 copies each accumulator
 * twice per loop iteration (its destination is tied), which halved the decode speed. */
static inline vec dpbusd(vec acc, vec codes, vec act)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(codes), "vm"(act));
    return acc;
}

static inline void acc_dot(acc_t *a, vec codes, vec act) { a->s32 = dpbusd(a->s32, codes, act); }

static inline void acc_flush(acc_t *a) { (void)a; }

static inline int32_t acc_total(acc_t *a) { return _mm512_reduce_add_epi32(a->s32); }

/* Tile sizes (rows x tokens), the best of a few measured on one Sapphire Rapids core. */
#define I2S_R 4
#define I2S_T 4
#define HF_P 1
#define HF_T 2

#define CUSTOM_GEMV
#include "tl_impl.h"
#include "tq1_impl.h"
#include "tile_impl.h"

#ifndef GEMV_ROWS
#define GEMV_ROWS 2 /* more rows run out of registers (4 accumulators per row) */
#endif

static inline vec plane_mask(int shift) { return _mm512_set1_epi8((char)(3 << shift)); }

/* Plane layouts, one token: acc[r][j] sums plane j (bits 6-2j) of row r, scaled by 4^(3-j). */
INLINE void i2s_gemv_chunk(const int R, const uint8_t *const *w, const int8_t *act, int64_t c, int64_t at,
                           int tail, vec acc[][4])
{
    const vec mask[4] = {plane_mask(6), plane_mask(4), plane_mask(2), plane_mask(0)};
    vec a[4];
    for (int j = 0; j < 4; j++)
        a[j] = v_load(act + (c * 4 + j) * VB);
    for (int r = 0; r < R; r++) {
        const vec wv = tail == VB ? v_load(w[r] + at) : v_load_part(w[r] + at, tail);
        PREFETCH(w[r] + at);
        for (int j = 0; j < 4; j++)
            acc[r][j] = dpbusd(acc[r][j], _mm512_and_si512(wv, mask[j]), a[j]);
    }
}

INLINE void i2s_gemv_tile(const int R, const uint8_t *const *w, const int8_t *act, const bp_walk *walk,
                          int32_t *sums)
{
    vec acc[BP_MAX_ROWS][4];
    const int64_t nchunks = walk->nchunks;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < 4; j++)
            acc[r][j] = _mm512_setzero_si512();
    for (int64_t c = 0; c < nchunks - 1; c++)
        i2s_gemv_chunk(R, w, act, c, bp_code_at(walk, c * VB), VB, acc);
    i2s_gemv_chunk(R, w, act, nchunks - 1, bp_code_at(walk, (nchunks - 1) * VB), walk->tail, acc);
    for (int r = 0; r < R; r++) {
        vec total = _mm512_add_epi32(acc[r][3], _mm512_srai_epi32(acc[r][2], 2));
        total = _mm512_add_epi32(total, _mm512_srai_epi32(acc[r][1], 4));
        total = _mm512_add_epi32(total, _mm512_srai_epi32(acc[r][0], 6));
        sums[r] = _mm512_reduce_add_epi32(total);
    }
}

static void i2s_gemv(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                     int32_t *sums)
{
    const uint8_t *rows[GEMV_ROWS];
    int64_t r = 0;
    for (; r + GEMV_ROWS <= nrows; r += GEMV_ROWS) {
        for (int i = 0; i < GEMV_ROWS; i++)
            rows[i] = w + (r + i) * walk->row_bytes;
        i2s_gemv_tile(GEMV_ROWS, rows, act[0], walk, sums + r);
    }
    for (; r < nrows; r++) {
        rows[0] = w + r * walk->row_bytes;
        i2s_gemv_tile(1, rows, act[0], walk, sums + r);
    }
}

/* hf, one token: each output row is one plane (bits 2p) of a packed row, so one
 * accumulator per output row, scaled by 4^p. */
INLINE void hf_gemv_chunk(const uint8_t *w, const int8_t *act, int64_t c, int tail, vec *acc)
{
    const vec mask[4] = {plane_mask(0), plane_mask(2), plane_mask(4), plane_mask(6)};
    const vec a = v_load(act + c * VB);
    const vec wv = tail == VB ? v_load(w + c * VB) : v_load_part(w + c * VB, tail);
    PREFETCH(w + c * VB);
    for (int p = 0; p < 4; p++)
        acc[p] = dpbusd(acc[p], _mm512_and_si512(wv, mask[p]), a);
}

static void hf_gemv(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                    int32_t *sums)
{
    const int64_t nchunks = walk->nchunks;
    const int tail = walk->tail;
    for (int64_t r = 0; r < nrows; r++, w += walk->row_bytes, sums += 4) {
        vec acc[4];
        for (int p = 0; p < 4; p++)
            acc[p] = _mm512_setzero_si512();
        for (int64_t c = 0; c < nchunks - 1; c++)
            hf_gemv_chunk(w, act[0], c, VB, acc);
        hf_gemv_chunk(w, act[0], nchunks - 1, tail, acc);
        for (int p = 0; p < 4; p++)
            sums[p] = _mm512_reduce_add_epi32(_mm512_srai_epi32(acc[p], 2 * p));
    }
}

DEFINE_ISA(bp_isa_avx512vnni, "avx512vnni")
