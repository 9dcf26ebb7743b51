/* Row x token tiles of the 16-bit-weight product, written once and compiled per
 * instruction set (half.c, half_avx2.c, half_avx512.c). The summation order is the
 * contract of half_isa.h. The including unit defines:
 *
 *   L16                      16 float32 lanes
 *   l16_zero()               all +0
 *   l16_x(const float *)     16 activations
 *   l16_bf16(const uint16_t *), l16_f16(const uint16_t *)   16 weights, converted exactly
 *   l16_mul_add(acc, w, x)   acc + w * x, rounded twice
 *   l16_fold(L16)            the lane fold of half_isa.h
 *   GEMV_R                   rows per tile for one token
 *   GEMM_R, GEMM_T           rows x tokens per tile otherwise
 *   HALF_ISA_NAME            the bp_half_isa to define
 */
#include "half_isa.h"

#include <string.h>

#define KIND_BF16 0
#define KIND_F16 1
#define MAX_R 8
#define MAX_T 8

static inline __attribute__((always_inline)) L16 load_w(int kind, const uint16_t *p)
{
    return kind == KIND_BF16 ? l16_bf16(p) : l16_f16(p);
}

/* R rows x T tokens; w[r], x[t] point at row / token starts. out[r * T + t]. */
static inline __attribute__((always_inline)) void tile(int kind, int R, int T,
                                                      const uint16_t *const *w,
                                                      const float *const *x, int64_t k,
                                                      float *out)
{
    L16 acc[MAX_R][MAX_T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = l16_zero();
    int64_t c = 0;
    for (; c + 16 <= k; c += 16) {
        L16 xv[MAX_T];
        for (int t = 0; t < T; t++)
            xv[t] = l16_x(x[t] + c);
        for (int r = 0; r < R; r++) {
            const L16 wv = load_w(kind, w[r] + c);
            for (int t = 0; t < T; t++)
                acc[r][t] = l16_mul_add(acc[r][t], wv, xv[t]);
        }
    }
    if (c < k) { /* the zero-padded last block */
        const int left = (int)(k - c);
        for (int r = 0; r < R; r++) {
            uint16_t wb[16] = {0};
            memcpy(wb, w[r] + c, sizeof(uint16_t) * (size_t)left);
            const L16 wv = load_w(kind, wb);
            for (int t = 0; t < T; t++) {
                float xb[16] = {0};
                memcpy(xb, x[t] + c, sizeof(float) * (size_t)left);
                acc[r][t] = l16_mul_add(acc[r][t], wv, l16_x(xb));
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            out[r * T + t] = l16_fold(acc[r][t]);
}

/* All rows x tokens in R x T tiles; a short tile repeats its last row / token and drops
 * those results. */
static inline __attribute__((always_inline)) void rows(int kind, int R, int T, const uint16_t *w,
                                                      int64_t k, int64_t nrows, const float *x,
                                                      int64_t n, float *y, int64_t y_stride)
{
    const uint16_t *wp[MAX_R];
    const float *xp[MAX_T];
    float out[MAX_R * MAX_T];
    for (int64_t t0 = 0; t0 < n; t0 += T) {
        const int nt = t0 + T <= n ? T : (int)(n - t0);
        for (int t = 0; t < T; t++)
            xp[t] = x + (t0 + (t < nt ? t : nt - 1)) * k;
        for (int64_t r0 = 0; r0 < nrows; r0 += R) {
            const int nr = r0 + R <= nrows ? R : (int)(nrows - r0);
            for (int r = 0; r < R; r++)
                wp[r] = w + (r0 + (r < nr ? r : nr - 1)) * k;
            tile(kind, R, T, wp, xp, k, out);
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++)
                    y[(t0 + t) * y_stride + r0 + r] = out[r * T + t];
        }
    }
}

#define DEFINE_HALF_ROWS(fn, kind)                                                           \
    static void fn(const uint16_t *w, int64_t k, int64_t nrows, const float *x, int64_t n,  \
                   float *y, int64_t y_stride)                                               \
    {                                                                                        \
        if (n == 1)                                                                          \
            rows(kind, GEMV_R, 1, w, k, nrows, x, n, y, y_stride);                           \
        else                                                                                 \
            rows(kind, GEMM_R, GEMM_T, w, k, nrows, x, n, y, y_stride);                      \
    }

DEFINE_HALF_ROWS(half_rows_bf16, KIND_BF16)
DEFINE_HALF_ROWS(half_rows_f16, KIND_F16)

const bp_half_isa HALF_ISA_NAME = {half_rows_bf16, half_rows_f16};
