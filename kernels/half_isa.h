/* The 16-bit-weight product (half.c): y[n, v] = sum_k float(w[v, k]) * x[n, k] in float32,
 * in ONE summation order that every unit and the numpy reference (kernel.py,
 * reference_half_matmul) share, so all agree bit for bit:
 *
 *   K is cut into blocks of 16 (the last one zero-padded in w and x: +0 * +0 = +0);
 *   lane j (0..15) starts at +0 and, block by block in increasing k, adds the float32
 *   product w[v, 16b + j] * x[n, 16b + j] (multiply rounded, then add rounded: no FMA);
 *   the 16 lanes are then folded in halves:
 *       a[j] = lane[j] + lane[j + 8]   (j < 8)
 *       b[j] = a[j] + a[j + 4]         (j < 4)
 *       c[j] = b[j] + b[j + 2]         (j < 2)
 *       y    = c[0] + c[1]
 *
 * Weights convert exactly: bf16 bits << 16, f16 by F16C or bit manipulation. Units are
 * compiled with -ffp-contract=off. NaN results are NaN, their payload bits unspecified.
 */
#ifndef BITNET_PACK_HALF_ISA_H
#define BITNET_PACK_HALF_ISA_H

#include <stdint.h>

/* Rows 0..nrows-1 of w (each k long) against tokens 0..n-1 of x (each k long);
 * y[t * y_stride + r]. */
typedef void (*bp_half_rows_fn)(const uint16_t *w, int64_t k, int64_t nrows, const float *x,
                                int64_t n, float *y, int64_t y_stride);

typedef struct {
    bp_half_rows_fn bf16;
    bp_half_rows_fn f16;
} bp_half_isa;

extern const bp_half_isa bp_half_scalar;
#ifdef BP_HAVE_HALF_AVX2
extern const bp_half_isa bp_half_avx2; /* needs AVX2 and, for f16, F16C */
#endif
#ifdef BP_HAVE_HALF_AVX512
extern const bp_half_isa bp_half_avx512;
#endif

#endif
