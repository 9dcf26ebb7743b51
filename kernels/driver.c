/* The portable half of the kernel: CPU checks, activation panels, and the work items
 * (row block x token block) the thread pool hands to a backend's row functions, with the
 * int32 or float32 epilogue. Compiled with baseline flags only; SIMD lives in isa_*.c.
 */
#include "bitnet_kernels.h"
#include "isa.h"
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

/* ---- panels and geometry ------------------------------------------------------------- */

typedef struct {
    int64_t rows;       /* i2_s: M; hf: packed rows ceil(M/4) */
    int64_t row_bytes;  /* bytes of one stored row */
    int64_t nchunks;
    int tail;           /* weight bytes in the last chunk */
    int64_t panel;      /* bytes of one token's panel */
} geometry;

static geometry geometry_of(const bp_isa *isa, int layout, int64_t m, int64_t k)
{
    geometry g;
    const int64_t vb = isa->vb;
    if (layout == BP_LAYOUT_I2S) {
        g.rows = m;
        g.row_bytes = k / 4;
        g.panel = (k + 4 * vb - 1) / (4 * vb) * (4 * vb);
    } else {
        g.rows = (m + 3) / 4;
        g.row_bytes = k;
        g.panel = (k + vb - 1) / vb * vb;
    }
    g.nchunks = (g.row_bytes + vb - 1) / vb;
    g.tail = (int)(g.row_bytes - (g.nchunks - 1) * vb);
    return g;
}

/* i2_s panel: per chunk of vb/32 blocks, plane j holds elements 32j..32j+31 of each block. */
static void fill_panel(const bp_isa *isa, int layout, const int8_t *q, int64_t k, int8_t *panel,
                       int64_t panel_bytes)
{
    memset(panel, 0, (size_t)panel_bytes);
    if (layout == BP_LAYOUT_HF || isa->vb == 32) {
        memcpy(panel, q, (size_t)k);
        return;
    }
    const int halves = isa->vb / 32;
    for (int64_t b = 0; b < k / 128; b++) {
        const int64_t c = b / halves, h = b % halves;
        for (int j = 0; j < 4; j++)
            memcpy(panel + (c * 4 + j) * isa->vb + h * 32, q + b * 128 + j * 32, 32);
    }
}

/* ---- the product --------------------------------------------------------------------- */

typedef struct {
    const bp_isa *isa;
    int layout;
    geometry g;
    const uint8_t *w;
    int64_t m, n;
    int64_t k;
    const int8_t *panels;
    const int32_t *qsum;
    const float *scale; /* NULL: int32 output */
    float beta;
    int32_t *out;
    float *y;
} product;

/* Rows per work item: enough to amortise a call, few enough to balance two threads. */
#define ROW_BLOCK 32

/* The outputs of stored rows row0.. (nrows of them) for tokens tok.. (ntok <= toks). */
static void emit(const product *p, const int32_t *sums, int64_t row0, int64_t nrows, int planes,
                 int toks, int64_t tok, int ntok)
{
    for (int t = 0; t < ntok; t++) {
        const int64_t n = tok + t;
        const int32_t qsum = p->qsum[n];
        for (int plane = 0; plane < planes; plane++) {
            /* hf: plane p of stored row j is output row p * R + j */
            const int64_t first = plane * p->g.rows + row0;
            const int64_t count = first + nrows <= p->m ? nrows : p->m - first;
            const int32_t *s = sums + plane * toks + t;
            if (p->y) {
                float *y = p->y + n * p->m + first;
                const float scale = p->scale[n], beta = p->beta;
                for (int64_t r = 0; r < count; r++)
                    y[r] = (float)(s[r * planes * toks] - qsum) / scale * beta;
            } else {
                int32_t *out = p->out + n * p->m + first;
                for (int64_t r = 0; r < count; r++)
                    out[r] = s[r * planes * toks] - qsum;
            }
        }
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
        fn(p->w + row0 * p->g.row_bytes, p->g.row_bytes, nrows, act, p->g.nchunks, p->g.tail, sums);
        emit(p, sums, row0, nrows, planes, toks, tok, ntok);
    }
}

typedef struct {
    const product *p;
    bp_rows_fn fn;
    int toks;
    int64_t nblocks; /* row blocks */
} plan;

/* Work item i: token block i / nblocks, row block i % nblocks. */
static void run_item(void *ctx, int64_t i)
{
    const plan *pl = ctx;
    const product *p = pl->p;
    const int64_t tb = i / pl->nblocks * TOKEN_BLOCK, row0 = i % pl->nblocks * ROW_BLOCK;
    const int64_t te = tb + TOKEN_BLOCK < p->n ? tb + TOKEN_BLOCK : p->n;
    const int64_t nrows = row0 + ROW_BLOCK <= p->g.rows ? ROW_BLOCK : p->g.rows - row0;
    run_block(p, pl->fn, pl->toks, row0, nrows, tb, te);
}

static void run(const product *p)
{
    const int gemv = p->n == 1;
    const int hf = p->layout == BP_LAYOUT_HF;
    const bp_isa *isa = p->isa;
    plan pl = {p, hf ? (gemv ? isa->hf_gemv : isa->hf_gemm) : (gemv ? isa->i2s_gemv : isa->i2s_gemm),
               gemv ? 1 : (hf ? isa->hf_toks : isa->i2s_toks), (p->g.rows + ROW_BLOCK - 1) / ROW_BLOCK};
    const int64_t items = (p->n + TOKEN_BLOCK - 1) / TOKEN_BLOCK * pl.nblocks;
    if ((double)p->m * (double)p->k * (double)p->n >= PARALLEL_MIN_WORK)
        bp_pool_run(items, run_item, &pl);
    else
        for (int64_t i = 0; i < items; i++)
            run_item(&pl, i);
}

static int check(int backend, int layout, int64_t m, int64_t k, int64_t n)
{
    if (!bp_backend_supported(backend))
        return BP_EBACKEND;
    if (m < 1 || k < 1 || n < 0 || (layout == BP_LAYOUT_I2S && k % 128) || k > (1 << 16)
        || (layout != BP_LAYOUT_I2S && layout != BP_LAYOUT_HF))
        return BP_ESHAPE;
    return 0;
}

static int multiply(product *p, const int8_t *q, int64_t k)
{
    int8_t *panels = aligned_alloc(64, (size_t)((p->g.panel * p->n + 63) / 64 * 64));
    int32_t *qsum = malloc(sizeof(int32_t) * (size_t)p->n);
    if (!panels || !qsum) {
        free(panels);
        free(qsum);
        return BP_ENOMEM;
    }
    for (int64_t t = 0; t < p->n; t++) {
        fill_panel(p->isa, p->layout, q + t * k, k, panels + t * p->g.panel, p->g.panel);
        qsum[t] = sum_q(q + t * k, k);
    }
    p->panels = panels;
    p->qsum = qsum;
    run(p);
    free(panels);
    free(qsum);
    return 0;
}

int bp_matmul_int(int backend, int layout, const uint8_t *w, int64_t m, int64_t k,
                  const int8_t *q, int64_t n, int32_t *out)
{
    const int err = check(backend, layout, m, k, n);
    if (err || n == 0)
        return err;
    product p = {table(backend), layout, geometry_of(table(backend), layout, m, k), w, m, n, k,
                 NULL, NULL, NULL, 0.0f, out, NULL};
    return multiply(&p, q, k);
}

int64_t bp_linear(int backend, int layout, const uint8_t *w, int64_t m, int64_t k, float beta,
                  const float *x, int64_t n, float *y)
{
    const int err = check(backend, layout, m, k, n);
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
        product p = {table(backend), layout, geometry_of(table(backend), layout, m, k), w, m, n, k,
                     NULL, NULL, scale, beta, NULL, y};
        result = multiply(&p, q, k);
    }
    free(q);
    free(scale);
    return result;
}

int64_t bp_count_code3(const uint8_t *w, int64_t nbytes)
{
    int64_t count = 0;
    for (int64_t i = 0; i < nbytes; i++) {
        const unsigned both = w[i] & (w[i] >> 1) & 0x55u; /* bit 2p set iff field p == 3 */
        count += (both & 1) + ((both >> 2) & 1) + ((both >> 4) & 1) + ((both >> 6) & 1);
    }
    return count;
}
