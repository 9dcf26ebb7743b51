/* One-pass conversions between stored forms, without int8 codes in between:
 *
 *   fc_bf16_to_i2s   bf16 master rows -> I2_S bytes    (ternarize by threshold + pack)
 *   fc_bf16_to_hf    bf16 master      -> hf packed rows
 *   fc_hf_to_i2s     hf packed rows [j0, j1) -> I2_S bytes of the rows they hold
 *   fc_i2s_to_hf     I2_S bytes       -> hf packed rows [j0, j1)
 *   fc_i2s_to_tq2    I2_S bytes (x86) -> TQ2_0 blocks
 *
 * Each equals the two-step path (ternarize.c / layouts.c) byte for byte; the layouts'
 * bit diagrams are in bitnet_pack/formats/layouts/{i2s,hf}.py. A stored field is code + 1.
 */
#include "fastconvert.h"

/* code + 1 of a bf16 weight: 2 if w >= T, 0 if w <= -T, else 1 (T: threshold on |w|'s bits) */
static inline uint8_t bf16_field(uint16_t w, uint16_t threshold_bits) {
    uint8_t nonzero = (w & 0x7fffu) >= threshold_bits;
    uint8_t negative = (uint8_t)(w >> 15);
    return (uint8_t)(1 + nonzero - 2 * (nonzero & negative));
}

void fc_bf16_to_i2s(const uint16_t *restrict w, int64_t n, uint16_t threshold_bits, int64_t block,
                    uint8_t *restrict out) {
    const int64_t stride = block / 4;
    for (int64_t b = 0; b < n / block; b++) {
        const uint16_t *q = w + b * block;
        uint8_t *dst = out + b * stride;
        for (int64_t p = 0; p < stride; p++) {
            dst[p] = (uint8_t)((bf16_field(q[p], threshold_bits) << 6) |
                               (bf16_field(q[p + stride], threshold_bits) << 4) |
                               (bf16_field(q[p + 2 * stride], threshold_bits) << 2) |
                               bf16_field(q[p + 3 * stride], threshold_bits));
        }
    }
}

void fc_bf16_to_hf(const uint16_t *restrict w, int64_t out, int64_t in, uint16_t threshold_bits, int64_t j0,
                   int64_t j1, uint8_t *restrict packed) {
    const int64_t planes = (out + 3) / 4;
    for (int64_t j = j0; j < j1; j++) {
        uint8_t *dst = packed + j * in;
        for (int64_t c = 0; c < in; c++) dst[c] = 0;
        for (int p = 0; p < 4; p++) {
            const int64_t row = p * planes + j;
            if (row >= out) {  /* padding: code 0, field 1 */
                for (int64_t c = 0; c < in; c++) dst[c] |= (uint8_t)(1 << (2 * p));
                continue;
            }
            const uint16_t *src = w + row * in;
            for (int64_t c = 0; c < in; c++) dst[c] |= (uint8_t)(bf16_field(src[c], threshold_bits) << (2 * p));
        }
    }
}

/* One output row from plane `p` of a packed row (the shift is a constant in each copy). */
#define HF_ROW_TO_I2S(SHIFT)                                                                   \
    for (int64_t b = 0; b < in / block; b++) {                                                 \
        const uint8_t *q = src + b * block;                                                    \
        uint8_t *o = row + b * stride;                                                         \
        for (int64_t p = 0; p < stride; p++)                                                   \
            o[p] = (uint8_t)((((q[p] >> SHIFT) & 3) << 6) | (((q[p + stride] >> SHIFT) & 3) << 4) | \
                             (((q[p + 2 * stride] >> SHIFT) & 3) << 2) | ((q[p + 3 * stride] >> SHIFT) & 3)); \
    }

void fc_hf_to_i2s(const uint8_t *restrict packed, int64_t out, int64_t in, int64_t block, int64_t j0, int64_t j1,
                  uint8_t *restrict dst) {
    const int64_t planes = (out + 3) / 4, stride = block / 4;
    for (int64_t j = j0; j < j1; j++) {  /* a packed row feeds four output rows while it is hot */
        const uint8_t *src = packed + j * in;
        for (int plane = 0; plane < 4 && plane * planes + j < out; plane++) {
            uint8_t *row = dst + (plane * planes + j) * (in / 4);
            switch (plane) {
                case 0: HF_ROW_TO_I2S(0) break;
                case 1: HF_ROW_TO_I2S(2) break;
                case 2: HF_ROW_TO_I2S(4) break;
                default: HF_ROW_TO_I2S(6) break;
            }
        }
    }
}

/* hf packed rows [j0, j1) straight from I2_S code bytes (`body`, all out * in / 4 of them). */
void fc_i2s_to_hf(const uint8_t *restrict body, int64_t out, int64_t in, int64_t block, int64_t j0, int64_t j1,
                  uint8_t *restrict packed) {
    const int64_t planes = (out + 3) / 4, stride = block / 4;
    for (int64_t j = j0; j < j1; j++) {
        uint8_t *dst = packed + j * in;
        for (int64_t c = 0; c < in; c++) dst[c] = 0;
        for (int plane = 0; plane < 4; plane++) {
            const int64_t row = plane * planes + j;
            if (row >= out) {  /* padding: code 0, field 1 */
                for (int64_t c = 0; c < in; c++) dst[c] |= (uint8_t)(1 << (2 * plane));
                continue;
            }
            const uint8_t *src = body + row * (in / 4);
            for (int64_t b = 0; b < in / block; b++) {
                for (int g = 0; g < 4; g++) {
                    uint8_t *o = dst + b * block + g * stride;
                    const uint8_t *q = src + b * stride;
                    const int shift = 6 - 2 * g;
                    for (int64_t p = 0; p < stride; p++) o[p] |= (uint8_t)(((q[p] >> shift) & 3) << (2 * plane));
                }
            }
        }
    }
}

/* TQ2_0 blocks straight from x86 I2_S code bytes (128-element blocks): TQ2_0 half h of a
 * 256-block is I2_S block 2t+h with the four 2-bit fields of each byte in reverse order
 * (I2_S puts the first element on top, TQ2_0 at the bottom). A byte of four zero codes is
 * 0x55. Returns nothing to check: I2_S bytes were checked when read. */
void fc_i2s_to_tq2(const uint8_t *restrict body, int64_t blocks, uint16_t d, uint8_t *restrict out) {
    for (int64_t t = 0; t < blocks; t++) {
        const uint8_t *src = body + t * 64;
        uint8_t *dst = out + t * 66;
        uint8_t differs = 0;
        for (int m = 0; m < 64; m++) {
            uint8_t x = src[m];
            differs |= x ^ 0x55;
            dst[m] = (uint8_t)(((x & 0x03) << 6) | ((x & 0x0c) << 2) | ((x & 0x30) >> 2) | ((x & 0xc0) >> 6));
        }
        uint16_t stored = differs ? d : 0;
        dst[64] = (uint8_t)(stored & 0xff);
        dst[65] = (uint8_t)(stored >> 8);
    }
}
