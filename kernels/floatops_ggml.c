/* ggml's f16 dot product order (bitnet.cpp numerics, floatops.h "ggml_dot"), so that the
 * one-row products of bitnet.cpp's decode (Q.K, P.V, the lm_head: `ggml_vec_dot_f16` on
 * f16 operands) are reproduced bit for bit. Operands hold f16 values, so every product is
 * exact in float32 and ggml's FMA equals a multiply then an add.
 *
 *   variant AVX512: 64 lanes (4 accumulators x 16): lane i % 64 adds a[i] * b[i] for i below
 *                   split - split % 64; fold 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1 by halves.
 *   variant AVX2:   32 lanes (4 x 8), the same below split - split % 32; fold by halves to
 *                   4 lanes l, then (l0 + l1) + (l2 + l3) (two hadd).
 *   then, in double, the folded sum plus each remaining product in order (ggml's leftover
 *   loop), rounded to float32. `split` is the length ggml runs over: for P.V the KV cells
 *   padded to 32 (the extra cells hold P = 0), else n.
 */
#include "floatops.h"
#include "floatmath.h"

static inline float fold_ggml(float *l, int lanes, int variant)
{
    for (int half = lanes / 2; half >= (variant == BP_GGML_AVX2 ? 4 : 1); half /= 2)
        for (int j = 0; j < half; j++)
            l[j] = l[j] + l[j + half];
    return variant == BP_GGML_AVX2 ? (l[0] + l[1]) + (l[2] + l[3]) : l[0];
}

/* a[i * as] * b[i * bs], i < n; b read as f16 bits when b16 is given. */
/* f16 bits -> float, all 65536 (256 KB), filled once before the first lm_head product. */
static float f16_table[65536];

static void fill_f16_table_once(void)
{
    for (uint32_t h = 0; h < 65536; h++)
        f16_table[h] = bp_f16_to_float((uint16_t)h);
}

#ifdef BP_HAVE_PTHREADS
#include <pthread.h>
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;
static void fill_f16_table(void) { pthread_once(&f16_table_once, fill_f16_table_once); }
#else
static int f16_table_ready;
static void fill_f16_table(void)
{
    if (!f16_table_ready) {
        fill_f16_table_once();
        f16_table_ready = 1;
    }
}
#endif

/* Whole blocks of LANES contiguous f16 weights, looked up in the table (the order is per
 * lane, so the compiler vectorizing the multiply-add does not change it). */
#define DEFINE_F16_BLOCKS(name, LANES)                                                        \
    static int64_t name(float *l, const float *a, const uint16_t *b16, int64_t simd)          \
    {                                                                                         \
        int64_t i = 0;                                                                        \
        float wb[LANES];                                                                      \
        for (; i + LANES <= simd; i += LANES) {                                               \
            for (int j = 0; j < LANES; j++)                                                   \
                wb[j] = f16_table[b16[i + j]];                                                \
            for (int j = 0; j < LANES; j++)                                                   \
                l[j] = l[j] + a[i + j] * wb[j];                                               \
        }                                                                                     \
        return i;                                                                             \
    }

DEFINE_F16_BLOCKS(f16_blocks_64, 64)
DEFINE_F16_BLOCKS(f16_blocks_32, 32)

float bp_ggml_dot(const float *a, int64_t as, const float *b, const uint16_t *b16, int64_t bs,
                  int64_t n, int64_t split, int variant)
{
    const int lanes = variant == BP_GGML_AVX2 ? 32 : 64;
    float l[64] = {0};
    const int64_t simd = split - split % lanes < n ? split - split % lanes : n;
    int64_t i = 0;
    if (as == 1 && bs == 1 && b16) /* the lm_head */
        i = lanes == 64 ? f16_blocks_64(l, a, b16, simd) : f16_blocks_32(l, a, b16, simd);
    for (; i < simd; i++) {
        const float bi = b16 ? bp_f16_to_float(b16[i * bs]) : b[i * bs];
        l[i % lanes] = l[i % lanes] + a[i * as] * bi;
    }
    double sum = (double)fold_ggml(l, lanes, variant);
    for (; i < n; i++) {
        const float bi = b16 ? bp_f16_to_float(b16[i * bs]) : b[i * bs];
        sum = sum + (double)(a[i * as] * bi);
    }
    return (float)sum;
}

static float ggml_row_dot(const float *x, const void *w, int64_t row, int64_t k, int variant)
{
    return bp_ggml_dot(x, 1, 0, (const uint16_t *)w + row * k, 1, k, k, variant);
}

void bp_ggml_f16_matmul(const uint16_t *w, int64_t v, int64_t k, const float *x, int64_t n, int variant,
                        float *y)
{
    fill_f16_table();
    bp_row_products(ggml_row_dot, w, v, k, x, n, variant, y);
}
