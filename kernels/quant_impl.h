/* Per-token absmax int8 quantization, compiled into every unit (the SIMD ones vectorise
 * it with their own flags; the arithmetic is the same IEEE float32 everywhere).
 *
 * Bit-identical to numpy's float32 `s = 127 / max(|x|, 1e-5)`, `rint(x * s)`, clip:
 *  - the max is taken on the |x| bit patterns (monotonic for non-NaN floats, so exact);
 *    a pattern >= 0x7f800000 means Inf/NaN, reported instead of quantized;
 *  - rint is (v + 1.5*2^23) - 1.5*2^23, round half to even in the default rounding mode
 *    for |v| <= 2^22. Here |v| = |x| * fl(127 / amax) <= 127 * (1 + 2^-23), so the trick
 *    applies and the clamp to [-128, 127] (done on the integer, which commutes with rint)
 *    never bites; it stays as numpy has it. The units are built with -ffp-contract=off:
 *    no FMA may fuse these operations.
 */
#include <stdint.h>
#include <string.h>

static int quantize_row(const float *x, int64_t k, int8_t *q, float *s)
{
    const uint32_t *bits = (const uint32_t *)x;
    uint32_t amax_bits = 0;
    for (int64_t i = 0; i < k; i++) {
        const uint32_t b = bits[i] & 0x7fffffffu;
        amax_bits = b > amax_bits ? b : amax_bits;
    }
    if (amax_bits >= 0x7f800000u)
        return 1;
    float amax;
    memcpy(&amax, &amax_bits, sizeof amax);
    const float scale = 127.0f / (amax > 1e-5f ? amax : 1e-5f);
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    for (int64_t i = 0; i < k; i++) {
        int32_t r = (int32_t)((x[i] * scale + magic) - magic);
        r = r < -128 ? -128 : r;
        q[i] = (int8_t)(r > 127 ? 127 : r);
    }
    *s = scale;
    return 0;
}
