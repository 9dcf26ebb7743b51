/* Portable row functions (no SIMD flags): the "scalar" backend and the fallback on any
 * CPU. vb = 32: an i2_s chunk is one 128-weight block with the panel in natural order;
 * every token count uses the one-token function. */
#include "isa.h"
#include "quant_impl.h"

static void i2s_rows(const uint8_t *w, int64_t row_bytes, int64_t nrows, const int8_t *const *act,
                     int64_t nchunks, int tail, int32_t *sums)
{
    (void)tail; /* i2_s rows are whole 32-byte blocks */
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * row_bytes;
        const int8_t *a = act[0];
        int32_t acc = 0;
        for (int64_t c = 0; c < nchunks; c++, b += 32, a += 128)
            for (int p = 0; p < 32; p++)
                acc += (b[p] >> 6) * a[p] + ((b[p] >> 4) & 3) * a[32 + p]
                     + ((b[p] >> 2) & 3) * a[64 + p] + (b[p] & 3) * a[96 + p];
        sums[r] = acc;
    }
}

static void hf_rows(const uint8_t *w, int64_t row_bytes, int64_t nrows, const int8_t *const *act,
                    int64_t nchunks, int tail, int32_t *sums)
{
    const int64_t cols = (nchunks - 1) * 32 + tail;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + r * row_bytes;
        const int8_t *a = act[0];
        int32_t acc[4] = {0, 0, 0, 0};
        for (int64_t k = 0; k < cols; k++) {
            acc[0] += (b[k] & 3) * a[k];
            acc[1] += ((b[k] >> 2) & 3) * a[k];
            acc[2] += ((b[k] >> 4) & 3) * a[k];
            acc[3] += (b[k] >> 6) * a[k];
        }
        for (int p = 0; p < 4; p++)
            sums[r * 4 + p] = acc[p];
    }
}

const bp_isa bp_isa_scalar = {"scalar", 32, quantize_row, i2s_rows, i2s_rows, 1, hf_rows, hf_rows, 1};
