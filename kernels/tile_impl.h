/* SIMD tiles, written once and compiled per instruction set (isa_*.c include this file).
 *
 * The including unit defines:
 *   VB                         bytes per vector (32 or 64)
 *   vec                        the vector type
 *   v_load(p), v_load_part(p, n)   load VB bytes / the first n bytes, zeros above
 *   v_plane(w, shift)          per byte: (w >> shift) & 3
 *   acc_t, acc_zero, acc_dot(acc, codes, act), acc_flush, acc_total
 *   FLUSH_DOTS                 acc_dot calls an accumulator takes before acc_flush
 *                              (0: never needed)
 * and the tile sizes I2S_GEMV_R, I2S_R, I2S_T, HF_GEMV_P, HF_P, HF_T. "i2s" tiles serve every
 * plane layout with a panel (i2_s, i2_s_arm, tq2_0); chunk c starts at bp_code_at(walk, c*VB).
 *
 * The shape parameters R and T are constants at every call site, so after inlining the
 * loops unroll and the accumulator arrays live in registers.
 */
#include "isa.h"
#include "quant_impl.h"

#define INLINE static inline __attribute__((always_inline))

/* Software prefetch this far ahead of each row's loads (into the following rows when the
 * row ends): worth ~20% when the weights come from L3 or DRAM. */
#define PREFETCH_AHEAD 4096
#define PREFETCH(p) _mm_prefetch((const char *)(p) + PREFETCH_AHEAD, _MM_HINT_T0)

INLINE void flush_all(const int R, const int T, acc_t acc[][BP_MAX_TOKS])
{
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc_flush(&acc[r][t]);
}

/* One plane chunk: code byte i at bits 6-2j against byte i of panel plane j. */
INLINE void i2s_chunk(const int R, const int T, const vec *wv, const int8_t *const *act,
                      int64_t c, acc_t acc[][BP_MAX_TOKS])
{
    for (int j = 0; j < 4; j++) {
        vec code[BP_MAX_ROWS];
        for (int r = 0; r < R; r++)
            code[r] = v_plane(wv[r], 6 - 2 * j);
        for (int t = 0; t < T; t++) {
            const vec a = v_load(act[t] + (c * 4 + j) * VB);
            for (int r = 0; r < R; r++)
                acc_dot(&acc[r][t], code[r], a);
        }
    }
}

INLINE void i2s_tile(const int R, const int T, const uint8_t *const *w, const int8_t *const *act,
                     const bp_walk *walk, int32_t *sums)
{
    acc_t acc[BP_MAX_ROWS][BP_MAX_TOKS];
    vec wv[BP_MAX_ROWS];
    int pending = 0;
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc_zero(&acc[r][t]);
    const int64_t nchunks = walk->nchunks;
    const int tail = walk->tail;
    for (int64_t c = 0; c < nchunks - 1; c++) {
        const int64_t at = bp_code_at(walk, c * VB);
        for (int r = 0; r < R; r++) {
            wv[r] = v_load(w[r] + at);
            PREFETCH(w[r] + at);
        }
        i2s_chunk(R, T, wv, act, c, acc);
        if (FLUSH_DOTS && ++pending == FLUSH_DOTS / 4) {
            flush_all(R, T, acc);
            pending = 0;
        }
    }
    const int64_t last = bp_code_at(walk, (nchunks - 1) * VB);
    for (int r = 0; r < R; r++)
        wv[r] = tail == VB ? v_load(w[r] + last) : v_load_part(w[r] + last, tail);
    i2s_chunk(R, T, wv, act, nchunks - 1, acc);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            sums[r * T + t] = acc_total(&acc[r][t]);
}

/* One hf chunk of P packed rows: plane p (bits 2p) of packed row i is output row p*R + i. */
INLINE void hf_chunk(const int P, const int T, const vec *wv, const int8_t *const *act,
                     int64_t c, acc_t acc[][BP_MAX_TOKS])
{
    vec code[BP_MAX_ROWS];
    for (int i = 0; i < P; i++)
        for (int p = 0; p < 4; p++)
            code[i * 4 + p] = v_plane(wv[i], 2 * p);
    for (int t = 0; t < T; t++) {
        const vec a = v_load(act[t] + c * VB);
        for (int r = 0; r < 4 * P; r++)
            acc_dot(&acc[r][t], code[r], a);
    }
}

INLINE void hf_tile(const int P, const int T, const uint8_t *const *w, const int8_t *const *act,
                    const bp_walk *walk, int32_t *sums)
{
    acc_t acc[BP_MAX_ROWS][BP_MAX_TOKS];
    vec wv[BP_MAX_ROWS / 4];
    int pending = 0;
    const int64_t nchunks = walk->nchunks;
    const int tail = walk->tail;
    for (int r = 0; r < 4 * P; r++)
        for (int t = 0; t < T; t++)
            acc_zero(&acc[r][t]);
    for (int64_t c = 0; c < nchunks - 1; c++) {
        for (int i = 0; i < P; i++) {
            wv[i] = v_load(w[i] + c * VB);
            PREFETCH(w[i] + c * VB);
        }
        hf_chunk(P, T, wv, act, c, acc);
        if (FLUSH_DOTS && ++pending == FLUSH_DOTS) {
            flush_all(4 * P, T, acc);
            pending = 0;
        }
    }
    for (int i = 0; i < P; i++)
        wv[i] = tail == VB ? v_load(w[i] + (nchunks - 1) * VB) : v_load_part(w[i] + (nchunks - 1) * VB, tail);
    hf_chunk(P, T, wv, act, nchunks - 1, acc);
    for (int r = 0; r < 4 * P; r++)
        for (int t = 0; t < T; t++)
            sums[r * T + t] = acc_total(&acc[r][t]);
}

/* A row function over whole tiles of R rows, the last R' < R rows one at a time. */
#define DEFINE_ROWS(kind, name, R, T, planes)                                                 \
    static void name(const uint8_t *w, const bp_walk *walk, int64_t nrows,                     \
                     const int8_t *const *act, int32_t *sums)                                  \
    {                                                                                          \
        const uint8_t *rows[BP_MAX_ROWS];                                                      \
        int64_t r = 0;                                                                         \
        for (; r + (R) <= nrows; r += (R)) {                                                   \
            for (int i = 0; i < (R); i++)                                                      \
                rows[i] = w + (r + i) * walk->row_bytes;                                      \
            kind##_tile(R, T, rows, act, walk, sums + r * (planes) * (T));                     \
        }                                                                                      \
        for (; r < nrows; r++) {                                                               \
            rows[0] = w + r * walk->row_bytes;                                                \
            kind##_tile(1, T, rows, act, walk, sums + r * (planes) * (T));                     \
        }                                                                                      \
    }

DEFINE_ROWS(i2s, i2s_gemm, I2S_R, I2S_T, 1)
DEFINE_ROWS(hf, hf_gemm, HF_P, HF_T, 4)
#ifndef CUSTOM_GEMV /* else the unit writes its own one-token functions */
DEFINE_ROWS(i2s, i2s_gemv, I2S_GEMV_R, 1, 1)
DEFINE_ROWS(hf, hf_gemv, HF_GEMV_P, 1, 4)
#endif

/* TQ1_0 and TL: the unit's own functions when it defines these names, else the portable ones. */
#ifndef TQ1_ROWS
#define TQ1_ROWS bp_scalar_tq1
#endif
#ifndef TL1_TILE
#define TL1_TILE bp_scalar_tl1
#endif
#ifndef TL2_TILE
#define TL2_TILE bp_scalar_tl2
#endif

#define DEFINE_ISA(symbol, label)                                                                 \
    const bp_isa symbol = {label, VB, quantize_row, i2s_gemv, i2s_gemm, I2S_T, hf_gemv, hf_gemm, HF_T, \
                           TQ1_ROWS, TL1_TILE, TL2_TILE};
