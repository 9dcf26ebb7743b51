/* bitnet_pack.formats._fastconvert: the hot loops of a conversion, in plain C.
 *
 * Every function works on one contiguous range and touches nothing else, so the Python
 * front (bitnet_pack/formats/fastpath.py) can run two ranges on two threads with the GIL released.
 * Each one equals a numpy reference byte for byte (tests/test_fastpath.py):
 *
 *   fc_sum_f32, fc_abs_sum_*     torchsum._inner_sum      (one parallel_for chunk of torch.sum)
 *   fc_ternarize_*               ternary.ternarize's clip(rint(w * scale), -1, 1)
 *   fc_i2s_*, fc_hf_*, fc_tq*_*  layouts/{i2s,hf,tq}.py encode / decode
 *   fc_lut16                     any 16-bit -> 16-bit map (bf16 <-> f16), tables made by numpy
 *
 * Codes travel as int8 -1/0/+1. Encoders return how many codes are outside {-1, 0, 1} and
 * decoders how many 2-bit fields hold 3 (or bytes no quantizer writes): when that count is
 * not zero the caller reruns the reference, which raises the precise error.
 */
#ifndef BITNET_PACK_FASTCONVERT_H
#define BITNET_PACK_FASTCONVERT_H

#include <stdint.h>

float fc_sum_f32(const float *x, int64_t n);
float fc_abs_sum_f32(const float *x, int64_t n);
float fc_abs_sum_bf16(const uint16_t *x, int64_t n);

/* Codes from stored bits: sign(w) where |w|'s bits >= the threshold for `scale` (> 0). */
uint16_t fc_ternary_threshold_bf16(float scale);
uint32_t fc_ternary_threshold_f32(float scale);
void fc_ternarize_f32(const uint32_t *bits, int64_t n, uint32_t threshold_bits, int8_t *codes);
void fc_ternarize_bf16(const uint16_t *x, int64_t n, uint16_t threshold_bits, int8_t *codes);

int64_t fc_i2s_encode(const int8_t *codes, int64_t n, int64_t block, uint8_t *out);
int64_t fc_i2s_decode(const uint8_t *in, int64_t n, int64_t block, int8_t *codes);

/* hf, one run of `count` packed bytes at a time: plane[p] -> codes of rows p*R + j (NULL:
 * padding rows, code 0); decode extracts one plane. */
int64_t fc_hf_encode(const int8_t *const plane[4], int64_t count, uint8_t *packed);
void fc_hf_decode_plane(const uint8_t *packed, int64_t count, int plane, int8_t *codes);
int64_t fc_count_threes(const uint8_t *bytes, int64_t n);

typedef struct {
    int64_t bad;       /* invalid fields or bytes */
    int64_t nonzero;   /* blocks holding a non-zero code */
    int64_t mismatch;  /* non-zero blocks whose d differs from the first one's */
    uint16_t first_d;  /* d of the first non-zero block (valid when nonzero > 0) */
} fc_tq_stats;

int64_t fc_tq2_encode(const int8_t *codes, int64_t blocks, uint16_t d, uint8_t *out);
void fc_tq2_decode(const uint8_t *in, int64_t blocks, int8_t *codes, fc_tq_stats *stats);
int64_t fc_tq1_encode(const int8_t *codes, int64_t blocks, uint16_t d, uint8_t *out);
void fc_tq1_decode(const uint8_t *in, int64_t blocks, int8_t *codes, fc_tq_stats *stats);

/* One pass from one stored form to another (direct.c); thresholds as for fc_ternarize_*. */
void fc_bf16_to_i2s(const uint16_t *w, int64_t n, uint16_t threshold_bits, int64_t block, uint8_t *out);
void fc_bf16_to_hf(const uint16_t *w, int64_t out, int64_t in, uint16_t threshold_bits, int64_t j0, int64_t j1,
                   uint8_t *packed);
void fc_hf_to_i2s(const uint8_t *packed, int64_t out, int64_t in, int64_t block, int64_t j0, int64_t j1,
                  uint8_t *dst);
void fc_i2s_to_hf(const uint8_t *body, int64_t out, int64_t in, int64_t block, int64_t j0, int64_t j1,
                  uint8_t *packed);
void fc_i2s_to_tq2(const uint8_t *body, int64_t blocks, uint16_t d, uint8_t *out);

/* out[i] = lut[in[i]]; returns how many in[i] have flag[in[i]] set. */
int64_t fc_lut16(const uint16_t *in, int64_t n, const uint16_t *lut, const uint8_t *flag, uint16_t *out);

#endif
