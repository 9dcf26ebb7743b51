/* The portable half of the kernel: CPU checks, and the work items (row block x token block,
 * TL: row tile x token block) the thread pool hands to a backend's functions, with the int32
 * or float32 epilogue. Each layout's walk and activation panel: panels.c. Compiled with
 * baseline flags only; SIMD lives in isa_*.c.
 */
#include "bitnet_kernels.h"
#include "iq_bn.h"
#include "isa.h"
#include "panels.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>

/* ---- backends ------------------------------------------------------------------------ */

enum { BP_SCALAR, BP_AVX2, BP_AVX512, BP_AVX512VNNI, BP_NBACKENDS };

static const char *const names[BP_NBACKENDS] = {"scalar", "avx2", "avx512", "avx512vnni"};

static const bp_isa *table(int backend)
{
    switch (backend) {
    case BP_SCALAR: return &bp_isa_scalar;
#ifdef BP_HAVE_AVX2
    case BP_AVX2: return &bp_isa_avx2;
#endif
#ifdef BP_HAVE_AVX512
    case BP_AVX512: return &bp_isa_avx512;
#endif
#ifdef BP_HAVE_AVX512VNNI
    case BP_AVX512VNNI: return &bp_isa_avx512vnni;
#endif
    default: return NULL;
    }
}

static int cpu_has(int backend)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                    && __builtin_cpu_supports("avx512vl");
    switch (backend) {
    case BP_SCALAR: return 1;
    case BP_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BP_AVX512: return avx512;
    case BP_AVX512VNNI: return avx512 && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return backend == BP_SCALAR;
#endif
}

int bp_backend_count(void) { return BP_NBACKENDS; }

const char *bp_backend_name(int backend)
{
    return backend >= 0 && backend < BP_NBACKENDS ? names[backend] : "";
}

int bp_backend_built(int backend) { return table(backend) != NULL; }

int bp_backend_supported(int backend) { return table(backend) != NULL && cpu_has(backend); }

int bp_best_backend(void)
{
    for (int b = BP_NBACKENDS - 1; b > 0; b--)
        if (bp_backend_supported(b))
            return b;
    return BP_SCALAR;
}

/* ---- threads ------------------------------------------------------------------------- */

void bp_set_threads(int n) { bp_pool_set_threads(n); }

int bp_get_threads(void) { return bp_pool_threads(); }

/* Below this many weights x tokens a product runs on the calling thread alone. */
#define PARALLEL_MIN_WORK (1 << 20)
/* Tokens whose panels one work item walks (L2-sized). */
#define TOKEN_BLOCK 64

/* ---- activation quantization --------------------------------------------------------- */

/* Runs on the calling thread, so it sees the same MXCSR (FTZ/DAZ) as numpy would. */
int64_t bp_quantize(int backend, const float *x, int64_t n, int64_t k, int8_t *q, float *s)
{
    const bp_isa *isa = bp_backend_supported(backend) ? table(backend) : &bp_isa_scalar;
    int64_t bad = 0;
    for (int64_t t = 0; t < n; t++)
        bad += isa->quantize(x + t * k, k, q + t * k, s + t);
    return bad;
}

static int32_t sum_q(const int8_t *q, int64_t k)
{
    int32_t sum = 0;
    for (int64_t i = 0; i < k; i++)
        sum += q[i];
    return sum;
}

/* ---- the product --------------------------------------------------------------------- */

typedef struct {
    const bp_isa *isa;
    int layout;
    bp_geometry g;
    const uint8_t *w;
    int64_t m, n;
    int64_t k;
    const int8_t *panels;
    const int32_t *qsum;
    int32_t *tile_sums; /* TL: BM sums per work item */
    const float *scale; /* NULL: int32 output */
    float beta;
    int32_t *out;
    float *y;
} product;

/* Rows per work item: enough to amortise a call, few enough to balance two threads. */
#define ROW_BLOCK 32

/* Output rows first..first+count-1 of token n from sums s[r * stride]. */
static void emit_rows(const product *p, const int32_t *s, int64_t stride, int64_t first, int64_t count, int64_t n)
{
    const int32_t qsum = p->qsum[n];
    if (p->y) {
        float *y = p->y + n * p->m + first;
        const float scale = p->scale[n], beta = p->beta;
        for (int64_t r = 0; r < count; r++)
            y[r] = (float)(s[r * stride] - qsum) / scale * beta;
    } else {
        int32_t *out = p->out + n * p->m + first;
        for (int64_t r = 0; r < count; r++)
            out[r] = s[r * stride] - qsum;
    }
}

/* The outputs of stored rows row0.. (nrows of them) for tokens tok.. (ntok <= toks). */
static void emit(const product *p, const int32_t *sums, int64_t row0, int64_t nrows, int planes,
                 int toks, int64_t tok, int ntok)
{
    for (int t = 0; t < ntok; t++)
        for (int plane = 0; plane < planes; plane++) {
            /* hf: plane p of stored row j is output row p * R + j */
            const int64_t first = plane * p->g.rows + row0;
            const int64_t count = first + nrows <= p->m ? nrows : p->m - first;
            emit_rows(p, sums + plane * toks + t, (int64_t)planes * toks, first, count, tok + t);
        }
}

/* Stored rows row0.. (nrows <= ROW_BLOCK) for tokens t0..t1-1, `toks` at a time; a short
 * last group repeats its last token and drops those sums. */
static void run_block(const product *p, bp_rows_fn fn, int toks, int64_t row0, int64_t nrows,
                      int64_t t0, int64_t t1)
{
    const int planes = p->layout == BP_LAYOUT_HF ? 4 : 1;
    int32_t sums[ROW_BLOCK * 4 * BP_MAX_TOKS];
    const int8_t *act[BP_MAX_TOKS];
    for (int64_t tok = t0; tok < t1; tok += toks) {
        const int ntok = tok + toks <= t1 ? toks : (int)(t1 - tok);
        for (int t = 0; t < toks; t++)
            act[t] = p->panels + (tok + (t < ntok ? t : ntok - 1)) * p->g.panel;
        fn(p->w + row0 * p->g.walk.row_bytes, &p->g.walk, nrows, act, sums);
        emit(p, sums, row0, nrows, planes, toks, tok, ntok);
    }
}

/* Row tile tm of a TL layout for tokens t0..t1-1, one token at a time, into `sums` [BM]. */
static void run_tile(const product *p, int64_t tm, int64_t t0, int64_t t1, int32_t *sums)
{
    const int64_t BM = p->g.tiling.BM;
    const bp_tl_fn fn = p->layout == BP_LAYOUT_TL1 ? p->isa->tl1 : p->isa->tl2;
    for (int64_t n = t0; n < t1; n++) {
        memset(sums, 0, sizeof(int32_t) * (size_t)BM);
        fn(p->w, &p->g.tiling, tm, (const uint8_t *)(p->panels + n * p->g.panel), sums);
        emit_rows(p, sums, 1, tm * BM, BM, n);
    }
}

typedef struct {
    const product *p;
    bp_rows_fn fn;
    int toks;
    int64_t rows_per_item;
    int64_t nblocks; /* row blocks */
} plan;

/* Work item i: token block i / nblocks, row block i % nblocks. */
static void run_item(void *ctx, int64_t i)
{
    const plan *pl = ctx;
    const product *p = pl->p;
    const int64_t tb = i / pl->nblocks * TOKEN_BLOCK, row0 = i % pl->nblocks * pl->rows_per_item;
    const int64_t te = tb + TOKEN_BLOCK < p->n ? tb + TOKEN_BLOCK : p->n;
    const int64_t nrows = row0 + pl->rows_per_item <= p->g.rows ? pl->rows_per_item : p->g.rows - row0;
    if (bp_family(p->layout) == BP_TL_TILES)
        run_tile(p, row0, tb, te, p->tile_sums + i * p->g.tiling.BM);
    else
        run_block(p, pl->fn, pl->toks, row0, nrows, tb, te);
}

static plan plan_of(const product *p)
{
    const int gemv = p->n == 1;
    const bp_isa *isa = p->isa;
    plan pl = {p, NULL, 1, ROW_BLOCK, 0};
    switch (bp_family(p->layout)) {
    case BP_HF_PLANES:
        pl.fn = gemv ? isa->hf_gemv : isa->hf_gemm;
        pl.toks = gemv ? 1 : isa->hf_toks;
        break;
    case BP_TQ1_ROWS:
        pl.fn = isa->tq1_rows;
        break;
    case BP_TL_TILES:
        pl.rows_per_item = 1; /* one row tile */
        break;
    case BP_IQ_ROWS: /* portable, every backend; ROW_BLOCK % 4 == 0 keeps R4 groups whole */
        pl.fn = bp_iq_bn_rows(p->layout);
        break;
    default:
        pl.fn = gemv ? isa->plane_gemv : isa->plane_gemm;
        pl.toks = gemv ? 1 : isa->plane_toks;
    }
    pl.nblocks = (p->g.rows + pl.rows_per_item - 1) / pl.rows_per_item;
    return pl;
}

static void run(const product *p)
{
    plan pl = plan_of(p);
    const int64_t items = (p->n + TOKEN_BLOCK - 1) / TOKEN_BLOCK * pl.nblocks;
    if ((double)p->m * (double)p->k * (double)p->n >= PARALLEL_MIN_WORK)
        bp_pool_run(items, run_item, &pl);
    else
        for (int64_t i = 0; i < items; i++)
            run_item(&pl, i);
}

static int check(int backend, int layout, int64_t m, int64_t k, int64_t n, const int64_t *tiling)
{
    if (!bp_backend_supported(backend))
        return BP_EBACKEND;
    if (m < 1 || k < 1 || n < 0 || k > (1 << 16) || !bp_shape_ok(layout, m, k, tiling))
        return BP_ESHAPE;
    return 0;
}

static int multiply(product *p, const int8_t *q, int64_t k)
{
    const int tl = bp_family(p->layout) == BP_TL_TILES;
    const int64_t token_blocks = (p->n + TOKEN_BLOCK - 1) / TOKEN_BLOCK;
    int8_t *panels = aligned_alloc(64, (size_t)((p->g.panel * p->n + 63) / 64 * 64));
    int32_t *qsum = malloc(sizeof(int32_t) * (size_t)p->n);
    int32_t *tile_sums = tl ? malloc(sizeof(int32_t) * (size_t)(p->m * token_blocks)) : NULL;
    if (!panels || !qsum || (tl && !tile_sums)) {
        free(panels);
        free(qsum);
        free(tile_sums);
        return BP_ENOMEM;
    }
    p->tile_sums = tile_sums;
    for (int64_t t = 0; t < p->n; t++) {
        bp_fill_panel(p->isa, p->layout, &p->g, q + t * k, k, panels + t * p->g.panel);
        /* TL tables hold t * q directly (no code offset) */
        qsum[t] = tl ? 0 : sum_q(q + t * k, k);
    }
    p->panels = panels;
    p->qsum = qsum;
    run(p);
    free(panels);
    free(qsum);
    free(tile_sums);
    return 0;
}

int bp_matmul_int(int backend, int layout, const uint8_t *w, int64_t m, int64_t k, const int64_t *tiling,
                  const int8_t *q, int64_t n, int32_t *out)
{
    const int err = check(backend, layout, m, k, n, tiling);
    if (err || n == 0)
        return err;
    product p = {table(backend), layout, bp_geometry_of(table(backend), layout, m, k, tiling), w, m, n, k,
                 NULL, NULL, NULL, NULL, 0.0f, out, NULL};
    return multiply(&p, q, k);
}

int64_t bp_linear(int backend, int layout, const uint8_t *w, int64_t m, int64_t k, const int64_t *tiling,
                  float beta, const float *x, int64_t n, float *y)
{
    const int err = check(backend, layout, m, k, n, tiling);
    if (err || n == 0)
        return err;
    int8_t *q = malloc((size_t)(n * k));
    float *scale = malloc(sizeof(float) * (size_t)n);
    if (!q || !scale) {
        free(q);
        free(scale);
        return BP_ENOMEM;
    }
    int64_t result = bp_quantize(backend, x, n, k, q, scale);
    if (result == 0) {
        product p = {table(backend), layout, bp_geometry_of(table(backend), layout, m, k, tiling), w, m, n, k,
                     NULL, NULL, NULL, scale, beta, NULL, y};
        result = multiply(&p, q, k);
    }
    free(q);
    free(scale);
    return result;
}
