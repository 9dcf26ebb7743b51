/* Portable walks of ik_llama.cpp's BitNet types (iq_bn.h). Compiled with baseline flags. */
#include "iq_bn.h"

#include "bitnet_kernels.h"

#include <string.h>

static int32_t sum_of(const int8_t *a, int64_t k)
{
    int32_t s = 0;
    for (int64_t i = 0; i < k; i++)
        s += a[i];
    return s;
}

static int f32_is_zero(const uint8_t *p)
{
    float d;
    memcpy(&d, p, 4);
    return d == 0.0f;
}

static int f16_is_zero(const uint8_t *p) { return ((p[0] | p[1] << 8) & 0x7fff) == 0; }

/* IQ2_BN block: byte j, bits 2l hold the code of weight 16l + j. */
static int32_t iq2_block(const uint8_t *b, const int8_t *a)
{
    int32_t acc = 0;
    for (int j = 0; j < 16; j++)
        acc += (b[j] & 3) * a[j] + ((b[j] >> 2) & 3) * a[16 + j] + ((b[j] >> 4) & 3) * a[32 + j]
             + (b[j] >> 6) * a[48 + j];
    return acc;
}

static void iq2_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                     int32_t *sums)
{
    const int8_t *a = act[0];
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + r * walk->row_bytes;
        int32_t acc = 0;
        if (f32_is_zero(row)) {
            acc = sum_of(a, walk->nchunks * 64);
        } else {
            for (int64_t blk = 0; blk < walk->nchunks; blk++)
                acc += iq2_block(row + 4 + 16 * blk, a + 64 * blk);
        }
        sums[r] = acc;
    }
}

/* IQ2_BN_R4: group of rows 4g..4g+3 = 16 bytes of d, then per 64 columns (ib) 64 bytes; byte
 * 64ib + 16l + 4rr + i, bits 2m, holds column 64ib + 16l + 4m + i of row 4g + rr. */
static void iq2_r4_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                        int32_t *sums)
{
    const int8_t *a = act[0];
    const int64_t k = walk->nchunks * 64, group = 4 * walk->row_bytes;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *g = w + (r / 4) * group;
        const int rr = (int)(r % 4);
        int32_t acc = 0;
        if (f32_is_zero(g + 4 * rr)) {
            acc = sum_of(a, k);
        } else {
            for (int64_t ib = 0; ib < walk->nchunks; ib++)
                for (int l = 0; l < 4; l++) {
                    const uint8_t *b = g + 16 + 64 * ib + 16 * l + 4 * rr;
                    const int8_t *x = a + 64 * ib + 16 * l;
                    for (int i = 0; i < 4; i++)
                        acc += (b[i] & 3) * x[i] + ((b[i] >> 2) & 3) * x[4 + i] + ((b[i] >> 4) & 3) * x[8 + i]
                             + (b[i] >> 6) * x[12 + i];
                }
        }
        sums[r] = acc;
    }
}

/* Digit of weight 3^j in a base-3 byte b = ceil(256 v / 243): ((b * 3^(4-j)) mod 256) * 3 >> 8. */
static inline int digit(unsigned b, unsigned mult) { return (int)(((b * mult) & 255u) * 3u >> 8); }

/* IQ1_BN block (13 bytes): ql[3 i16 + kk] holds weights 16 i16 + 5 kk + j (digit j), `extra`
 * the 16th weight of each group (digit i16). */
static int32_t iq1_block(const uint8_t *b, const int8_t *a)
{
    static const unsigned mult[5] = {81, 27, 9, 3, 1};
    int32_t acc = 0;
    for (int i16 = 0; i16 < 4; i16++) {
        for (int kk = 0; kk < 3; kk++)
            for (int j = 0; j < 5; j++)
                acc += digit(b[3 * i16 + kk], mult[j]) * a[16 * i16 + 5 * kk + j];
        acc += digit(b[12], mult[i16]) * a[16 * i16 + 15];
    }
    return acc;
}

static void iq1_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                     int32_t *sums)
{
    const int8_t *a = act[0];
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + r * walk->row_bytes;
        int32_t acc = 0;
        if (f16_is_zero(row)) {
            acc = sum_of(a, walk->nchunks * 64);
        } else {
            for (int64_t blk = 0; blk < walk->nchunks; blk++)
                acc += iq1_block(row + 2 + 13 * blk, a + 64 * blk);
        }
        sums[r] = acc;
    }
}

bp_rows_fn bp_iq_bn_rows(int layout)
{
    switch (layout) {
    case BP_LAYOUT_IQ1BN: return iq1_rows;
    case BP_LAYOUT_IQ2BN: return iq2_rows;
    case BP_LAYOUT_IQ2BN_R4: return iq2_r4_rows;
    default: return NULL;
    }
}
