/* TQ1_0 rows with AVX2 (compiled into every SIMD unit, like tl_impl.h): a byte b holds five
 * trits, trit n = (y_n * 3) >> 8 with y_n = b * 3^n mod 256 (most significant first). Per 32
 * bytes: y_n = 3 * y_(n-1) by wrapping byte adds, and (y * 3) >> 8 is [y >= 86] + [y >= 171]
 * (3 * 85 < 256 <= 3 * 86, 3 * 170 < 512 <= 3 * 171), two unsigned compares. The trits are
 * multiplied with the activations by _mm256_maddubs_epi16 (trit <= 2: a pair sum is within
 * int16) and widened at once with _mm256_madd_epi16. One token at a time, as the scalar rows.
 */
#include "isa.h"

#include <immintrin.h>

/* y * 3 mod 256 per byte. */
static inline __m256i tq1_times3(__m256i y) { return _mm256_add_epi8(_mm256_add_epi8(y, y), y); }

/* (y * 3) >> 8 per byte, 0..2. */
static inline __m256i tq1_trit(__m256i y)
{
    const __m256i ge86 = _mm256_cmpeq_epi8(_mm256_max_epu8(y, _mm256_set1_epi8(86)), y);
    const __m256i ge171 = _mm256_cmpeq_epi8(_mm256_max_epu8(y, _mm256_set1_epi8((char)171)), y);
    return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge86, ge171));
}

static inline __m256i tq1_dot(__m256i acc, __m256i trits, __m256i a)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(trits, a), _mm256_set1_epi16(1)));
}

/* One block: bytes 0..31 (elements m + 32n), 32..47 (160 + m + 16n: trits n and n + 1 in
 * the two lanes of one vector, against 32 consecutive activations), 48..51 (240 + j + 4n) in C. */
static inline __m256i tq1_block(__m256i acc, const uint8_t *b, const int8_t *a, int32_t *rest)
{
    static const unsigned pow3[4] = {1, 3, 9, 27};
    __m256i head = _mm256_loadu_si256((const __m256i *)b);
    for (int n = 0; n < 5; n++, head = tq1_times3(head))
        acc = tq1_dot(acc, tq1_trit(head), _mm256_loadu_si256((const __m256i *)(a + 32 * n)));
    const __m128i middle = _mm_loadu_si128((const __m128i *)(b + 32));
    __m256i pair = _mm256_set_m128i(_mm_add_epi8(_mm_add_epi8(middle, middle), middle), middle); /* trits 0, 1 */
    for (int n = 0; n < 4; n += 2, pair = tq1_times3(tq1_times3(pair)))
        acc = tq1_dot(acc, tq1_trit(pair), _mm256_loadu_si256((const __m256i *)(a + 160 + 16 * n)));
    acc = tq1_dot(acc, tq1_trit(pair), _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(a + 224))));
    for (int j = 0; j < 4; j++)
        for (int n = 0; n < 4; n++)
            *rest += (int32_t)((((b[48 + j] * pow3[n]) & 255u) * 3u) >> 8) * a[240 + j + 4 * n];
    return acc;
}

static void tq1_rows_avx2(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                          int32_t *sums)
{
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * walk->row_bytes;
        __m256i acc = _mm256_setzero_si256();
        int32_t rest = 0;
        for (int64_t blk = 0; blk < walk->nchunks; blk++, b += walk->block_stride)
            acc = tq1_block(acc, b, act[0] + 256 * blk, &rest);
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        sums[r] = _mm_cvtsi128_si32(s) + rest;
    }
}

#define TQ1_ROWS tq1_rows_avx2
