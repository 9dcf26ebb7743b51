/* TQ1_0 rows with AVX2 (compiled into every SIMD unit, like tl_impl.h): a byte b holds five
 * trits, trit n = ((b * 3^n) mod 256) * 3 >> 8 (most significant first). The trits of 32
 * bytes are computed in 16-bit lanes (even and odd bytes apart), then multiplied with the
 * activations by _mm256_maddubs_epi16 (trit <= 2, so a pair sum is within int16) and widened
 * at once with _mm256_madd_epi16. One token at a time, as the scalar rows.
 */
#include "isa.h"

#include <immintrin.h>

/* Trit n of each of the 32 bytes of x, as bytes 0..2. */
static inline __m256i tq1_trits(__m256i x, int pow3)
{
    const __m256i byte = _mm256_set1_epi16(255), mul = _mm256_set1_epi16((short)pow3), three = _mm256_set1_epi16(3);
    const __m256i even = _mm256_and_si256(x, byte), odd = _mm256_srli_epi16(x, 8);
    const __m256i te = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_and_si256(_mm256_mullo_epi16(even, mul), byte), three), 8);
    const __m256i to = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_and_si256(_mm256_mullo_epi16(odd, mul), byte), three), 8);
    return _mm256_or_si256(te, _mm256_slli_epi16(to, 8));
}

static inline __m256i tq1_dot(__m256i acc, __m256i trits, __m256i a)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(trits, a), _mm256_set1_epi16(1)));
}

/* One block: bytes 0..31 (elements m + 32n), 32..47 (160 + m + 16n, as the low lane of a
 * 32-byte load whose high lane meets zero activations), 48..51 (240 + j + 4n) in C. */
static inline __m256i tq1_block(__m256i acc, const uint8_t *b, const int8_t *a, int32_t *rest)
{
    static const int pow3[5] = {1, 3, 9, 27, 81};
    const __m256i head = _mm256_loadu_si256((const __m256i *)b);
    const __m256i middle = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(b + 32)));
    for (int n = 0; n < 5; n++) {
        acc = tq1_dot(acc, tq1_trits(head, pow3[n]), _mm256_loadu_si256((const __m256i *)(a + 32 * n)));
        acc = tq1_dot(acc, tq1_trits(middle, pow3[n]),
                      _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(a + 160 + 16 * n))));
    }
    for (int j = 0; j < 4; j++)
        for (int n = 0; n < 4; n++)
            *rest += (int32_t)((((b[48 + j] * (unsigned)pow3[n]) & 255u) * 3u) >> 8) * a[240 + j + 4 * n];
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
