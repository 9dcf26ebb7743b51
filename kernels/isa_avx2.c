/* AVX2 tiles: _mm256_maddubs_epi16 (unsigned codes 0..2 x signed q) with int16 sums.
 *
 * Saturation: one maddubs lane is c0*q0 + c1*q1 with c <= 2 and q in [-128, 127], so it
 * lies in [-512, 508]; maddubs cannot saturate. 64 such terms added in int16 stay in
 * [-32768, 32512], so FLUSH_DOTS = 64 before widening with _mm256_madd_epi16 into int32.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define VB 32
typedef __m256i vec;

static inline vec v_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static inline vec v_load_part(const uint8_t *p, int n)
{
    uint8_t tmp[VB] = {0};
    memcpy(tmp, p, (size_t)n);
    return _mm256_loadu_si256((const __m256i *)tmp);
}

static inline vec v_plane(vec w, int shift)
{
    return _mm256_and_si256(_mm256_srli_epi16(w, shift), _mm256_set1_epi8(3));
}

typedef struct { vec s16, s32; } acc_t;
#define FLUSH_DOTS 64

static inline void acc_zero(acc_t *a) { a->s16 = a->s32 = _mm256_setzero_si256(); }

static inline void acc_dot(acc_t *a, vec codes, vec act)
{
    a->s16 = _mm256_add_epi16(a->s16, _mm256_maddubs_epi16(codes, act));
}

static inline void acc_flush(acc_t *a)
{
    a->s32 = _mm256_add_epi32(a->s32, _mm256_madd_epi16(a->s16, _mm256_set1_epi16(1)));
    a->s16 = _mm256_setzero_si256();
}

static inline int32_t acc_total(acc_t *a)
{
    acc_flush(a);
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a->s32), _mm256_extracti128_si256(a->s32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Tile sizes (rows x tokens), the best of a few measured on one Sapphire Rapids core. */
#define I2S_GEMV_R 1
#define I2S_R 1
#define I2S_T 4
#define HF_GEMV_P 1
#define HF_P 1
#define HF_T 2

#include "tl_impl.h"
#include "tq1_impl.h"
#include "tile_impl.h"

DEFINE_ISA(bp_isa_avx2, "avx2")
