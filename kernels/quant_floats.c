/* ggml's reference K-quant quantizers (Q6_K, Q5_K, Q4_K; no importance matrix), the same
 * bits as bitnet_pack/formats/quant_floats.py, its numpy reference (layouts and rounding there).
 * Built with -ffp-contract=off: every a*b+c the peer's gcc -march=native contracts is an
 * explicit bp_fmaf here, everything else rounds per operation. One super-block of 256
 * values at a time; blocks are independent, so the pool splits them freely. */
#include "quant_floats.h"
#include "floatmath.h"
#include "pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* fmaf is correctly rounded by definition (C99 F.10.10.1), so the C library's (an FMA
 * instruction where the CPU has one, glibc's exact software fallback elsewhere) gives the
 * bits of floatmath.h's bp_fmaf, faster. */
#define bp_fmaf fmaf

#define QK_K 256

static inline int nearest_int(float f)
{
    const float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* x rounded to f16 (bp_round_f16: ties to even), as its bits */
static inline uint16_t f16_bits(float x)
{
    const float r = bp_round_f16(x);
    uint32_t bits;
    memcpy(&bits, &r, sizeof bits);
    const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    const uint32_t mag = bits & 0x7fffffffu;
    if (mag >= 0x7f800000u)
        return (uint16_t)(sign | (mag > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (mag < 0x38800000u) { /* an f16 subnormal: a multiple of 2^-24 */
        float a;
        memcpy(&a, &mag, sizeof a);
        return (uint16_t)(sign | (uint16_t)(a * 0x1p24f));
    }
    return (uint16_t)(sign | (((mag >> 23) - 112u) << 10) | ((mag >> 13) & 0x3ffu));
}

static inline float f16_value(uint16_t h) { return bp_f16_to_float(h); }

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* make_qx_quants(n, nmax, x, L, rmse_type = 1, NULL) */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = x[i] < 0 ? -x[i] : x[i];
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx = bp_fmaf(w * x[i], (float)l, sumlx);
        suml2 = bp_fmaf(w * (float)l, (float)l, suml2);
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -bp_fmaf(0.1f, (float)is, (float)nmax) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx = bp_fmaf(w * x[i], (float)l, sumlx);
            suml2 = bp_fmaf(w * (float)l, (float)l, suml2);
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void q6_k_block(const float *x, uint8_t *out)
{
    int8_t L[QK_K];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        const float a = scales[ib] < 0 ? -scales[ib] : scales[ib];
        if (a > max_abs) {
            max_abs = a;
            max_scale = scales[ib];
        }
    }
    memset(out, 0, 210);
    if (max_abs < 1e-15f)
        return;
    const float iscale = -128.0f / max_scale;
    const uint16_t d_bits = f16_bits(1.0f / iscale);
    int8_t sc[16];
    for (int ib = 0; ib < 16; ib++) {
        const int v = nearest_int(iscale * scales[ib]);
        sc[ib] = (int8_t)(v < 127 ? v : 127);
    }
    for (int j = 0; j < 16; j++) {
        const float d = f16_value(d_bits) * (float)sc[j];
        if (d == 0)
            continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = (int8_t)(clampi(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    uint8_t *ql = out, *qh = out + 128;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = (uint8_t)((q1 & 0xF) | (q3 & 0xF) << 4);
            ql[l + 32] = (uint8_t)((q2 & 0xF) | (q4 & 0xF) << 4);
            qh[l] = (uint8_t)((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
        }
    memcpy(out + 192, sc, 16);
    memcpy(out + 208, &d_bits, 2);
}

/* sum of w * (scale * L + min - x)^2, the first product fused with + min */
static float mad(const float *x, const float *w, const uint8_t *L, float scale, float min)
{
    float total = 0;
    for (int i = 0; i < 32; i++) {
        const float diff = bp_fmaf(scale, (float)L[i], min) - x[i];
        total = bp_fmaf(w[i], diff * diff, total);
    }
    return total;
}

/* make_qkx2_quants(32, nmax, x, w, L, &the_min, Laux, rmin, rdelta = 0.1, nstep, false) */
static float make_qkx2_quants(int nmax, const float *x, const float *w, uint8_t *L, float *the_min, float rmin,
                              int nstep)
{
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < 32; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x = bp_fmaf(w[i], x[i], sum_x);
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, 32);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale;
    for (int i = 0; i < 32; i++)
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
    float best_mad = mad(x, w, L, scale, min);
    uint8_t aux[32];
    for (int is = 0; is <= nstep; is++) {
        iscale = (bp_fmaf(0.1f, (float)is, rmin) + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < 32; i++) {
            const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, nmax);
            aux[i] = (uint8_t)l;
            const float wl = w[i] * (float)l;
            sum_l = bp_fmaf(w[i], (float)l, sum_l);
            sum_l2 = bp_fmaf(wl, (float)l, sum_l2);
            sum_xl = bp_fmaf(wl, x[i], sum_xl);
        }
        const float D = bp_fmaf(sum_w, sum_l2, -(sum_l * sum_l));
        if (!(D > 0))
            continue;
        float this_scale = bp_fmaf(sum_w, sum_xl, -(sum_x * sum_l)) / D;
        float this_min = bp_fmaf(sum_l2, sum_x, -(sum_l * sum_xl)) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        const float m = mad(x, w, aux, this_scale, this_min);
        if (m < best_mad) {
            memcpy(L, aux, 32);
            best_mad = m;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): d, dmin, scales[12], then [qh[32]] qs[128] */
static void qk_block(const float *x, uint8_t *out, int nmax)
{
    uint8_t L[QK_K];
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    const float rmin = nmax == 15 ? -1.0f : -0.5f;
    const int nstep = nmax == 15 ? 20 : 15;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 = bp_fmaf(xs[l], xs[l], sum_x2);
        const float av_x = __builtin_sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++)
            w[l] = av_x + (xs[l] < 0 ? -xs[l] : xs[l]);
        scales[j] = make_qkx2_quants(nmax, xs, w, L + 32 * j, &mins[j], rmin, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8], *sc = out + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)nearest_int(inv_scale * scales[j]);
        lm[j] = (uint8_t)nearest_int(inv_min * mins[j]);
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
        if (j < 4) {
            sc[j] = (uint8_t)(sc[j] | ls[j]);
            sc[j + 4] = (uint8_t)(sc[j + 4] | lm[j]);
        } else {
            sc[j + 4] = (uint8_t)((ls[j] & 0xF) | (lm[j] & 0xF) << 4);
            sc[j - 4] = (uint8_t)(sc[j - 4] | (ls[j] >> 4) << 6);
            sc[j] = (uint8_t)(sc[j] | (lm[j] >> 4) << 6);
        }
    }
    const uint16_t d_bits = f16_bits(max_scale / 63.0f), dmin_bits = f16_bits(max_min / 63.0f);
    memcpy(out, &d_bits, 2);
    memcpy(out + 2, &dmin_bits, 2);
    for (int j = 0; j < 8; j++) {
        const float d = f16_value(d_bits) * (float)ls[j];
        if (d == 0)
            continue;
        const float dm = f16_value(dmin_bits) * (float)lm[j];
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)clampi(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax);
    }
    uint8_t *qs = out + (nmax == 15 ? 16 : 48), *qh = out + 16;
    if (nmax == 31)
        memset(qh, 0, 32);
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            const int a = L[64 * j + l], b = L[64 * j + 32 + l];
            qs[32 * j + l] = (uint8_t)((a & 0xF) | (b & 0xF) << 4);
            if (nmax == 31)
                qh[l] = (uint8_t)(qh[l] | (a >> 4) << (2 * j) | (b >> 4) << (2 * j + 1));
        }
}

typedef struct {
    const float *x;
    uint8_t *out;
    int kind;
} quant_job;

static void quant_item(void *ctx, int64_t block)
{
    const quant_job *job = ctx;
    const float *x = job->x + block * QK_K;
    if (job->kind == BP_QUANT_Q6_K)
        q6_k_block(x, job->out + block * 210);
    else if (job->kind == BP_QUANT_Q5_K)
        qk_block(x, job->out + block * 176, 31);
    else
        qk_block(x, job->out + block * 144, 15);
}

int bp_quantize_k(int kind, const float *x, int64_t blocks, uint8_t *out)
{
    if (kind != BP_QUANT_Q6_K && kind != BP_QUANT_Q5_K && kind != BP_QUANT_Q4_K)
        return -2;
    quant_job job = {x, out, kind};
    if (blocks > 1)
        bp_pool_run(blocks, quant_item, &job);
    else if (blocks == 1)
        quant_item(&job, 0);
    return 0;
}

/* ---- ggml's quantized dot products (bitnet_pack/engine/quant_dot.py is the reference) ---------- */

/* quantize_row_q8_K_ref of one 256 block: d and qs */
static void q8_k_block(const float *x, float *d, int32_t *qs)
{
    float max = 0, amax = 0;
    for (int j = 0; j < QK_K; j++) {
        const float ax = x[j] < 0 ? -x[j] : x[j];
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0) {
        *d = 0;
        memset(qs, 0, sizeof(int32_t) * QK_K);
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; j++) {
        const int v = nearest_int(iscale * x[j]);
        qs[j] = v < 127 ? v : 127;
    }
    *d = 1.0f / iscale;
}

/* quantize_row_q8_0 (AVX2) of one 32 block: d (as its f16 value) and qs, rounding half to even */
static void q8_0_block(const float *x, float *d, int32_t *qs)
{
    float amax = 0;
    for (int j = 0; j < 32; j++) {
        const float ax = x[j] < 0 ? -x[j] : x[j];
        amax = ax > amax ? ax : amax;
    }
    *d = bp_round_f16(amax / 127.0f);
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; j++)
        qs[j] = nearest_int(x[j] * id);
}

/* hsum_float_8: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) */
static inline float hsum8(const float *l)
{
    const float r0 = l[4] + l[0], r1 = l[5] + l[1], r2 = l[6] + l[2], r3 = l[7] + l[3];
    return (r0 + r2) + (r1 + r3);
}

/* the levels (q - 32 for Q6_K) of one super-block in element order, and the scale of each */
static void k_levels(int kind, const uint8_t *b, int32_t *q, int32_t *sc, int32_t *mins, float *d, float *dmin)
{
    if (kind == BP_QUANT_Q6_K) {
        for (int half = 0; half < 2; half++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) {
                    const int lo = (b[64 * half + 32 * (c % 2) + l] >> (4 * (c / 2))) & 0xF;
                    const int hi = (b[128 + 32 * half + l] >> (2 * c)) & 3;
                    q[128 * half + 32 * c + l] = (lo | hi << 4) - 32;
                }
        for (int j = 0; j < 16; j++)
            sc[j] = (int8_t)b[192 + j];
        uint16_t h;
        memcpy(&h, b + 208, 2);
        *d = bp_f16_to_float(h);
        return;
    }
    const uint8_t *s = b + 4, *qs = b + (kind == BP_QUANT_Q5_K ? 48 : 16), *qh = b + 16;
    for (int j = 0; j < 8; j++) {
        sc[j] = j < 4 ? (s[j] & 63) : ((s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4);
        mins[j] = j < 4 ? (s[j + 4] & 63) : ((s[j + 4] >> 4) | (s[j] >> 6) << 4);
    }
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            int a = qs[32 * j + l] & 0xF, c = qs[32 * j + l] >> 4;
            if (kind == BP_QUANT_Q5_K) {
                a += ((qh[l] >> (2 * j)) & 1) << 4;
                c += ((qh[l] >> (2 * j + 1)) & 1) << 4;
            }
            q[64 * j + l] = a;
            q[64 * j + 32 + l] = c;
        }
    uint16_t h;
    memcpy(&h, b, 2);
    *d = bp_f16_to_float(h);
    memcpy(&h, b + 2, 2);
    *dmin = bp_f16_to_float(h);
}

typedef struct {
    int kind;
    const uint8_t *w;
    int64_t v, k, n, row_bytes;
    const float *yd;    /* [n, blocks] */
    const int32_t *yq;  /* [n, k] */
    float *out;         /* [n, v] */
} qdot_job;

static float row_dot_q8_0(const qdot_job *job, const uint8_t *row, const float *yd, const int32_t *yq)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < job->k / 32; i++) {
        const uint8_t *b = row + 34 * i;
        uint16_t h;
        memcpy(&h, b, 2);
        const float d = bp_f16_to_float(h) * yd[i];
        for (int lane = 0; lane < 8; lane++) {
            int32_t sum = 0;
            for (int e = 4 * lane; e < 4 * lane + 4; e++)
                sum += (int8_t)b[2 + e] * yq[32 * i + e];
            acc[lane] = bp_fmaf(d, (float)sum, acc[lane]);
        }
    }
    return hsum8(acc);
}

static float row_dot_k(const qdot_job *job, const uint8_t *row, const float *yd, const int32_t *yq)
{
    float acc[8] = {0}, acc_m[4] = {0}, summs = 0;
    int32_t q[QK_K], sc[16], mins[8];
    const int per = job->kind == BP_QUANT_Q6_K ? 16 : 32;
    for (int64_t i = 0; i < job->k / QK_K; i++) {
        float xd, xdmin = 0;
        k_levels(job->kind, row + i * job->row_bytes / (job->k / QK_K), q, sc, mins, &xd, &xdmin);
        const int32_t *y = yq + QK_K * i;
        const float d = yd[i] * xd;
        int32_t lanes[8] = {0};
        for (int e = 0; e < QK_K; e++)
            lanes[(e % 32) / 4] += sc[e / per] * q[e] * y[e];
        for (int lane = 0; lane < 8; lane++)
            acc[lane] = bp_fmaf(d, (float)lanes[lane], acc[lane]);
        if (job->kind == BP_QUANT_Q6_K)
            continue;
        const float dmin = -yd[i] * xdmin;
        int32_t prod[4] = {0};
        for (int j = 0; j < 8; j++) {
            int32_t s = 0;
            for (int e = 32 * j; e < 32 * j + 32; e++)
                s += y[e];
            prod[j / 2] += mins[j] * s;
        }
        if (job->kind == BP_QUANT_Q4_K) {
            for (int lane = 0; lane < 4; lane++)
                acc_m[lane] = bp_fmaf(dmin, (float)prod[lane], acc_m[lane]);
        } else {
            summs = bp_fmaf(dmin, (float)(prod[0] + prod[1] + prod[2] + prod[3]), summs);
        }
    }
    const float total = hsum8(acc);
    if (job->kind == BP_QUANT_Q4_K)
        return total + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
    return job->kind == BP_QUANT_Q5_K ? total + summs : total;
}

#define QDOT_ROWS 64

static void qdot_item(void *ctx, int64_t item)
{
    const qdot_job *job = ctx;
    const int64_t r0 = item * QDOT_ROWS, r1 = r0 + QDOT_ROWS < job->v ? r0 + QDOT_ROWS : job->v;
    const int64_t blocks = job->kind == BP_QUANT_Q8_0 ? job->k / 32 : job->k / QK_K;
    for (int64_t t = 0; t < job->n; t++)
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = job->w + r * job->row_bytes;
            const float *yd = job->yd + t * blocks;
            const int32_t *yq = job->yq + t * job->k;
            job->out[t * job->v + r] = job->kind == BP_QUANT_Q8_0 ? row_dot_q8_0(job, row, yd, yq)
                                                                   : row_dot_k(job, row, yd, yq);
        }
}

int bp_quant_matmul(int kind, const uint8_t *w, int64_t v, int64_t k, const float *x, int64_t n, float *y)
{
    const int q8_0 = kind == BP_QUANT_Q8_0;
    if (!q8_0 && kind != BP_QUANT_Q6_K && kind != BP_QUANT_Q5_K && kind != BP_QUANT_Q4_K)
        return -2;
    const int64_t block = q8_0 ? 32 : QK_K, blocks = k / block;
    if (k % block)
        return -3;
    const int64_t block_bytes = q8_0 ? 34 : kind == BP_QUANT_Q6_K ? 210 : kind == BP_QUANT_Q5_K ? 176 : 144;
    float *yd = malloc(sizeof(float) * (size_t)(n * blocks + 1));
    int32_t *yq = malloc(sizeof(int32_t) * (size_t)(n * k + 1));
    if (!yd || !yq) {
        free(yd);
        free(yq);
        return -1;
    }
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < blocks; i++) {
            if (q8_0)
                q8_0_block(x + t * k + 32 * i, yd + t * blocks + i, yq + t * k + 32 * i);
            else
                q8_k_block(x + t * k + QK_K * i, yd + t * blocks + i, yq + t * k + QK_K * i);
        }
    qdot_job job = {kind, w, v, k, n, blocks * block_bytes, yd, yq, y};
    bp_pool_run((v + QDOT_ROWS - 1) / QDOT_ROWS, qdot_item, &job);
    free(yd);
    free(yq);
    return 0;
}
