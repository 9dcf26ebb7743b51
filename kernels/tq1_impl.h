/* TQ1_0 rows with AVX2 (compiled into every SIMD unit, like tl_impl.h): a byte b holds five
 * trits, trit n = (y_n * 3) >> 8 with y_n = b * 3^n mod 256 (most significant first). Per 32
 * bytes: y_n = 3 * y_(n-1) by wrapping byte adds, and (y * 3) >> 8 is [y >= 86] + [y >= 171]
 * (3 * 85 < 256 <= 3 * 86, 3 * 170 < 512 <= 3 * 171), two unsigned compares. The trits are
 * multiplied with the activations by _mm256_maddubs_epi16 (trit <= 2: a pair sum is within
 * int16) and widened at once with _mm256_madd_epi16 (VNNI: vpdpbusd). One token at a time, as
 * the scalar rows. The AVX-512 units (built with -mavx512bw) use the 512-bit block below.
 */
#include "isa.h"

#include <immintrin.h>
#include <string.h>

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

/* y = b * 3^n (mod 256) of the qh bytes 48..51, at byte 4n + j for byte j and trit n < 4:
 * the order of their elements 240 + j + 4n. */
static inline __m128i tq1_qh(const uint8_t *b)
{
    int32_t word;
    memcpy(&word, b + 48, 4);
    const __m128i v = _mm_set1_epi32(word), v3 = _mm_add_epi8(_mm_add_epi8(v, v), v);
    const __m128i v9 = _mm_add_epi8(_mm_add_epi8(v3, v3), v3), v27 = _mm_add_epi8(_mm_add_epi8(v9, v9), v9);
    return _mm_blend_epi32(_mm_blend_epi32(v, v3, 0x2), _mm_blend_epi32(v9, v27, 0x8), 0xC);
}

/* One block: bytes 0..31 (elements m + 32n), 32..47 (160 + m + 16n: trits n and n + 1 in
 * the two lanes of one vector, against 32 consecutive activations; trit 4 beside qh). */
static inline __m256i tq1_block(__m256i acc, const uint8_t *b, const int8_t *a)
{
    __m256i head = _mm256_loadu_si256((const __m256i *)b);
    for (int n = 0; n < 5; n++, head = tq1_times3(head))
        acc = tq1_dot(acc, tq1_trit(head), _mm256_loadu_si256((const __m256i *)(a + 32 * n)));
    const __m128i middle = _mm_loadu_si128((const __m128i *)(b + 32));
    __m256i pair = _mm256_set_m128i(_mm_add_epi8(_mm_add_epi8(middle, middle), middle), middle); /* trits 0, 1 */
    for (int n = 0; n < 4; n += 2, pair = tq1_times3(tq1_times3(pair)))
        acc = tq1_dot(acc, tq1_trit(pair), _mm256_loadu_si256((const __m256i *)(a + 160 + 16 * n)));
    pair = _mm256_inserti128_si256(pair, tq1_qh(b), 1); /* trit 4 of the middle, then qh: elements 224..255 */
    return tq1_dot(acc, tq1_trit(pair), _mm256_loadu_si256((const __m256i *)(a + 224)));
}

#ifndef __AVX512BW__
typedef __m256i tq1_acc;
#define tq1_zero _mm256_setzero_si256
#define tq1_next tq1_block

static inline int32_t tq1_total(__m256i acc)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}
#else
/* AVX-512 units: two head planes (64 consecutive activations) or four middle planes per
 * vector, then the middle's trit 4 beside qh. */
static inline __m512i tq1_times3_512(__m512i y) { return _mm512_add_epi8(_mm512_add_epi8(y, y), y); }

static inline __m512i tq1_trit_512(__m512i y)
{
    const __m512i one = _mm512_set1_epi8(1);
    return _mm512_add_epi8(_mm512_maskz_mov_epi8(_mm512_cmpge_epu8_mask(y, _mm512_set1_epi8(86)), one),
                           _mm512_maskz_mov_epi8(_mm512_cmpge_epu8_mask(y, _mm512_set1_epi8((char)171)), one));
}

static inline __m512i tq1_dot_512(__m512i acc, __m512i trits, __m512i a)
{
#ifdef __AVX512VNNI__
    return dpbusd(acc, trits, a); /* isa_avx512vnni.c */
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(trits, a), _mm512_set1_epi16(1)));
#endif
}

static inline __m512i tq1_block_512(__m512i acc, const uint8_t *b, const int8_t *a)
{
    const __m256i head = _mm256_loadu_si256((const __m256i *)b);
    __m512i two = _mm512_inserti64x4(_mm512_castsi256_si512(head), tq1_times3(head), 1); /* trits n, n + 1 */
    for (int n = 0; n < 4; n += 2, two = tq1_times3_512(tq1_times3_512(two)))
        acc = tq1_dot_512(acc, tq1_trit_512(two), _mm512_loadu_si512(a + 32 * n));
    acc = tq1_dot_512(acc, tq1_trit_512(two), _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 128))));
    const __m128i middle = _mm_loadu_si128((const __m128i *)(b + 32));
    const __m256i low = _mm256_set_m128i(_mm_add_epi8(_mm_add_epi8(middle, middle), middle), middle);
    __m512i four = _mm512_inserti64x4(_mm512_castsi256_si512(low), tq1_times3(tq1_times3(low)), 1); /* trits 0..3 */
    acc = tq1_dot_512(acc, tq1_trit_512(four), _mm512_loadu_si512(a + 160));
    for (int i = 0; i < 4; i++)
        four = tq1_times3_512(four); /* lane 0: trit 4 */
    const __m256i last = _mm256_set_m128i(tq1_qh(b), _mm512_castsi512_si128(four)); /* elements 224..255 */
    return tq1_dot_512(acc, tq1_trit_512(_mm512_zextsi256_si512(last)),
                       _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 224))));
}

typedef __m512i tq1_acc;
#define tq1_zero _mm512_setzero_si512
#define tq1_next tq1_block_512
#define tq1_total _mm512_reduce_add_epi32
#endif

static void tq1_rows_simd(const uint8_t *w, const bp_walk *walk, int64_t nrows, const int8_t *const *act,
                          int32_t *sums)
{
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * walk->row_bytes;
        tq1_acc acc = tq1_zero();
        for (int64_t blk = 0; blk < walk->nchunks; blk++, b += walk->block_stride)
            acc = tq1_next(acc, b, act[0] + 256 * blk);
        sums[r] = tq1_total(acc);
    }
}

#define TQ1_ROWS tq1_rows_simd
