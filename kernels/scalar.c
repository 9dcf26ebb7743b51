/* Portable functions (no SIMD flags): the "scalar" backend, the fallback on any CPU, and the
 * TQ1_0 and TL units the SIMD backends share. vb = 32: a plane chunk is 32 code bytes whose
 * 4 panel planes follow each other; every token count uses the one-token function.
 */
#include "isa.h"
#include "quant_impl.h"

static void plane_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                       int32_t *sums)
{
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + r * walk->row_bytes;
        const int8_t *a = act[0];
        int32_t acc = 0;
        for (int64_t c = 0; c < walk->nchunks; c++, a += 128) {
            const uint8_t *b = row + bp_code_at(walk, c * 32);
            const int n = c == walk->nchunks - 1 ? walk->tail : 32;
            for (int p = 0; p < n; p++)
                acc += (b[p] >> 6) * a[p] + ((b[p] >> 4) & 3) * a[32 + p]
                     + ((b[p] >> 2) & 3) * a[64 + p] + (b[p] & 3) * a[96 + p];
        }
        sums[r] = acc;
    }
}

static void hf_rows(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                    int32_t *sums)
{
    const int64_t cols = (walk->nchunks - 1) * 32 + walk->tail;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * walk->row_bytes;
        const int8_t *a = act[0];
        int32_t acc[4] = {0, 0, 0, 0};
        for (int64_t k = 0; k < cols; k++) {
            acc[0] += (b[k] & 3) * a[k];
            acc[1] += ((b[k] >> 2) & 3) * a[k];
            acc[2] += ((b[k] >> 4) & 3) * a[k];
            acc[3] += (b[k] >> 6) * a[k];
        }
        for (int p = 0; p < 4; p++)
            sums[r * 4 + p] = acc[p];
    }
}

/* ---- TQ1_0 ---------------------------------------------------------------------------- */

/* Trit n (most significant first) of a TQ1_0 byte: ((b * 3^n) mod 256) * 3 >> 8. */
static inline int trit(unsigned b, unsigned pow3) { return (int)(((b * pow3) & 255u) * 3u >> 8); }

/* `count` bytes, each holding trits for elements e + n * step (n < ntrits) of the block. */
static int32_t tq1_group(const uint8_t *b, int count, int ntrits, int step, const int8_t *a)
{
    static const unsigned pow3[5] = {1, 3, 9, 27, 81};
    int32_t acc = 0;
    for (int i = 0; i < count; i++)
        for (int n = 0; n < ntrits; n++)
            acc += trit(b[i], pow3[n]) * a[i + n * step];
    return acc;
}

/* A block: qs[0..31] elements m + 32n, qs[32..47] 160 + m + 16n, qh[0..3] 240 + j + 4n
 * (4 trits), then the fp16 d (not read: see kernel_formats.py). */
void bp_scalar_tq1(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                   int32_t *sums)
{
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * walk->row_bytes;
        const int8_t *a = act[0];
        int32_t acc = 0;
        for (int64_t blk = 0; blk < walk->nchunks; blk++, b += walk->block_stride, a += 256)
            acc += tq1_group(b, 32, 5, 32, a) + tq1_group(b + 32, 16, 5, 16, a + 160)
                 + tq1_group(b + 48, 4, 4, 4, a + 240);
        sums[r] = acc;
    }
}

/* ---- TL1 and TL2: table lookups in the stored byte order --------------------------------- */

/* TL1 row tile: for tk < K/BK, rb < BM/bm, kb < BK/by, rg < bm/16, kh < by/4, rj < 16 one
 * byte of row rb*bm + rg*16 + rj: pair (tk*BK + kb*by + kh*4)/2 in the high nibble, the next
 * pair in the low one. by = 256 / bm. */
void bp_scalar_tl1(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums)
{
    const int64_t by = 256 / t->bm;
    const uint8_t *b = w + tm * t->BM * t->k / 4;
    for (int64_t tk = 0; tk < t->k / t->BK; tk++)
        for (int64_t rb = 0; rb < t->BM / t->bm; rb++)
            for (int64_t kb = 0; kb < t->BK / by; kb++)
                for (int64_t rg = 0; rg < t->bm / 16; rg++)
                    for (int64_t kh = 0; kh < by / 4; kh++) {
                        const uint8_t *hi = lut + (tk * t->BK + kb * by + kh * 4) / 2 * BP_GROUP_BYTES;
                        const uint8_t *lo = hi + BP_GROUP_BYTES;
                        int32_t *s = sums + rb * t->bm + rg * 16;
                        for (int rj = 0; rj < 16; rj++, b++)
                            s[rj] += bp_entry(hi, *b >> 4) + bp_entry(lo, *b & 15);
                    }
}

static const int ROW_SWAP[4] = {0, 2, 1, 3}; /* TL2: 8-row chunks of each 32 rows in this order */

/* A stored triplet: magnitude entry, negated when its sign bit is set. */
static inline int signed_entry(const uint8_t *group, int magnitude, unsigned negative)
{
    const int v = bp_entry(group, magnitude);
    return negative ? -v : v;
}

/* TL2's three part of a row tile. Sign of triplet u (0..7 in its 24-column group) of row r
 * (0..31 in its block): bit 15 - (2u + r/16) of the little-endian word r % 16 of the
 * group's 16 words. */
static void tl2_three(const uint8_t *mag, const uint8_t *sgn, const bp_tiling *t, const uint8_t *lut,
                      int32_t *sums)
{
    for (int64_t tk = 0; tk < t->three_k / t->BK; tk++)
        for (int64_t rb = 0; rb < t->BM / 32; rb++)
            for (int64_t kb = 0; kb < t->BK / 6; kb++) {
                const uint8_t *words = sgn + ((tk * (t->BM / 32) + rb) * (t->BK / 24) + kb / 4) * 32;
                const int u = (int)(kb % 4) * 2;
                const uint8_t *hi = lut + (tk * t->BK + 6 * kb) / 3 * BP_GROUP_BYTES;
                const uint8_t *lo = hi + BP_GROUP_BYTES;
                for (int c = 0; c < 4; c++)
                    for (int r8 = 0; r8 < 8; r8++, mag++) {
                        const int r = 8 * ROW_SWAP[c] + r8;
                        const unsigned word = words[2 * (r % 16)] | (unsigned)words[2 * (r % 16) + 1] << 8;
                        const int shift = 15 - (2 * u + r / 16);
                        sums[rb * 32 + r] += signed_entry(hi, *mag >> 4, (word >> shift) & 1u)
                                           + signed_entry(lo, *mag & 15, (word >> (shift - 2)) & 1u);
                    }
            }
}

static void tl2_two(const uint8_t *b, const bp_tiling *t, const uint8_t *lut, int32_t *sums)
{
    for (int64_t tk = 0; tk < t->two_k / 32; tk++)
        for (int64_t rb = 0; rb < t->BM / 32; rb++)
            for (int kb = 0; kb < 8; kb++) {
                const uint8_t *hi = lut + (tk * 32 + 4 * kb) / 2 * BP_GROUP_BYTES;
                const uint8_t *lo = hi + BP_GROUP_BYTES;
                for (int c = 0; c < 4; c++)
                    for (int r8 = 0; r8 < 8; r8++, b++)
                        sums[rb * 32 + 8 * ROW_SWAP[c] + r8] += bp_entry(hi, *b >> 4) + bp_entry(lo, *b & 15);
            }
}

/* TL2 row tile: magnitudes, sign words and pair bytes each in their own segment (tl2.py);
 * the table holds the triplets' groups, then the pairs' of the last two_k columns. */
void bp_scalar_tl2(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums)
{
    const int64_t mags = t->m * t->three_k / 6, signs = t->m * t->three_k / 24;
    tl2_three(w + tm * t->BM * t->three_k / 6, w + mags + tm * t->BM * t->three_k / 24, t, lut, sums);
    if (t->two_k)
        tl2_two(w + mags + signs + tm * t->BM * t->two_k / 4, t, lut + t->three_k / 3 * BP_GROUP_BYTES, sums);
}

const bp_isa bp_isa_scalar = {"scalar", 32, quantize_row, plane_rows, plane_rows, 1, hf_rows, hf_rows, 1,
                              bp_scalar_tq1, bp_scalar_tl1, bp_scalar_tl2};
