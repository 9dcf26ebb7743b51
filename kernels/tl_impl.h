/* TL1 and TL2 row tiles with AVX2 byte shuffles, the way bitnet.cpp's LUT kernels work, but
 * with exact int16 table entries: a group's table is 16 low bytes and 16 high bytes (isa.h),
 * so two _mm256_shuffle_epi8 look up the entries of 32 stored nibbles, and unpacking the low
 * and high results byte by byte gives the int16 entries of 16 + 16 rows. Compiled into every
 * SIMD unit: the AVX-512 ones run these 256-bit tiles with their own flags (a 512-bit version,
 * whose four lanes need four tables assembled by lane inserts, measured slower on Sapphire
 * Rapids). Results are the exact integer sums, equal to the scalar tiles'.
 *
 * int16 sums: an entry is at most 2 * 128 (pair) or 3 * 128 (triplet) in magnitude, and a lane
 * takes two entries per step, so 32 steps stay within 24576 before widening to int32.
 */
#include "isa.h"

#include <immintrin.h>

#define TL_FLUSH_STEPS 32

static inline __m256i tl_group(const uint8_t *group, int high) /* one table half, both lanes */
{
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(group + 16 * high)));
}

static inline __m256i tl_groups(const uint8_t *lane0, const uint8_t *lane1, int high)
{
    return _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(lane1 + 16 * high)),
                            _mm_loadu_si128((const __m128i *)(lane0 + 16 * high)));
}

/* int16 entries of 32 nibbles: rows of byte positions 0-7 and 16-23 in `first`, 8-15 and
 * 24-31 in `second` (per 128-bit lane, low half then high half). */
static inline void tl_lookup(__m256i nibbles, __m256i low, __m256i high, __m256i *first, __m256i *second)
{
    const __m256i a = _mm256_shuffle_epi8(low, nibbles), b = _mm256_shuffle_epi8(high, nibbles);
    *first = _mm256_unpacklo_epi8(a, b);
    *second = _mm256_unpackhi_epi8(a, b);
}

/* sums[0..7] += the 8 int16 of one lane. */
static inline void tl_widen_add(__m128i v, int32_t *sums)
{
    __m256i s = _mm256_loadu_si256((const __m256i *)sums);
    _mm256_storeu_si256((__m256i *)sums, _mm256_add_epi32(s, _mm256_cvtepi16_epi32(v)));
}

static inline __m128i tl_lane(__m256i v, int lane)
{
    return lane ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
}

/* TL1: a kb block (by columns x bm rows) is four 16-byte runs of 16 rows, two loads. bm 32:
 * load j holds rows 16j.. for column quads kh 0 (lane 0) and 1 (lane 1); bm 64: load j holds
 * rows 32j.. (lane 0) and 32j + 16.. (lane 1) for the one quad. */
static void tl1_flush(const __m256i acc[2][2], int bm, int32_t *rows)
{
    for (int j = 0; j < 2; j++)
        for (int half = 0; half < 2; half++)
            for (int lane = 0; lane < 2; lane++) {
                const int first = bm == 32 ? 16 * j + 8 * half : 32 * j + 16 * lane + 8 * half;
                tl_widen_add(tl_lane(acc[j][half], lane), rows + first);
            }
}

static void tl1_tile_avx2(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums)
{
    const int64_t by = 256 / t->bm;
    const uint8_t *b = w + tm * t->BM * t->k / 4;
    const __m256i low4 = _mm256_set1_epi8(15);
    for (int64_t tk = 0; tk < t->k / t->BK; tk++)
        for (int64_t rb = 0; rb < t->BM / t->bm; rb++) {
            __m256i acc[2][2];
            int steps = 0;
            for (int j = 0; j < 4; j++)
                acc[j / 2][j % 2] = _mm256_setzero_si256();
            for (int64_t kb = 0; kb < t->BK / by; kb++) {
                const uint8_t *g = lut + (tk * t->BK + kb * by) / 2 * BP_GROUP_BYTES; /* pairs p, p+1, (p+2, p+3) */
                const uint8_t *g1 = t->bm == 32 ? g + 2 * BP_GROUP_BYTES : g;
                const __m256i hl = tl_groups(g, g1, 0), hh = tl_groups(g, g1, 1);
                const __m256i ll = tl_groups(g + BP_GROUP_BYTES, g1 + BP_GROUP_BYTES, 0);
                const __m256i lh = tl_groups(g + BP_GROUP_BYTES, g1 + BP_GROUP_BYTES, 1);
                for (int j = 0; j < 2; j++, b += 32) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)b);
                    __m256i h0, h1, l0, l1;
                    tl_lookup(_mm256_and_si256(_mm256_srli_epi16(x, 4), low4), hl, hh, &h0, &h1);
                    tl_lookup(_mm256_and_si256(x, low4), ll, lh, &l0, &l1);
                    acc[j][0] = _mm256_add_epi16(acc[j][0], _mm256_add_epi16(h0, l0));
                    acc[j][1] = _mm256_add_epi16(acc[j][1], _mm256_add_epi16(h1, l1));
                }
                if (++steps == TL_FLUSH_STEPS || kb == t->BK / by - 1) {
                    tl1_flush((const __m256i(*)[2])acc, (int)t->bm, sums + rb * t->bm);
                    for (int j = 0; j < 4; j++)
                        acc[j / 2][j % 2] = _mm256_setzero_si256();
                    steps = 0;
                }
            }
        }
}

/* TL2: 32 rows per block; the stored row order (chunks 0, 2, 1, 3) makes the unpacked
 * entries rows 0-15 (`first`) and 16-31 (`second`) in order. */
static void tl2_flush(__m256i acc[2], int32_t *rows)
{
    for (int half = 0; half < 2; half++)
        for (int lane = 0; lane < 2; lane++)
            tl_widen_add(tl_lane(acc[half], lane), rows + 16 * half + 8 * lane);
    acc[0] = acc[1] = _mm256_setzero_si256();
}

/* v negated in the rows of `half` (rows 16*half + b, b = lane) whose sign bit for triplet u of
 * the group is set: _mm256_sign_epi16 by the word shifted so that bit is its sign bit (| 1:
 * never zero, which would clear v). */
static inline __m256i tl2_signed(__m256i v, __m256i words, int u, int half)
{
    const __m256i shifted = _mm256_sll_epi16(words, _mm_cvtsi32_si128(2 * u + half));
    return _mm256_sign_epi16(v, _mm256_or_si256(shifted, _mm256_set1_epi16(1)));
}

static void tl2_three_avx2(const uint8_t *mag, const uint8_t *sgn, const bp_tiling *t, const uint8_t *lut,
                           int32_t *sums)
{
    const __m256i low4 = _mm256_set1_epi8(15);
    for (int64_t tk = 0; tk < t->three_k / t->BK; tk++)
        for (int64_t rb = 0; rb < t->BM / 32; rb++) {
            __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, words = acc[0];
            int steps = 0;
            for (int64_t kb = 0; kb < t->BK / 6; kb++, mag += 32) {
                if (kb % 4 == 0)
                    words = _mm256_loadu_si256((const __m256i *)(sgn + ((tk * (t->BM / 32) + rb) * (t->BK / 24) + kb / 4) * 32));
                const uint8_t *g = lut + (tk * t->BK + 6 * kb) / 3 * BP_GROUP_BYTES;
                const int u = (int)(kb % 4) * 2;
                const __m256i x = _mm256_loadu_si256((const __m256i *)mag);
                __m256i h0, h1, l0, l1;
                tl_lookup(_mm256_and_si256(_mm256_srli_epi16(x, 4), low4), tl_group(g, 0), tl_group(g, 1), &h0, &h1);
                tl_lookup(_mm256_and_si256(x, low4), tl_group(g + BP_GROUP_BYTES, 0), tl_group(g + BP_GROUP_BYTES, 1),
                          &l0, &l1);
                acc[0] = _mm256_add_epi16(acc[0], _mm256_add_epi16(tl2_signed(h0, words, u, 0),
                                                                   tl2_signed(l0, words, u + 1, 0)));
                acc[1] = _mm256_add_epi16(acc[1], _mm256_add_epi16(tl2_signed(h1, words, u, 1),
                                                                   tl2_signed(l1, words, u + 1, 1)));
                if (++steps == TL_FLUSH_STEPS) {
                    tl2_flush(acc, sums + rb * 32);
                    steps = 0;
                }
            }
            tl2_flush(acc, sums + rb * 32);
        }
}

static void tl2_two_avx2(const uint8_t *b, const bp_tiling *t, const uint8_t *lut, int32_t *sums)
{
    const __m256i low4 = _mm256_set1_epi8(15);
    for (int64_t tk = 0; tk < t->two_k / 32; tk++)
        for (int64_t rb = 0; rb < t->BM / 32; rb++) {
            __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int kb = 0; kb < 8; kb++, b += 32) { /* 16 entries per lane row: no flush needed */
                const uint8_t *g = lut + (tk * 32 + 4 * kb) / 2 * BP_GROUP_BYTES;
                const __m256i x = _mm256_loadu_si256((const __m256i *)b);
                __m256i h0, h1, l0, l1;
                tl_lookup(_mm256_and_si256(_mm256_srli_epi16(x, 4), low4), tl_group(g, 0), tl_group(g, 1), &h0, &h1);
                tl_lookup(_mm256_and_si256(x, low4), tl_group(g + BP_GROUP_BYTES, 0), tl_group(g + BP_GROUP_BYTES, 1),
                          &l0, &l1);
                acc[0] = _mm256_add_epi16(acc[0], _mm256_add_epi16(h0, l0));
                acc[1] = _mm256_add_epi16(acc[1], _mm256_add_epi16(h1, l1));
            }
            tl2_flush(acc, sums + rb * 32);
        }
}

static void tl2_tile_avx2(const uint8_t *w, const bp_tiling *t, int64_t tm, const uint8_t *lut, int32_t *sums)
{
    const int64_t mags = t->m * t->three_k / 6, signs = t->m * t->three_k / 24;
    tl2_three_avx2(w + tm * t->BM * t->three_k / 6, w + mags + tm * t->BM * t->three_k / 24, t, lut, sums);
    if (t->two_k)
        tl2_two_avx2(w + mags + signs + tm * t->BM * t->two_k / 4, t, lut + t->three_k / 3 * BP_GROUP_BYTES, sums);
}

#define TL1_TILE tl1_tile_avx2
#define TL2_TILE tl2_tile_avx2
