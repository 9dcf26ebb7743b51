/* AVX2 (+ F16C for f16) tiles of the 16-bit-weight product (half_impl.h): two ymm hold
 * the 16 lanes, lanes 0-7 and 8-15, so the first fold step is lo + hi. */
#include <immintrin.h>
#include <stdint.h>

typedef struct { __m256 lo, hi; } L16;

static inline L16 l16_zero(void) { return (L16){_mm256_setzero_ps(), _mm256_setzero_ps()}; }

static inline L16 l16_x(const float *p) { return (L16){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }

static inline __m256 bf16x8(const uint16_t *p)
{
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

static inline L16 l16_bf16(const uint16_t *p) { return (L16){bf16x8(p), bf16x8(p + 8)}; }

static inline L16 l16_f16(const uint16_t *p)
{
    return (L16){_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)))};
}

static inline L16 l16_mul_add(L16 acc, L16 w, L16 x)
{
    return (L16){_mm256_add_ps(acc.lo, _mm256_mul_ps(w.lo, x.lo)),
                 _mm256_add_ps(acc.hi, _mm256_mul_ps(w.hi, x.hi))};
}

static inline float l16_fold(L16 v)
{
    const __m256 a = _mm256_add_ps(v.lo, v.hi);
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b)); /* c0 = b0 + b2, c1 = b1 + b3 */
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

#define GEMV_R 4
#define GEMM_R 2
#define GEMM_T 2
#define HALF_ISA_NAME bp_half_avx2

#include "half_impl.h"
