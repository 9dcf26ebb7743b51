/* Each layout's walk, activation panel and shape rule for the driver (driver.c), and the byte
 * checks. Compiled with baseline flags. */
#include "bitnet_kernels.h"
#include "iq_bn.h"
#include "panels.h"

#include <string.h>

int bp_family(int layout)
{
    switch (layout) {
    case BP_LAYOUT_HF: return BP_HF_PLANES;
    case BP_LAYOUT_TQ1: return BP_TQ1_ROWS;
    case BP_LAYOUT_TL1: case BP_LAYOUT_TL2: return BP_TL_TILES;
    case BP_LAYOUT_IQ1BN: case BP_LAYOUT_IQ2BN: case BP_LAYOUT_IQ2BN_R4: return BP_IQ_ROWS;
    default: return BP_PLANES;
    }
}

#define ONE_BLOCK 30 /* block_shift of a row stored without per-block scales */

bp_geometry bp_geometry_of(const bp_isa *isa, int layout, int64_t m, int64_t k, const int64_t *tiling)
{
    bp_geometry g = {m, {k / 4, 0, 0, ONE_BLOCK, INT64_C(1) << ONE_BLOCK}, 0, {0}};
    const int64_t vb = isa->vb;
    int64_t code_bytes = k / 4;
    switch (layout) {
    case BP_LAYOUT_HF:
        g.rows = (m + 3) / 4;
        g.walk.row_bytes = code_bytes = k;
        break;
    case BP_LAYOUT_TQ2: /* 64 code bytes, then the 2-byte d */
        g.walk.row_bytes = k / 256 * 66;
        g.walk.block_shift = 6;
        g.walk.block_stride = 66;
        break;
    case BP_LAYOUT_TQ1: /* one 54-byte block per "chunk" */
        g.walk.row_bytes = k / 256 * 54;
        g.walk.block_stride = 54;
        g.walk.nchunks = k / 256;
        g.panel = k;
        return g;
    case BP_LAYOUT_IQ1BN: case BP_LAYOUT_IQ2BN: case BP_LAYOUT_IQ2BN_R4: /* rows of d + 64-blocks (iq_bn.h) */
        g.walk.row_bytes = layout == BP_LAYOUT_IQ1BN ? 2 + k / 64 * 13 : 4 + k / 4;
        g.walk.nchunks = k / 64;
        g.panel = bp_iq_bn_panel_bytes(layout, k);
        return g;
    case BP_LAYOUT_TL1: case BP_LAYOUT_TL2: {
        const int64_t BK = tiling[1], three_k = layout == BP_LAYOUT_TL2 ? k / BK * BK : 0;
        g.tiling = (bp_tiling){m, k, tiling[0], BK, tiling[2], three_k, layout == BP_LAYOUT_TL2 ? k - three_k : 0};
        g.rows = m / tiling[0];
        g.panel = BP_GROUP_BYTES * (layout == BP_LAYOUT_TL1 ? k / 2 : three_k / 3 + (k - three_k) / 2);
        return g;
    }
    default:
        break;
    }
    g.walk.nchunks = (code_bytes + vb - 1) / vb;
    g.walk.tail = (int)(code_bytes - (g.walk.nchunks - 1) * vb);
    g.panel = layout == BP_LAYOUT_HF ? g.walk.nchunks * vb : g.walk.nchunks * 4 * vb;
    return g;
}

/* Element of the row whose code sits at bits 6-2j of code byte `byte`. */
static int64_t plane_element(int layout, int64_t byte, int j)
{
    switch (layout) {
    case BP_LAYOUT_I2S_ARM: /* 16-byte blocks of 64: byte p holds p, p+16, p+32, p+48 */
        return (byte >> 4) * 64 + 16 * j + (byte & 15);
    case BP_LAYOUT_TQ2: { /* qs[32h + m] holds 128h + m + 32n at bits 2n: n = 3 - j */
        const int64_t r = byte & 63;
        return (byte >> 6) * 256 + 128 * (r >> 5) + 32 * (3 - j) + (r & 31);
    }
    default: /* i2_s: 32-byte blocks of 128: byte p holds p, p+32, p+64, p+96 */
        return (byte >> 5) * 128 + 32 * j + (byte & 31);
    }
}

/* TL tables of one token (the format: isa.h). */
static void put_entry(uint8_t *group, int i, int value)
{
    group[i] = (uint8_t)(value & 255);
    group[16 + i] = (uint8_t)((value >> 8) & 255);
}

static void pair_table(const int8_t *q, int64_t pairs, uint8_t *lut)
{
    for (int64_t p = 0; p < pairs; p++, lut += BP_GROUP_BYTES)
        for (int i = 0; i < 9; i++)
            put_entry(lut, i, (i / 3 - 1) * q[2 * p] + (i % 3 - 1) * q[2 * p + 1]);
}

static void triplet_table(const int8_t *q, int64_t triplets, uint8_t *lut)
{
    for (int64_t g = 0; g < triplets; g++, lut += BP_GROUP_BYTES)
        for (int v = 0; v < 14; v++) {
            const int u = v + 13; /* 9*(t0+1) + 3*(t1+1) + (t2+1) */
            put_entry(lut, v, (u / 9 - 1) * q[3 * g] + (u / 3 % 3 - 1) * q[3 * g + 1] + (u % 3 - 1) * q[3 * g + 2]);
        }
}

void bp_fill_panel(const bp_isa *isa, int layout, const bp_geometry *g, const int8_t *q, int64_t k,
                       int8_t *panel)
{
    memset(panel, 0, (size_t)g->panel);
    switch (bp_family(layout)) {
    case BP_HF_PLANES: case BP_TQ1_ROWS:
        memcpy(panel, q, (size_t)k);
        return;
    case BP_IQ_ROWS:
        bp_iq_bn_panel(layout, q, k, panel);
        return;
    case BP_TL_TILES:
        if (layout == BP_LAYOUT_TL1) {
            pair_table(q, k / 2, (uint8_t *)panel);
        } else {
            triplet_table(q, g->tiling.three_k / 3, (uint8_t *)panel);
            pair_table(q + g->tiling.three_k, g->tiling.two_k / 2,
                       (uint8_t *)panel + g->tiling.three_k / 3 * BP_GROUP_BYTES);
        }
        return;
    default: {
        const int64_t vb = isa->vb;
        for (int64_t byte = 0; byte < k / 4; byte++)
            for (int j = 0; j < 4; j++)
                panel[(byte / vb * 4 + j) * vb + byte % vb] = q[plane_element(layout, byte, j)];
    }
    }
}

/* The divisibility each layout's walk needs (the Python side checks the full rules). */
int bp_shape_ok(int layout, int64_t m, int64_t k, const int64_t *t)
{
    switch (layout) {
    case BP_LAYOUT_I2S: return k % 128 == 0;
    case BP_LAYOUT_I2S_ARM: return k % 64 == 0;
    case BP_LAYOUT_HF: return 1;
    case BP_LAYOUT_TQ1: case BP_LAYOUT_TQ2: return k % 256 == 0;
    case BP_LAYOUT_IQ1BN: case BP_LAYOUT_IQ2BN: return k % 64 == 0;
    case BP_LAYOUT_IQ2BN_R4: return k % 64 == 0 && m % 4 == 0;
    case BP_LAYOUT_TL1:
        return t && t[0] > 0 && t[1] > 0 && (t[2] == 32 || t[2] == 64) && m % t[0] == 0 && t[0] % t[2] == 0
            && k % t[1] == 0 && t[1] % (256 / t[2]) == 0;
    case BP_LAYOUT_TL2:
        return t && t[0] > 0 && t[1] > 0 && t[2] == 32 && m % t[0] == 0 && t[0] % 32 == 0 && t[1] % 24 == 0
            && t[1] <= k && (k % t[1]) % 32 == 0;
    default: return 0;
    }
}

/* Bad fields in one 8-byte word (BP_BAD_*): a per-field bit, counted. */
static int bad_in_word(uint64_t x, int pattern)
{
    const uint64_t fields = 0x5555555555555555ull, nibbles = 0x1111111111111111ull;
    switch (pattern) {
    case BP_BAD_FIELD3: return __builtin_popcountll(x & (x >> 1) & fields);
    case BP_BAD_NIBBLE_ABOVE_8: return __builtin_popcountll((x >> 3) & (x | x >> 1 | x >> 2) & nibbles);
    default: return __builtin_popcountll((x >> 3) & (x >> 2) & (x >> 1) & nibbles); /* above 13 */
    }
}

int64_t bp_count_bad(const uint8_t *w, int64_t nrows, int64_t len, int64_t stride, int pattern,
                     const uint8_t *table)
{
    int64_t count = 0;
    for (int64_t r = 0; r < nrows; r++, w += stride) {
        int64_t i = 0;
        if (pattern != BP_BAD_TABLE)
            for (; i + 8 <= len; i += 8) {
                uint64_t x;
                memcpy(&x, w + i, 8);
                count += bad_in_word(x, pattern);
            }
        for (; i < len; i++)
            count += table[w[i]];
    }
    return count;
}

