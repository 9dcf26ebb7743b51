/* The contract between the portable driver (driver.c) and each instruction-set unit.
 *
 * A unit provides "tiles": functions that compute the exact int32 sums
 * sum_k code[row, k] * q[tok, k] for a few rows and a few tokens at once, reading the
 * packed weight bytes directly (codes are t + 1, so the driver subtracts sum_k q[tok, k]).
 *
 * Chunks. A tile walks a row in chunks of `vb` weight bytes (vb = vector width):
 *   i2_s: a chunk is vb/32 blocks of 128 weights; the activation panel of a token holds,
 *         per chunk, 4 planes of vb bytes, plane j = elements 32j..32j+31 of each block
 *         (the elements whose codes sit at bit 6-2j of the weight bytes).
 *   hf:   a chunk is vb consecutive columns of one packed row (4 output rows, one per
 *         2-bit plane); the panel is the token's q in natural order, zero-padded.
 * The last chunk may be short: `tail` is its weight byte count (1..vb); the panel is
 * zero there, so reading fewer weight bytes is all a tile must take care of.
 */
#ifndef BITNET_PACK_ISA_H
#define BITNET_PACK_ISA_H

#include <stdint.h>

#define BP_MAX_ROWS 8   /* rows per tile (i2_s) or output rows per tile (hf: 4 per packed row) */
#define BP_MAX_TOKS 4   /* tokens per tile */

/* Row functions: stored rows 0..nrows-1 from `w` (each `row_bytes` long) against `toks`
 * token panels (act[0..toks-1]). Writes sums[(row * planes + plane) * toks + t], the sum
 * of code * q with codes as stored (0..2); planes is 1 for i2_s and 4 for hf, where plane
 * p of stored row j is output row p * R + j. */
typedef void (*bp_rows_fn)(const uint8_t *w, int64_t row_bytes, int64_t nrows,
                           const int8_t *const *act, int64_t nchunks, int tail, int32_t *sums);

/* Quantize one token (see quant_impl.h); returns 1, writing nothing, on NaN/Inf. */
typedef int (*bp_quantize_fn)(const float *x, int64_t k, int8_t *q, float *s);

typedef struct {
    const char *name;
    int vb;                 /* weight bytes per chunk */
    bp_quantize_fn quantize;
    bp_rows_fn i2s_gemv;    /* 1 token */
    bp_rows_fn i2s_gemm;    /* i2s_toks tokens */
    int i2s_toks;
    bp_rows_fn hf_gemv;
    bp_rows_fn hf_gemm;
    int hf_toks;
} bp_isa;

extern const bp_isa bp_isa_scalar;
#ifdef BP_HAVE_AVX2
extern const bp_isa bp_isa_avx2;
#endif
#ifdef BP_HAVE_AVX512
extern const bp_isa bp_isa_avx512;
#endif
#ifdef BP_HAVE_AVX512VNNI
extern const bp_isa bp_isa_avx512vnni;
#endif

#endif
