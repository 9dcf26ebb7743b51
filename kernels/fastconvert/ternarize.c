/* The second pass of absmean ternarization: t = clamp(round_half_even(w * scale), -1, 1).
 *
 * With p = w * scale rounded to float32 (as numpy and torch compute it), rint(p) clipped to
 * [-1, 1] is +1 exactly when p > 0.5 and -1 when p < -0.5 (0.5 itself rounds to even, 0).
 * Rounding is monotone and symmetric, so for scale > 0 there is one magnitude threshold:
 *
 *     t = sign(w) if |w| >= T else 0,   T = the least magnitude with fl(T * scale) > 0.5
 *
 * T is found once per tensor by bisection over the magnitudes' bit patterns (which order
 * like the magnitudes), doing the float32 multiplication itself; the pass is then integer
 * compares on the stored bits. NaN and Inf never get here (the absmean pass finds them).
 */
#include "fastconvert.h"

#include <string.h>

static int above_half(uint32_t magnitude_bits, float scale) {
    float w;
    memcpy(&w, &magnitude_bits, 4);
    return w * scale > 0.5f;
}

/* Least bits in [0, top] with above_half; `top` (Inf) always qualifies for scale > 0. */
static uint32_t threshold(uint32_t top, int shift, float scale) {
    uint32_t lo = 0, hi = top;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (above_half(mid << shift, scale)) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

uint16_t fc_ternary_threshold_bf16(float scale) { return (uint16_t)threshold(0x7f80u, 16, scale); }

uint32_t fc_ternary_threshold_f32(float scale) { return threshold(0x7f800000u, 0, scale); }

void fc_ternarize_f32(const uint32_t *restrict bits, int64_t n, uint32_t threshold_bits, int8_t *restrict codes) {
    for (int64_t i = 0; i < n; i++) {
        int8_t nonzero = (bits[i] & 0x7fffffffu) >= threshold_bits;
        codes[i] = (bits[i] >> 31) ? (int8_t)-nonzero : nonzero;
    }
}

void fc_ternarize_bf16(const uint16_t *restrict x, int64_t n, uint16_t threshold_bits, int8_t *restrict codes) {
    for (int64_t i = 0; i < n; i++) {
        int8_t nonzero = (x[i] & 0x7fffu) >= threshold_bits;
        codes[i] = (x[i] >> 15) ? (int8_t)-nonzero : nonzero;
    }
}
