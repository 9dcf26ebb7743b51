/* torch's CPU float32 sum over one parallel_for chunk, in torch's own order.
 *
 * The order is that of bitnet_pack/formats/torchsum.py (and of ATen's SumKernel.cpp):
 *
 *   x = [ row 0: 32 floats | row 1 | ... | row R-1 | v leftover 8-float vectors | t < 8 tail ]
 *
 *   32 lanes (4 vectors of 8, ILP) each run a 4-level cascade over the R rows:
 *     acc0 += row                        for `step` rows, then
 *     acc1 += acc0, acc0 = 0             and, every step**2 rows, acc2 += acc1, acc1 = 0,
 *                                        every step**3 rows,      acc3 += acc2, acc2 = 0
 *     end: acc0 += the rows left; acc0 += acc1; acc0 += acc2; acc0 += acc3
 *     step = 2**max(4, ceil(log2(R)) / 4)
 *   lanes[8] = group 0; += each leftover vector; += groups 1, 2, 3
 *   total = 0; += each tail item; += lanes[0..7]
 *
 * A chunk shorter than 8 items uses 4 scalar lanes the same way. Each lane's additions stay
 * in sequence, so the compiler may vectorize across lanes without changing a bit; nothing
 * here may be reassociated (no -ffast-math).
 */
#include "fastconvert.h"

#include <string.h>

#define LEVELS 4
#define VEC 8
#define ILP 4
#define WIDE (VEC * ILP)

static inline float load_f32(const float *x, int64_t i) { return x[i]; }

static inline float load_abs_f32(const float *x, int64_t i) {
    uint32_t bits;
    memcpy(&bits, &x[i], 4);
    bits &= 0x7fffffffu;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

static inline float load_abs_bf16(const uint16_t *x, int64_t i) {
    uint32_t bits = (uint32_t)(x[i] & 0x7fffu) << 16;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

static int64_t ceil_log2(int64_t n) {
    int64_t bits = 0;
    while (((int64_t)1 << bits) < n) bits++;
    return bits;
}

static int64_t level_power(int64_t rows) {
    int64_t power = ceil_log2(rows) / LEVELS;
    return power < 4 ? 4 : power;
}

/* Carry acc[0] up after `done` rows (a multiple of step), as multi_row_sum does. */
#define CARRY(acc, width, done, power)                                        \
    do {                                                                      \
        const int64_t mask_ = ((int64_t)1 << (power)) - 1;                    \
        for (int level_ = 1; level_ < LEVELS; level_++) {                     \
            for (int l_ = 0; l_ < (width); l_++) {                            \
                acc[level_][l_] += acc[level_ - 1][l_];                       \
                acc[level_ - 1][l_] = 0.0f;                                   \
            }                                                                 \
            if ((done) & (mask_ << (level_ * (power)))) break;                \
        }                                                                     \
    } while (0)

#define FINISH(acc, width)                                                    \
    do {                                                                      \
        for (int level_ = 1; level_ < LEVELS; level_++)                       \
            for (int l_ = 0; l_ < (width); l_++) acc[0][l_] += acc[level_][l_]; \
    } while (0)

/* One function per element type: the cascade over `rows` rows of WIDE items, the
 * leftover vectors, the tail, and the short-chunk scalar path. */
#define DEFINE_INNER_SUM(NAME, T, LOAD)                                       \
    static void NAME##_cascade_wide(const T *x, int64_t rows, float out[WIDE]) { \
        float acc[LEVELS][WIDE];                                              \
        memset(acc, 0, sizeof acc);                                           \
        const int64_t power = level_power(rows), step = (int64_t)1 << power;  \
        int64_t i = 0;                                                        \
        while (i + step <= rows) {                                            \
            float block[WIDE] = {0}; /* acc[0] is zero here: kept in registers */ \
            for (int64_t j = 0; j < step; j++, i++) {                         \
                const T *row = x + i * WIDE;                                  \
                for (int l = 0; l < WIDE; l++) block[l] += LOAD(row, l);      \
            }                                                                 \
            memcpy(acc[0], block, sizeof block);                              \
            CARRY(acc, WIDE, i, power);                                       \
        }                                                                     \
        for (; i < rows; i++)                                                 \
            for (int l = 0; l < WIDE; l++) acc[0][l] += LOAD(x + i * WIDE, l); \
        FINISH(acc, WIDE);                                                    \
        memcpy(out, acc[0], sizeof(float) * WIDE);                            \
    }                                                                         \
                                                                              \
    static float NAME##_scalar(const T *x, int64_t n) {                       \
        float acc[LEVELS][ILP];                                               \
        memset(acc, 0, sizeof acc);                                           \
        const int64_t rows = n / ILP;                                         \
        const int64_t power = level_power(rows), step = (int64_t)1 << power;  \
        int64_t i = 0;                                                        \
        while (i + step <= rows) {                                            \
            for (int64_t j = 0; j < step; j++, i++)                           \
                for (int l = 0; l < ILP; l++) acc[0][l] += LOAD(x + i * ILP, l); \
            CARRY(acc, ILP, i, power);                                        \
        }                                                                     \
        for (; i < rows; i++)                                                 \
            for (int l = 0; l < ILP; l++) acc[0][l] += LOAD(x + i * ILP, l);  \
        FINISH(acc, ILP);                                                     \
        for (int64_t k = rows * ILP; k < n; k++) acc[0][0] += LOAD(x, k);     \
        for (int l = 1; l < ILP; l++) acc[0][0] += acc[0][l];                 \
        return acc[0][0];                                                     \
    }                                                                         \
                                                                              \
    static float NAME(const T *x, int64_t n) {                                \
        if (n < VEC) return NAME##_scalar(x, n);                              \
        const int64_t vectors = n / VEC, rows = vectors / ILP;                \
        float groups[WIDE];                                                   \
        NAME##_cascade_wide(x, rows, groups);                                 \
        float lanes[VEC];                                                     \
        memcpy(lanes, groups, sizeof lanes);                                  \
        for (int64_t v = rows * ILP; v < vectors; v++)                        \
            for (int l = 0; l < VEC; l++) lanes[l] += LOAD(x + v * VEC, l);   \
        for (int k = 1; k < ILP; k++)                                         \
            for (int l = 0; l < VEC; l++) lanes[l] += groups[k * VEC + l];    \
        float total = 0.0f;                                                   \
        for (int64_t k = vectors * VEC; k < n; k++) total += LOAD(x, k);      \
        for (int l = 0; l < VEC; l++) total += lanes[l];                      \
        return total;                                                         \
    }

DEFINE_INNER_SUM(inner_sum_f32, float, load_f32)
DEFINE_INNER_SUM(inner_abs_sum_f32, float, load_abs_f32)
DEFINE_INNER_SUM(inner_abs_sum_bf16, uint16_t, load_abs_bf16)

float fc_sum_f32(const float *x, int64_t n) { return inner_sum_f32(x, n); }

float fc_abs_sum_f32(const float *x, int64_t n) { return inner_abs_sum_f32(x, n); }

float fc_abs_sum_bf16(const uint16_t *x, int64_t n) { return inner_abs_sum_bf16(x, n); }
