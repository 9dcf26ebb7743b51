/* The decode's float operations; the order of every sum is the contract of floatops.h. */
#include "floatops.h"
#include "floatmath.h"
#include "pool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16

/* Work (multiply-adds) below which an operation runs on the calling thread alone. Work is
 * split by whole outputs, so this changes speed only, never a bit. */
static int64_t parallel_min = 1 << 20;

void bp_float_set_parallel_min(int64_t work) { parallel_min = work < 0 ? 0 : work; }

int64_t bp_float_parallel_min(void) { return parallel_min; }

static void run_items(int64_t items, double work, bp_item_fn fn, void *ctx)
{
    if (items > 1 && work >= (double)parallel_min) {
        bp_pool_run(items, fn, ctx);
        return;
    }
    for (int64_t i = 0; i < items; i++)
        fn(ctx, i);
}

/* ---- lane sums ------------------------------------------------------------------------ */

/* The halving fold of 16 lanes: j + 8, j + 4, then (b0 + b2) + (b1 + b3). */
#define DEFINE_FOLD(name, type)                                                               \
    static inline type name(const type *l)                                                    \
    {                                                                                         \
        type a[8], b[4];                                                                      \
        for (int j = 0; j < 8; j++)                                                           \
            a[j] = l[j] + l[j + 8];                                                           \
        for (int j = 0; j < 4; j++)                                                           \
            b[j] = a[j] + a[j + 4];                                                           \
        return (b[0] + b[2]) + (b[1] + b[3]);                                                 \
    }

DEFINE_FOLD(fold_f32, float)
DEFINE_FOLD(fold_f64, double)

static inline float dot(const float *a, const float *b, int64_t n)
{
    float lane[LANES] = {0};
    int64_t c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int j = 0; j < LANES; j++)
            lane[j] = lane[j] + a[c + j] * b[c + j];
    for (int j = 0; c + j < n; j++)
        lane[j] = lane[j] + a[c + j] * b[c + j];
    return fold_f32(lane);
}

static inline float sum_f32(const float *x, int64_t n)
{
    float lane[LANES] = {0};
    int64_t c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int j = 0; j < LANES; j++)
            lane[j] = lane[j] + x[c + j];
    for (int j = 0; c + j < n; j++)
        lane[j] = lane[j] + x[c + j];
    return fold_f32(lane);
}

/* sum16 in double of x[i] (square 0) or of the float32 products x[i] * x[i] (square 1). */
static inline double sum_f64(const float *x, int64_t n, int square)
{
    double lane[LANES] = {0};
    int64_t c = 0;
    if (square) {
        for (; c + LANES <= n; c += LANES)
            for (int j = 0; j < LANES; j++)
                lane[j] = lane[j] + (double)(x[c + j] * x[c + j]);
        for (int j = 0; c + j < n; j++)
            lane[j] = lane[j] + (double)(x[c + j] * x[c + j]);
    } else {
        for (; c + LANES <= n; c += LANES)
            for (int j = 0; j < LANES; j++)
                lane[j] = lane[j] + (double)x[c + j];
        for (int j = 0; c + j < n; j++)
            lane[j] = lane[j] + (double)x[c + j];
    }
    return fold_f64(lane);
}

/* ---- norms, RoPE, activation --------------------------------------------------------- */

void bp_rms_norm(const float *x, int64_t n, int64_t k, const float *w, float eps, float *y)
{
    for (int64_t r = 0; r < n; r++) {
        const float *row = x + r * k;
        const float mean = (float)(sum_f64(row, k, 1) / (double)k);
        const float inv = 1.0f / __builtin_sqrtf(mean + eps);
        for (int64_t i = 0; i < k; i++)
            y[r * k + i] = (row[i] * inv) * w[i];
    }
}

void bp_rope_tables(const int64_t *positions, int64_t t, int64_t head_dim, double theta, int mode,
                    float *cos_out, float *sin_out)
{
    const int64_t half = head_dim / 2;
    const float ggml_step = (float)bp_pow_d(theta, (double)(-2.0f / (float)head_dim));
    for (int64_t p = 0; p < t; p++) {
        float angle = (float)positions[p];
        for (int64_t i = 0; i < half; i++) {
            if (mode == 0) {
                const float exponent = (float)(2 * i) / (float)head_dim;
                const float inv_freq = 1.0f / (float)bp_pow_d(theta, (double)exponent);
                angle = (float)positions[p] * inv_freq;
            } else if (i > 0) {
                angle = angle * ggml_step;
            }
            double s, c;
            bp_sincos_d((double)angle, &s, &c);
            cos_out[p * half + i] = (float)c;
            sin_out[p * half + i] = (float)s;
        }
    }
}

void bp_rope_apply(float *x, int64_t t, int64_t heads, int64_t head_dim, const float *cos_t,
                   const float *sin_t)
{
    const int64_t half = head_dim / 2;
    for (int64_t p = 0; p < t; p++)
        for (int64_t h = 0; h < heads; h++) {
            float *a = x + (p * heads + h) * head_dim, *b = a + half;
            const float *c = cos_t + p * half, *s = sin_t + p * half;
            for (int64_t i = 0; i < half; i++) {
                const float ai = a[i], bi = b[i];
                a[i] = ai * c[i] - bi * s[i];
                b[i] = bi * c[i] + ai * s[i];
            }
        }
}

void bp_activation(const float *gate, const float *up, int64_t n, int kind, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        if (kind == BP_ACT_SILU) {
            out[i] = (g / (1.0f + bp_expf(-g))) * up[i];
        } else if (kind == BP_ACT_GELU_TANH) {
            const double x = (double)g;
            const double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
            const double t = 1.0 - 2.0 / (bp_exp_d(2.0 * u) + 1.0);
            out[i] = (float)(0.5 * x * (1.0 + t)) * up[i];
        } else {
            const float r = g < 0.0f ? 0.0f : g;
            out[i] = (r * r) * up[i];
        }
    }
}

/* ---- attention ------------------------------------------------------------------------ */

typedef struct {
    const float *q, *keys, *values;
    int64_t t, heads, d, kv_heads, capacity, start;
    float scale;
    int flags;
    float *out;
    atomic_int failed;
} attention_job;

/* p [n] times v rows [n, d] (stride d): out[dd] = sum16 over j of p[j] * v[j, dd]. */
static void weighted_rows(const float *p, const float *v, int64_t n, int64_t d, float *lanes,
                          float *out)
{
    memset(lanes, 0, sizeof(float) * (size_t)(LANES * d));
    for (int64_t j = 0; j < n; j++) {
        float *lane = lanes + (j % LANES) * d;
        const float *row = v + j * d;
        for (int64_t dd = 0; dd < d; dd++)
            lane[dd] = lane[dd] + p[j] * row[dd];
    }
    for (int64_t dd = 0; dd < d; dd++) {
        float l[LANES];
        for (int j = 0; j < LANES; j++)
            l[j] = lanes[j * d + dd];
        out[dd] = fold_f32(l);
    }
}

/* ggml_vec_soft_max_f32 of the AVX-512 build over the 32-padded cells (padding: e = 0). */
static double sum_avx512_blocks(const float *e, int64_t n)
{
    double sum = 0.0;
    const int64_t cells = (n + 31) / 32 * 32;
    for (int64_t i = 0; i < cells; i += LANES) {
        float l[LANES];
        for (int j = 0; j < LANES; j++)
            l[j] = i + j < n ? e[i + j] : 0.0f;
        for (int half = LANES / 2; half >= 1; half /= 2)
            for (int j = 0; j < half; j++)
                l[j] = l[j] + l[j + half];
        sum = sum + (double)l[0];
    }
    return sum;
}

static void softmax_row(float *s, int64_t n, int flags)
{
    float m = s[0];
    for (int64_t j = 1; j < n; j++)
        m = s[j] > m ? s[j] : m;
    const int avx512 = (flags & BP_SOFTMAX_AVX512) && (flags & BP_SOFTMAX_GGML);
    for (int64_t j = 0; j < n; j++)
        s[j] = avx512 ? bp_ggml_expf_avx512(s[j] - m) : bp_expf(s[j] - m);
    if (avx512) {
        const float inv = (float)(1.0 / sum_avx512_blocks(s, n));
        for (int64_t j = 0; j < n; j++)
            s[j] = s[j] * inv;
    } else if (flags & BP_SOFTMAX_GGML) {
        const float inv = (float)(1.0 / sum_f64(s, n, 0));
        for (int64_t j = 0; j < n; j++)
            s[j] = s[j] * inv;
    } else {
        const float sum = sum_f32(s, n);
        for (int64_t j = 0; j < n; j++)
            s[j] = s[j] / sum;
    }
    if (flags & BP_P_F16)
        for (int64_t j = 0; j < n; j++)
            s[j] = bp_round_f16(s[j]);
}

static void attention_item(void *ctx, int64_t item)
{
    attention_job *job = ctx;
    const int64_t h = item / job->t, i = item % job->t, d = job->d;
    const int64_t g = h / (job->heads / job->kv_heads), n = job->start + i + 1;
    float *scratch = malloc(sizeof(float) * (size_t)(n + LANES * d));
    if (!scratch) {
        atomic_store(&job->failed, 1);
        return;
    }
    const float *q = job->q + (i * job->heads + h) * d;
    const float *k = job->keys + g * job->capacity * d, *v = job->values + g * job->capacity * d;
    const int ggml = job->flags & (BP_GGML_AVX512 | BP_GGML_AVX2);
    float *out = job->out + (i * job->heads + h) * d;
    for (int64_t j = 0; j < n; j++)
        scratch[j] = (ggml ? bp_ggml_dot(q, 1, k + j * d, 0, 1, d, d, ggml) : dot(q, k + j * d, d)) * job->scale;
    softmax_row(scratch, n, job->flags);
    if (ggml) {
        const int64_t cells = (n + 31) / 32 * 32;
        for (int64_t dd = 0; dd < d; dd++)
            out[dd] = bp_ggml_dot(scratch, 1, v + dd, 0, d, n, cells, ggml);
    } else {
        weighted_rows(scratch, v, n, d, scratch + n, out);
    }
    free(scratch);
}

int bp_attention(const float *q, int64_t t, int64_t heads, int64_t head_dim, const float *keys,
                 const float *values, int64_t kv_heads, int64_t capacity, int64_t start, float scale,
                 int flags, float *out)
{
    if (t < 1 || kv_heads < 1 || heads % kv_heads || start + t > capacity)
        return -3;
    attention_job job = {q, keys, values, t, heads, head_dim, kv_heads, capacity, start, scale,
                         flags, out, 0};
    const double work = 2.0 * (double)heads * (double)t * (double)(start + t) * (double)head_dim;
    run_items(heads * t, work, attention_item, &job);
    return atomic_load(&job.failed) ? -1 : 0;
}

/* ---- the float32 lm_head ------------------------------------------------------------- */

#define ROW_BLOCK 32

typedef struct {
    bp_row_dot_fn dot;
    const void *w;
    const float *x;
    int64_t v, k, n;
    int variant;
    float *y;
} row_job;

static void row_item(void *ctx, int64_t item)
{
    const row_job *job = ctx;
    const int64_t r0 = item * ROW_BLOCK, r1 = r0 + ROW_BLOCK < job->v ? r0 + ROW_BLOCK : job->v;
    for (int64_t t = 0; t < job->n; t++)
        for (int64_t r = r0; r < r1; r++)
            job->y[t * job->v + r] = job->dot(job->x + t * job->k, job->w, r, job->k, job->variant);
}

void bp_row_products(bp_row_dot_fn dot, const void *w, int64_t v, int64_t k, const float *x, int64_t n,
                     int variant, float *y)
{
    row_job job = {dot, w, x, v, k, n, variant, y};
    run_items((v + ROW_BLOCK - 1) / ROW_BLOCK, (double)v * (double)k * (double)n, row_item, &job);
}

static float f32_row_dot(const float *x, const void *w, int64_t row, int64_t k, int variant)
{
    (void)variant;
    return dot(x, (const float *)w + row * k, k);
}

void bp_f32_matmul(const float *w, int64_t v, int64_t k, const float *x, int64_t n, float *y)
{
    bp_row_products(f32_row_dot, w, v, k, x, n, 0, y);
}

/* ---- the elementwise functions alone ------------------------------------------------- */

void bp_expf_array(const float *x, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = bp_expf(x[i]);
}

void bp_ggml_expf_avx512_array(const float *x, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = bp_ggml_expf_avx512(x[i]);
}

void bp_sincos_array(const float *x, int64_t n, float *sin_out, float *cos_out)
{
    for (int64_t i = 0; i < n; i++) {
        double s, c;
        bp_sincos_d((double)x[i], &s, &c);
        sin_out[i] = (float)s;
        cos_out[i] = (float)c;
    }
}

void bp_round_f16_array(const float *x, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = bp_round_f16(x[i]);
}
