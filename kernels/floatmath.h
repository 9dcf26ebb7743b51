/* exp, log, sin, cos of our own, in plain IEEE double + - * / only (no libm, no FMA: the
 * unit is compiled with -ffp-contract=off), so every machine and bitnet_pack/formats/floatmath.py
 * (the numpy replay, step for step) get the same bits. glibc's expf/sinf/cosf/pow pick FMA
 * or SSE variants at load time and numpy's float32 ufuncs have AVX-512/SVML paths: their
 * last bits depend on the machine. These are computed in double and rounded once to
 * float32 by the caller, so they equal the correctly rounded value but for rare ties.
 *
 *   rint(x)   (x + 1.5 * 2^52) - 1.5 * 2^52      (|x| < 2^51, round half to even)
 *   exp(x)    n = rint(x / ln2), r = (x - n*LN2_HI) - n*LN2_LO, exp(r) by Taylor to r^13
 *             (|r| <= 0.35: error < 1e-17), times 2^n built from bits; x clamped to
 *             [-200, 100] first (float32 results 0 and Inf are unchanged by that)
 *   log(x)    x = m * 2^e with m in [sqrt(1/2), sqrt(2)), s = (m - 1) / (m + 1),
 *             log m = 2 s (1 + s^2/3 + ... + s^20/21), log x = e * ln2 + log m   (x > 0)
 *   pow(b, y) exp(y * log(b))                    (b > 0)
 *   sin, cos  k = rint(x * 2/pi), r = ((x - k*P1) - k*P2) - k*P3 (fdlibm's 33+33+53-bit
 *             split of pi/2: exact k*P1, k*P2 for |k| < 2^20), Taylor to r^17 / r^18 on
 *             |r| <= pi/4, then the quadrant k mod 4
 * Polynomials are Horner from the highest coefficient. Coefficients: 1/n! and 1/(2i+1)
 * rounded to double (hex literals, the same in floatmath.py).
 */
#ifndef BITNET_PACK_FLOATMATH_H
#define BITNET_PACK_FLOATMATH_H

#include <stdint.h>
#include <string.h>

#define BP_RINT_MAGIC 0x1.8p52
#define BP_LN2 0x1.62e42fefa39efp-1
#define BP_LN2_HI 0x1.62e42fee00000p-1
#define BP_LN2_LO 0x1.a39ef35793c76p-33
#define BP_INV_LN2 0x1.71547652b82fep+0
#define BP_SQRT2 0x1.6a09e667f3bcdp+0
#define BP_TWO_OVER_PI 0x1.45f306dc9c883p-1
#define BP_PIO2_1 0x1.921fb54400000p+0
#define BP_PIO2_2 0x1.0b4611a600000p-34
#define BP_PIO2_3 0x1.3198a2e037073p-69

static const double bp_exp_coef[14] = { /* 1/n!, n = 0..13 */
    0x1p+0, 0x1p+0, 0x1p-1, 0x1.5555555555555p-3, 0x1.5555555555555p-5, 0x1.1111111111111p-7,
    0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-16, 0x1.71de3a556c734p-19,
    0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26, 0x1.1eed8eff8d898p-29, 0x1.6124613a86d09p-33};
static const double bp_log_coef[11] = { /* 1/(2i+1), i = 0..10 */
    0x1p+0, 0x1.5555555555555p-2, 0x1.999999999999ap-3, 0x1.2492492492492p-3,
    0x1.c71c71c71c71cp-4, 0x1.745d1745d1746p-4, 0x1.3b13b13b13b14p-4, 0x1.1111111111111p-4,
    0x1.e1e1e1e1e1e1ep-5, 0x1.af286bca1af28p-5, 0x1.8618618618618p-5};
static const double bp_sin_coef[9] = { /* (-1)^i/(2i+1)!, i = 0..8 */
    0x1p+0, -0x1.5555555555555p-3, 0x1.1111111111111p-7, -0x1.a01a01a01a01ap-13,
    0x1.71de3a556c734p-19, -0x1.ae64567f544e4p-26, 0x1.6124613a86d09p-33,
    -0x1.ae7f3e733b81fp-41, 0x1.952c77030ad4ap-49};
static const double bp_cos_coef[10] = { /* (-1)^i/(2i)!, i = 0..9 */
    0x1p+0, -0x1p-1, 0x1.5555555555555p-5, -0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-16,
    -0x1.27e4fb7789f5cp-22, 0x1.1eed8eff8d898p-29, -0x1.93974a8c07c9dp-37,
    0x1.ae7f3e733b81fp-45, -0x1.6827863b97d97p-53};

static inline double bp_rint(double x) { return (x + BP_RINT_MAGIC) - BP_RINT_MAGIC; }

static inline double bp_horner(const double *coef, int count, double x)
{
    double acc = coef[count - 1];
    for (int i = count - 2; i >= 0; i--)
        acc = acc * x + coef[i];
    return acc;
}

static inline double bp_pow2(int64_t n) /* 2^n, -1022 <= n <= 1023 */
{
    const uint64_t bits = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static inline double bp_exp_d(double x)
{
    if (x != x)
        return x;
    x = x < -200.0 ? -200.0 : x > 100.0 ? 100.0 : x;
    const double k = bp_rint(x * BP_INV_LN2);
    const double r = (x - k * BP_LN2_HI) - k * BP_LN2_LO;
    return bp_horner(bp_exp_coef, 14, r) * bp_pow2((int64_t)k);
}

static inline float bp_expf(float x) { return (float)bp_exp_d((double)x); }

static inline double bp_log_d(double x) /* x > 0, finite, normal */
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t e = (int64_t)(bits >> 52) - 1023;
    bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m >= BP_SQRT2) {
        m = m * 0.5;
        e += 1;
    }
    const double s = (m - 1.0) / (m + 1.0);
    const double series = bp_horner(bp_log_coef, 11, s * s);
    return (double)e * BP_LN2 + 2.0 * s * series;
}

static inline double bp_pow_d(double base, double y) { return bp_exp_d(y * bp_log_d(base)); }

/* sin and cos of x together (|x| < 2^20 * pi/2 for the exact reduction). */
static inline void bp_sincos_d(double x, double *sin_out, double *cos_out)
{
    const double k = bp_rint(x * BP_TWO_OVER_PI);
    const double r = ((x - k * BP_PIO2_1) - k * BP_PIO2_2) - k * BP_PIO2_3;
    const double r2 = r * r;
    const double s = r * bp_horner(bp_sin_coef, 9, r2);
    const double c = bp_horner(bp_cos_coef, 10, r2);
    switch ((int64_t)k & 3) {
    case 0: *sin_out = s; *cos_out = c; break;
    case 1: *sin_out = c; *cos_out = -s; break;
    case 2: *sin_out = -s; *cos_out = -c; break;
    default: *sin_out = -c; *cos_out = s; break;
    }
}

/* fmaf(a, b, c) rounded once, in double: a*b is exact there; TwoSum gives the exact
 * remainder e of s = a*b + c; only when s falls exactly on a midpoint of two floats does e
 * decide the rounding. (No libm, the same bits as a hardware FMA.) */
static inline float bp_fmaf(float a, float b, float c)
{
    const double p = (double)a * (double)b, cd = (double)c;
    const double s = p + cd, bb = s - p;
    const double e = (p - (s - bb)) + (cd - bb);
    const float r = (float)s;
    if (e == 0.0 || (double)r == s)
        return r;
    uint32_t rb;
    memcpy(&rb, &r, sizeof rb);
    rb = ((s > (double)r) == (r > 0.0f)) ? rb + 1 : rb - 1; /* the neighbour on s's side */
    float other;
    memcpy(&other, &rb, sizeof other);
    const int on_midpoint = s == ((double)r + (double)other) * 0.5;
    return on_midpoint && ((e > 0.0) == (other > r)) ? other : r;
}

/* ggml_v_expf of ggml's AVX-512 build (vec.h; the ARM optimized-routines algorithm):
 * z = fma(x, 0x1.715476p+0, 0x1.8p23), n = z - 0x1.8p23,
 * b = fma(-n, 0x1.7f7d1cp-20, fma(-n, 0x1.62e4p-1, x)), u = b*b,
 * j = fma(fma(fma(C5, b, C4), u, fma(C3, b, C2)), u, fma(C1, b, 1)), result j * 2^n rounded
 * once (scalef); |n| > 192: 0 below, Inf above. Differs from the correctly rounded exp in
 * about half of the values, by an ulp. */
static inline float bp_ggml_expf_avx512(float x)
{
    const float shift = 0x1.8p23f;
    const float n = bp_fmaf(x, 0x1.715476p+0f, shift) - shift;
    if (!(n <= 192.0f && n >= -192.0f))
        return x > 0.0f ? __builtin_inff() : 0.0f;
    const float b = bp_fmaf(-n, 0x1.7f7d1cp-20f, bp_fmaf(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = bp_fmaf(bp_fmaf(bp_fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    bp_fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                            u, bp_fmaf(0x1.ffffecp-1f, b, 1.0f));
    return (float)((double)j * bp_pow2((int64_t)n));
}

/* f16 bits -> float32, exactly: the 15 low bits shifted into place read as a float 2^-112
 * too small (subnormals too), exponent 31 becomes 255, the sign or-ed in. */
static inline float bp_f16_to_float(uint16_t h)
{
    uint32_t low = (uint32_t)(h & 0x7fffu) << 13, bits;
    float f;
    memcpy(&f, &low, sizeof f);
    f = f * 0x1p112f;
    memcpy(&bits, &f, sizeof bits);
    bits = ((h & 0x7c00u) == 0x7c00u ? low | 0x7f800000u : bits) | (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* float32 -> nearest f16 (ties to even, subnormals and overflow to Inf included) -> float32. */
static inline float bp_round_f16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    const uint32_t sign = bits & 0x80000000u;
    uint32_t mag = bits & 0x7fffffffu;
    if (mag >= 0x7f800000u) /* Inf, NaN */
        return f;
    if (mag >= 0x477ff000u) { /* >= 65520: Inf */
        mag = 0x7f800000u;
    } else if (mag < 0x38800000u) { /* below 2^-14: a multiple of 2^-24, by adding 0.5 */
        float a;
        memcpy(&a, &mag, sizeof a);
        a = (a + 0.5f) - 0.5f;
        memcpy(&mag, &a, sizeof mag);
    } else { /* keep 10 mantissa bits, ties to even */
        mag += 0xfffu + ((mag >> 13) & 1u);
        mag &= ~0x1fffu;
    }
    bits = sign | mag;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#endif
