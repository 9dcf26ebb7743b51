/* AVX-512BW tiles: _mm512_maddubs_epi16 with int16 sums, as in isa_avx2.c (same bounds:
 * a lane is in [-512, 508]; 64 terms fit int16 before widening). */
#include <immintrin.h>
#include <stdint.h>

#define VB 64
typedef __m512i vec;

static inline vec v_load(const void *p) { return _mm512_loadu_si512(p); }

static inline vec v_load_part(const uint8_t *p, int n)
{
    return _mm512_maskz_loadu_epi8((__mmask64)((1ULL << n) - 1), p);
}

static inline vec v_plane(vec w, int shift)
{
    return _mm512_and_si512(_mm512_srli_epi16(w, shift), _mm512_set1_epi8(3));
}

typedef struct { vec s16, s32; } acc_t;
#define FLUSH_DOTS 64

static inline void acc_zero(acc_t *a) { a->s16 = a->s32 = _mm512_setzero_si512(); }

static inline void acc_dot(acc_t *a, vec codes, vec act)
{
    a->s16 = _mm512_add_epi16(a->s16, _mm512_maddubs_epi16(codes, act));
}

static inline void acc_flush(acc_t *a)
{
    a->s32 = _mm512_add_epi32(a->s32, _mm512_madd_epi16(a->s16, _mm512_set1_epi16(1)));
    a->s16 = _mm512_setzero_si512();
}

static inline int32_t acc_total(acc_t *a)
{
    acc_flush(a);
    return _mm512_reduce_add_epi32(a->s32);
}

/* Tile sizes (rows x tokens), the best of a few measured on one Sapphire Rapids core. */
#define I2S_GEMV_R 4
#define I2S_R 2
#define I2S_T 4
#define HF_GEMV_P 1
#define HF_P 1
#define HF_T 4

#include "tl_impl.h"
#include "tq1_impl.h"
#include "tile_impl.h"

DEFINE_ISA(bp_isa_avx512, "avx512")
