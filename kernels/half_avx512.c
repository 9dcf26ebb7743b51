/* AVX-512F tiles of the 16-bit-weight product (half_impl.h): one zmm is the 16 lanes. */
#include <immintrin.h>
#include <stdint.h>

typedef __m512 L16;

static inline L16 l16_zero(void) { return _mm512_setzero_ps(); }

static inline L16 l16_x(const float *p) { return _mm512_loadu_ps(p); }

static inline L16 l16_bf16(const uint16_t *p)
{
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

static inline L16 l16_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline L16 l16_mul_add(L16 acc, L16 w, L16 x) { return _mm512_add_ps(acc, _mm512_mul_ps(w, x)); }

static inline float l16_fold(L16 v)
{
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b)); /* c0 = b0 + b2, c1 = b1 + b3 */
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

#define GEMV_R 4
#define GEMM_R 4
#define GEMM_T 4
#define HALF_ISA_NAME bp_half_avx512

#include "half_impl.h"
