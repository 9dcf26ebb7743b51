/* The 16-bit-weight product (bp_half_matmul): the portable unit (16 lanes as a float
 * array, f16 decoded by bit manipulation), the choice of unit per backend, and the split
 * of the V rows over the thread pool. Summation order: half_isa.h. */
#include "bitnet_kernels.h"
#include "floatops.h"
#include "half_isa.h"
#include "pool.h"

#include <stdint.h>
#include <string.h>

typedef struct { float v[16]; } L16;

static inline L16 l16_zero(void) { return (L16){{0}}; }

static inline L16 l16_x(const float *p)
{
    L16 r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}

static inline float bits_to_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline L16 l16_bf16(const uint16_t *p)
{
    L16 r;
    for (int j = 0; j < 16; j++)
        r.v[j] = bits_to_float((uint32_t)p[j] << 16);
    return r;
}

static inline uint32_t float_to_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* f16 |s|eeeee|mmmmmmmmmm| -> f32: the 15 low bits shifted into place read as a float
 * 2^-112 times too small (subnormals too, exactly: default MXCSR, no DAZ); exponent 31
 * (Inf/NaN) becomes 255; the sign is or-ed in (no data-dependent branch). */
static inline float f16_to_float(uint16_t h)
{
    const uint32_t low = (uint32_t)(h & 0x7fffu) << 13;
    const uint32_t finite = float_to_bits(bits_to_float(low) * 0x1p112f);
    const uint32_t magnitude = (h & 0x7c00u) == 0x7c00u ? low | 0x7f800000u : finite;
    return bits_to_float(magnitude | (uint32_t)(h & 0x8000u) << 16);
}

static inline L16 l16_f16(const uint16_t *p)
{
    L16 r;
    for (int j = 0; j < 16; j++)
        r.v[j] = f16_to_float(p[j]);
    return r;
}

static inline L16 l16_mul_add(L16 acc, L16 w, L16 x)
{
    for (int j = 0; j < 16; j++) {
        const float product = w.v[j] * x.v[j];
        acc.v[j] = acc.v[j] + product;
    }
    return acc;
}

static inline float l16_fold(L16 v)
{
    float a[8], b[4], c[2];
    for (int j = 0; j < 8; j++)
        a[j] = v.v[j] + v.v[j + 8];
    for (int j = 0; j < 4; j++)
        b[j] = a[j] + a[j + 4];
    for (int j = 0; j < 2; j++)
        c[j] = b[j] + b[j + 2];
    return c[0] + c[1];
}

#define GEMV_R 2
#define GEMM_R 2
#define GEMM_T 2
#define HALF_ISA_NAME bp_half_scalar

#include "half_impl.h"

/* ---- dispatch and threads ------------------------------------------------------------ */

static bp_half_rows_fn rows_fn(int backend, int kind)
{
    const bp_half_isa *isa = &bp_half_scalar;
    int f16_ok = 1;
    switch (backend) { /* numbers of bitnet_kernels.h: 1 avx2, 2 avx512, 3 avx512vnni */
#ifdef BP_HAVE_HALF_AVX2
    case 1:
        isa = &bp_half_avx2;
#if defined(__x86_64__) || defined(__i386__)
        f16_ok = __builtin_cpu_supports("f16c");
#endif
        break;
#endif
#ifdef BP_HAVE_HALF_AVX512
    case 2:
    case 3:
        isa = &bp_half_avx512;
        break;
#endif
    default:
        break;
    }
    if (kind == BP_HALF_BF16)
        return isa->bf16;
    return f16_ok ? isa->f16 : bp_half_scalar.f16; /* same bits either way */
}

/* Rows per work item (K = 2560 bf16: 160 KB, an L2 share); below bp_float_parallel_min()
 * multiply-adds (floatops.c) the caller runs everything. */
#define HALF_ROW_BLOCK 32

typedef struct {
    bp_half_rows_fn fn;
    const uint16_t *w;
    int64_t v, k, n;
    const float *x;
    float *y;
} half_job;

static void run_rows(void *ctx, int64_t item)
{
    const half_job *job = ctx;
    const int64_t r0 = item * HALF_ROW_BLOCK;
    const int64_t nrows = r0 + HALF_ROW_BLOCK <= job->v ? HALF_ROW_BLOCK : job->v - r0;
    job->fn(job->w + r0 * job->k, job->k, nrows, job->x, job->n, job->y + r0, job->v);
}

int bp_half_matmul(int backend, int kind, const uint16_t *w, int64_t v, int64_t k,
                   const float *x, int64_t n, float *y)
{
    if (!bp_backend_supported(backend))
        return BP_EBACKEND;
    if (v < 1 || k < 1 || n < 0 || (kind != BP_HALF_BF16 && kind != BP_HALF_F16))
        return BP_ESHAPE;
    if (n == 0)
        return 0;
    half_job job = {rows_fn(backend, kind), w, v, k, n, x, y};
    const int64_t items = (v + HALF_ROW_BLOCK - 1) / HALF_ROW_BLOCK;
    if ((double)v * (double)k * (double)n >= (double)bp_float_parallel_min())
        bp_pool_run(items, run_rows, &job);
    else
        for (int64_t i = 0; i < items; i++)
            run_rows(&job, i);
    return 0;
}
