/* ggml's reference K-quant quantizers (quant_floats.c; numpy reference bitnet_pack/formats/quant_floats.py). */
#ifndef BITNET_PACK_QUANT_FLOATS_H
#define BITNET_PACK_QUANT_FLOATS_H

#include <stdint.h>

#define BP_QUANT_Q6_K 14
#define BP_QUANT_Q5_K 13
#define BP_QUANT_Q4_K 12
#define BP_QUANT_Q8_0 8

/* x [blocks * 256] float32 -> out [blocks * block bytes] (210 / 176 / 144); -2 for another kind. */
int bp_quantize_k(int kind, const float *x, int64_t blocks, uint8_t *out);

/* y [n, v] = x [n, k] times w (v rows of k values in ggml type `kind`, incl. Q8_0) as ggml's
 * vec_dot of that type, x quantized to Q8_K (Q8_0 for Q8_0) first. 0, or -1 (memory), -2 (kind),
 * -3 (k not a multiple of the block). */
int bp_quant_matmul(int kind, const uint8_t *w, int64_t v, int64_t k, const float *x, int64_t n, float *y);

#endif
