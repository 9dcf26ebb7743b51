/* ggml's reference K-quant quantizers (quant_floats.c; numpy reference bitnet_pack/quant_floats.py). */
#ifndef BITNET_PACK_QUANT_FLOATS_H
#define BITNET_PACK_QUANT_FLOATS_H

#include <stdint.h>

#define BP_QUANT_Q6_K 14
#define BP_QUANT_Q5_K 13
#define BP_QUANT_Q4_K 12

/* x [blocks * 256] float32 -> out [blocks * block bytes] (210 / 176 / 144); -2 for another kind. */
int bp_quantize_k(int kind, const float *x, int64_t blocks, uint8_t *out);

#endif
