/* The C entry points the Cython wrapper (_kernels.pyx) calls. All are thread-safe and
 * touch no Python object, so the wrapper calls them with the GIL released.
 *
 * Backends are small integers: 0 scalar, 1 avx2, 2 avx512, 3 avx512vnni.
 * Walks (a layout entry's `kernel_id`, bitnet_pack/formats/layouts/*.py; kernel_formats.py has the
 * byte pictures; any other number is refused with BP_ESHAPE):
 *   0 i2_s (x86 128/32 blocks, K % 128), 1 hf (transformers' packed planes, any K),
 *   2 i2_s_arm (64/16 blocks, K % 64), 3 tq2_0, 4 tq1_0 (256-element blocks with an fp16 d
 *   that the kernel does not read, K % 256), 5 tl1, 6 tl2 (tiled by `tiling` = BM, BK, bm,
 *   which the caller has checked against the converter's rules).
 * Return codes: 0 ok, BP_ENOMEM, BP_EBACKEND (not built or not on this CPU), BP_ESHAPE,
 * or for bp_linear a positive count of activation rows holding NaN/Inf (nothing written).
 */
#ifndef BITNET_PACK_KERNELS_H
#define BITNET_PACK_KERNELS_H

#include <stdint.h>

#define BP_LAYOUT_I2S 0
#define BP_LAYOUT_HF 1
#define BP_LAYOUT_I2S_ARM 2
#define BP_LAYOUT_TQ2 3
#define BP_LAYOUT_TQ1 4
#define BP_LAYOUT_TL1 5
#define BP_LAYOUT_TL2 6
#define BP_LAYOUT_IQ1BN 7    /* ik_llama.cpp's three row-scaled BitNet types: iq_bn.h, K % 64 */
#define BP_LAYOUT_IQ2BN 8
#define BP_LAYOUT_IQ2BN_R4 9
#define BP_ENOMEM (-1)
#define BP_EBACKEND (-2)
#define BP_ESHAPE (-3)

int bp_backend_count(void);
const char *bp_backend_name(int backend);
int bp_backend_built(int backend);     /* compiled into this extension */
int bp_backend_supported(int backend); /* built and this CPU (and OS) can run it */
int bp_best_backend(void);

void bp_set_threads(int n); /* threads for large products (pool.c), the caller included */
int bp_get_threads(void);

/* Per-token absmax int8: s = 127 / max(|x|, 1e-5), q = clamp(rint(x * s), -128, 127).
 * Returns the number of rows holding NaN/Inf (their q and s are unspecified). */
int64_t bp_quantize(int backend, const float *x, int64_t n, int64_t k, int8_t *q, float *s);

/* out[n, m] = sum_k t[m, k] * q[n, k] (exact int32). `tiling` (BM, BK, bm) is read for TL only. */
int bp_matmul_int(int backend, int layout, const uint8_t *w, int64_t m, int64_t k, const int64_t *tiling,
                  const int8_t *q, int64_t n, int32_t *out);

/* y[n, m] = (float)sum_k t[m, k] * q[n, k] / s[n] * beta with (q, s) = bp_quantize(x). */
int64_t bp_linear(int backend, int layout, const uint8_t *w, int64_t m, int64_t k, const int64_t *tiling,
                  float beta, const float *x, int64_t n, float *y);

/* 16-bit weights (half.c; the summation order is specified in half_isa.h):
 * y[n, v] = sum_k float(w[v, k]) * x[n, k], w uint16 [V, K] as bf16 or f16 bits. */
#define BP_HALF_BF16 0
#define BP_HALF_F16 1
int bp_half_matmul(int backend, int kind, const uint16_t *w, int64_t v, int64_t k,
                   const float *x, int64_t n, float *y);

/* Byte values no encoder writes, counted over `len` bytes at w + r * stride for r < nrows:
 * sum of table[byte], which `pattern` computes 8 bytes at a time when it is not BP_BAD_TABLE
 * (2-bit fields of 3, nibbles above 8, nibbles above 13; the table must agree). */
#define BP_BAD_TABLE 0
#define BP_BAD_FIELD3 1
#define BP_BAD_NIBBLE_ABOVE_8 2
#define BP_BAD_NIBBLE_ABOVE_13 3
int64_t bp_count_bad(const uint8_t *w, int64_t nrows, int64_t len, int64_t stride, int pattern,
                     const uint8_t *table);

#endif
