/* The contract between the portable driver (driver.c) and each instruction-set unit.
 *
 * A unit provides functions that compute the exact int32 sums sum_k code[row, k] * q[tok, k]
 * reading the stored weight bytes directly (codes are t + 1, so the driver subtracts
 * sum_k q[tok, k]). Three families:
 *
 * Plane layouts (i2_s, i2_s_arm, tq2_0, hf): 2-bit codes, four to a byte. A tile walks a row
 * in chunks of `vb` code bytes; `bp_code_at` maps a code byte of the row to its offset (TQ2_0
 * blocks carry a 2-byte scale after every 64 code bytes, which the walk steps over).
 *   i2_s, i2_s_arm, tq2_0: the activation panel of a token holds, per chunk, 4 planes of
 *         vb bytes; byte i of plane j is the element whose code sits at bit 6-2j of code
 *         byte i of the chunk (driver.c fills it per layout).
 *   hf:   a chunk is vb consecutive columns of one packed row (4 output rows, one per
 *         2-bit plane); the panel is the token's q in natural order, zero-padded.
 * The last chunk may be short: `tail` is its code byte count (1..vb); the panel is zero
 * there, so reading fewer weight bytes is all a tile must take care of.
 *
 * tq1_0: rows of 54-byte blocks (base-3 trits); the panel is q in natural order.
 *
 * tl1, tl2: bytes tiled over BM rows (see bitnet_pack/formats/layouts/tl1.py, tl2.py); the "panel"
 * is the token's lookup table, one 32-byte group per activation pair (TL1, TL2's last
 * columns) or triplet (TL2): the low bytes of 16 int16 entries, then their high bytes, so
 * that two byte shuffles look up 16 or 32 entries at once. Entry i of pair p is
 * t0*q[2p] + t1*q[2p+1] with i = 3*t0 + t1 + 4 (0..8); entry v of triplet g is
 * t0*q[3g] + t1*q[3g+1] + t2*q[3g+2] with v = 9*t0 + 3*t1 + t2 (0..13), which a stored sign
 * bit negates. Unused entries are 0. A tile adds entries for the BM rows of one row tile.
 */
#ifndef BITNET_PACK_ISA_H
#define BITNET_PACK_ISA_H

#include <stdint.h>

#define BP_MAX_ROWS 8   /* rows per tile (plane layouts) or output rows per tile (hf: 4 per packed row) */
#define BP_MAX_TOKS 4   /* tokens per tile */

typedef struct {
    int64_t row_bytes;    /* bytes from one stored row to the next */
    int64_t nchunks;      /* chunks of vb code bytes in a row */
    int tail;             /* code bytes in the last chunk (1..vb) */
    int block_shift;      /* log2 of the code bytes of one stored block (30: one block) */
    int64_t block_stride; /* bytes from one stored block to the next (codes + scale) */
} bp_walk;

/* Offset in the row of its code byte number `byte`. */
static inline int64_t bp_code_at(const bp_walk *walk, int64_t byte)
{
    return (byte >> walk->block_shift) * walk->block_stride + (byte & ((INT64_C(1) << walk->block_shift) - 1));
}

/* Row functions: stored rows 0..nrows-1 from `w` against `toks` token panels (act[0..toks-1]).
 * Writes sums[(row * planes + plane) * toks + t], the sum of code * q with codes as stored
 * (0..2); planes is 4 for hf, where plane p of stored row j is output row p * R + j, else 1. */
typedef void (*bp_rows_fn)(const uint8_t *w, const bp_walk *walk, int64_t nrows,
                           const int8_t *const *act, int32_t *sums);

/* TL tiling and sizes (M, K; BM, BK, bm; TL2's split of K). */
typedef struct {
    int64_t m, k, BM, BK, bm, three_k, two_k;
} bp_tiling;

/* Row tile `tm` (rows tm*BM ..) of TL bytes `w` against one token's table: sums[BM], added to. */
typedef void (*bp_tl_fn)(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut,
                         int32_t *sums);

/* Quantize one token (see quant_impl.h); returns 1, writing nothing, on NaN/Inf. */
typedef int (*bp_quantize_fn)(const float *x, int64_t k, int8_t *q, float *s);

typedef struct {
    const char *name;
    int vb;                 /* code bytes per chunk */
    bp_quantize_fn quantize;
    bp_rows_fn plane_gemv;  /* 1 token */
    bp_rows_fn plane_gemm;  /* plane_toks tokens */
    int plane_toks;
    bp_rows_fn hf_gemv;
    bp_rows_fn hf_gemm;
    int hf_toks;
    bp_rows_fn tq1_rows;    /* 1 token */
    bp_tl_fn tl1;
    bp_tl_fn tl2;
} bp_isa;

/* The portable functions (scalar.c), which units without their own use. */
void bp_scalar_tq1(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                   int32_t *sums);
void bp_scalar_tl1(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums);
void bp_scalar_tl2(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums);

#define BP_GROUP_BYTES 32 /* one pair's or triplet's table: 16 low bytes, 16 high bytes */

/* Entry i of a group's table. */
static inline int bp_entry(const uint8_t *group, int i) { return (int16_t)(group[i] | group[16 + i] << 8); }

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
