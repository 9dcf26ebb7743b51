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

/* Each block is first unpacked to 64 codes (0..2) in weight order, then dotted with the
 * activations: two short loops the compiler vectorises with baseline SSE2. */
static inline int32_t dot64(const uint8_t *c, const int8_t *a)
{
    int32_t acc = 0;
    for (int e = 0; e < 64; e++)
        acc += (int16_t)c[e] * (int16_t)a[e];
    return acc;
}

/* IQ2_BN block: byte j, bits 2l hold the code of weight 16l + j. */
static inline __attribute__((always_inline)) void iq2_unpack(const uint8_t *b, uint8_t *c)
{
    for (int l = 0; l < 4; l++)
        for (int j = 0; j < 16; j++)
            c[16 * l + j] = (uint8_t)((b[j] >> (2 * l)) & 3);
}

/* One row layout walked for both types: a row scale of `scale_bytes` (zero: every code +1, so
 * the row's sum is the activations' own sum), then 64-element blocks of `block_bytes` that
 * `unpack` turns into codes 0..2. Forced inline: through a plain pointer gcc left iq1_unpack a
 * call per block (2.2 ms against 1.0 ms for a 2560x2560 GEMV, benches/bench_kernel.py). */
static inline __attribute__((always_inline)) void bn_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *a, int32_t *sums,
                           int (*scale_is_zero)(const uint8_t *), int scale_bytes, int block_bytes,
                           void (*unpack)(const uint8_t *, uint8_t *))
{
    uint8_t c[64];
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + r * walk->row_bytes;
        int32_t acc = 0;
        if (scale_is_zero(row)) {
            acc = sum_of(a, walk->nchunks * 64);
        } else {
            for (int64_t blk = 0; blk < walk->nchunks; blk++) {
                unpack(row + scale_bytes + block_bytes * blk, c);
                acc += dot64(c, a + 64 * blk);
            }
        }
        sums[r] = acc;
    }
}

static void iq2_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                     int32_t *sums)
{
    bn_rows(w, walk, nrows, act[0], sums, f32_is_zero, 4, 16, iq2_unpack);
}

static void iq2_r4_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                        int32_t *sums)
{
    const int8_t *a = act[0];
    const int64_t group = 4 * walk->row_bytes;
    int32_t qsum = 0;
    for (int64_t e = 0; e < 4 * walk->nchunks * 64; e += 16)
        qsum += a[e] + a[e + 1] + a[e + 2] + a[e + 3]; /* lanes 0..3: each column once */
    for (int64_t g0 = 0; g0 < nrows; g0 += 4) {
        const uint8_t *g = w + (g0 / 4) * group;
        int32_t lanes[16] = {0};
        for (int64_t ib = 0; ib < walk->nchunks; ib++) {
            const uint8_t *b = g + 16 + 64 * ib;
            const int8_t *x = a + 256 * ib;
            for (int m = 0; m < 4; m++)
                for (int l = 0; l < 4; l++)
                    for (int q = 0; q < 16; q++)
                        lanes[q] += (int16_t)((b[16 * l + q] >> (2 * m)) & 3) * (int16_t)x[16 * (4 * m + l) + q];
        }
        for (int rr = 0; rr < 4 && g0 + rr < nrows; rr++)
            sums[g0 + rr] = f32_is_zero(g + 4 * rr) ? qsum
                          : lanes[4 * rr] + lanes[4 * rr + 1] + lanes[4 * rr + 2] + lanes[4 * rr + 3];
    }
}

void bp_iq_bn_panel(int layout, const int8_t *q, int64_t k, int8_t *panel)
{
    if (layout != BP_LAYOUT_IQ2BN_R4) {
        memcpy(panel, q, (size_t)k);
        return;
    }
    for (int64_t ib = 0; ib < k / 64; ib++)
        for (int m = 0; m < 4; m++)
            for (int l = 0; l < 4; l++)
                for (int lane = 0; lane < 16; lane++)
                    panel[256 * ib + 16 * (4 * m + l) + lane] = q[64 * ib + 16 * l + 4 * m + lane % 4];
}

/* DIGITS[b][j]: digit of weight 3^j of a base-3 byte b = ceil(256 v / 243), i.e.
 * ((b * 3^(4-j)) mod 256) * 3 >> 8 (generated from that formula; iq_bn.py's BYTE_TRITS reversed). */
static const uint8_t DIGITS[256][5] = {
    {0,0,0,0,0}, {0,0,0,0,0}, {1,0,0,0,0}, {2,0,0,0,0}, {0,1,0,0,0}, {1,1,0,0,0}, {2,1,0,0,0}, {0,2,0,0,0},
    {1,2,0,0,0}, {2,2,0,0,0}, {0,0,1,0,0}, {1,0,1,0,0}, {2,0,1,0,0}, {0,1,1,0,0}, {1,1,1,0,0}, {2,1,1,0,0},
    {0,2,1,0,0}, {1,2,1,0,0}, {2,2,1,0,0}, {0,0,2,0,0}, {0,0,2,0,0}, {1,0,2,0,0}, {2,0,2,0,0}, {0,1,2,0,0},
    {1,1,2,0,0}, {2,1,2,0,0}, {0,2,2,0,0}, {1,2,2,0,0}, {2,2,2,0,0}, {0,0,0,1,0}, {1,0,0,1,0}, {2,0,0,1,0},
    {0,1,0,1,0}, {1,1,0,1,0}, {2,1,0,1,0}, {0,2,0,1,0}, {1,2,0,1,0}, {2,2,0,1,0}, {0,0,1,1,0}, {1,0,1,1,0},
    {1,0,1,1,0}, {2,0,1,1,0}, {0,1,1,1,0}, {1,1,1,1,0}, {2,1,1,1,0}, {0,2,1,1,0}, {1,2,1,1,0}, {2,2,1,1,0},
    {0,0,2,1,0}, {1,0,2,1,0}, {2,0,2,1,0}, {0,1,2,1,0}, {1,1,2,1,0}, {2,1,2,1,0}, {0,2,2,1,0}, {1,2,2,1,0},
    {2,2,2,1,0}, {0,0,0,2,0}, {1,0,0,2,0}, {2,0,0,2,0}, {2,0,0,2,0}, {0,1,0,2,0}, {1,1,0,2,0}, {2,1,0,2,0},
    {0,2,0,2,0}, {1,2,0,2,0}, {2,2,0,2,0}, {0,0,1,2,0}, {1,0,1,2,0}, {2,0,1,2,0}, {0,1,1,2,0}, {1,1,1,2,0},
    {2,1,1,2,0}, {0,2,1,2,0}, {1,2,1,2,0}, {2,2,1,2,0}, {0,0,2,2,0}, {1,0,2,2,0}, {2,0,2,2,0}, {2,0,2,2,0},
    {0,1,2,2,0}, {1,1,2,2,0}, {2,1,2,2,0}, {0,2,2,2,0}, {1,2,2,2,0}, {2,2,2,2,0}, {0,0,0,0,1}, {1,0,0,0,1},
    {2,0,0,0,1}, {0,1,0,0,1}, {1,1,0,0,1}, {2,1,0,0,1}, {0,2,0,0,1}, {1,2,0,0,1}, {2,2,0,0,1}, {0,0,1,0,1},
    {1,0,1,0,1}, {2,0,1,0,1}, {0,1,1,0,1}, {0,1,1,0,1}, {1,1,1,0,1}, {2,1,1,0,1}, {0,2,1,0,1}, {1,2,1,0,1},
    {2,2,1,0,1}, {0,0,2,0,1}, {1,0,2,0,1}, {2,0,2,0,1}, {0,1,2,0,1}, {1,1,2,0,1}, {2,1,2,0,1}, {0,2,2,0,1},
    {1,2,2,0,1}, {2,2,2,0,1}, {0,0,0,1,1}, {1,0,0,1,1}, {2,0,0,1,1}, {0,1,0,1,1}, {1,1,0,1,1}, {1,1,0,1,1},
    {2,1,0,1,1}, {0,2,0,1,1}, {1,2,0,1,1}, {2,2,0,1,1}, {0,0,1,1,1}, {1,0,1,1,1}, {2,0,1,1,1}, {0,1,1,1,1},
    {1,1,1,1,1}, {2,1,1,1,1}, {0,2,1,1,1}, {1,2,1,1,1}, {2,2,1,1,1}, {0,0,2,1,1}, {1,0,2,1,1}, {2,0,2,1,1},
    {0,1,2,1,1}, {1,1,2,1,1}, {1,1,2,1,1}, {2,1,2,1,1}, {0,2,2,1,1}, {1,2,2,1,1}, {2,2,2,1,1}, {0,0,0,2,1},
    {1,0,0,2,1}, {2,0,0,2,1}, {0,1,0,2,1}, {1,1,0,2,1}, {2,1,0,2,1}, {0,2,0,2,1}, {1,2,0,2,1}, {2,2,0,2,1},
    {0,0,1,2,1}, {1,0,1,2,1}, {2,0,1,2,1}, {0,1,1,2,1}, {1,1,1,2,1}, {2,1,1,2,1}, {2,1,1,2,1}, {0,2,1,2,1},
    {1,2,1,2,1}, {2,2,1,2,1}, {0,0,2,2,1}, {1,0,2,2,1}, {2,0,2,2,1}, {0,1,2,2,1}, {1,1,2,2,1}, {2,1,2,2,1},
    {0,2,2,2,1}, {1,2,2,2,1}, {2,2,2,2,1}, {0,0,0,0,2}, {1,0,0,0,2}, {2,0,0,0,2}, {0,1,0,0,2}, {1,1,0,0,2},
    {2,1,0,0,2}, {0,2,0,0,2}, {0,2,0,0,2}, {1,2,0,0,2}, {2,2,0,0,2}, {0,0,1,0,2}, {1,0,1,0,2}, {2,0,1,0,2},
    {0,1,1,0,2}, {1,1,1,0,2}, {2,1,1,0,2}, {0,2,1,0,2}, {1,2,1,0,2}, {2,2,1,0,2}, {0,0,2,0,2}, {1,0,2,0,2},
    {2,0,2,0,2}, {0,1,2,0,2}, {1,1,2,0,2}, {2,1,2,0,2}, {0,2,2,0,2}, {0,2,2,0,2}, {1,2,2,0,2}, {2,2,2,0,2},
    {0,0,0,1,2}, {1,0,0,1,2}, {2,0,0,1,2}, {0,1,0,1,2}, {1,1,0,1,2}, {2,1,0,1,2}, {0,2,0,1,2}, {1,2,0,1,2},
    {2,2,0,1,2}, {0,0,1,1,2}, {1,0,1,1,2}, {2,0,1,1,2}, {0,1,1,1,2}, {1,1,1,1,2}, {2,1,1,1,2}, {0,2,1,1,2},
    {1,2,1,1,2}, {1,2,1,1,2}, {2,2,1,1,2}, {0,0,2,1,2}, {1,0,2,1,2}, {2,0,2,1,2}, {0,1,2,1,2}, {1,1,2,1,2},
    {2,1,2,1,2}, {0,2,2,1,2}, {1,2,2,1,2}, {2,2,2,1,2}, {0,0,0,2,2}, {1,0,0,2,2}, {2,0,0,2,2}, {0,1,0,2,2},
    {1,1,0,2,2}, {2,1,0,2,2}, {0,2,0,2,2}, {1,2,0,2,2}, {2,2,0,2,2}, {2,2,0,2,2}, {0,0,1,2,2}, {1,0,1,2,2},
    {2,0,1,2,2}, {0,1,1,2,2}, {1,1,1,2,2}, {2,1,1,2,2}, {0,2,1,2,2}, {1,2,1,2,2}, {2,2,1,2,2}, {0,0,2,2,2},
    {1,0,2,2,2}, {2,0,2,2,2}, {0,1,2,2,2}, {1,1,2,2,2}, {2,1,2,2,2}, {0,2,2,2,2}, {1,2,2,2,2}, {2,2,2,2,2},
};

/* IQ1_BN block (13 bytes): ql[3 i16 + kk] holds weights 16 i16 + 5 kk + j (digit j), `extra`
 * the 16th weight of each group (digit i16). */
static inline __attribute__((always_inline)) void iq1_unpack(const uint8_t *b, uint8_t *c)
{
    for (int i16 = 0; i16 < 4; i16++) {
        for (int kk = 0; kk < 3; kk++)
            memcpy(c + 16 * i16 + 5 * kk, DIGITS[b[3 * i16 + kk]], 5);
        c[16 * i16 + 15] = DIGITS[b[12]][i16];
    }
}

static void iq1_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                     int32_t *sums)
{
    bn_rows(w, walk, nrows, act[0], sums, f16_is_zero, 2, 13, iq1_unpack);
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
