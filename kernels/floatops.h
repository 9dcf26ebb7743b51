/* The decode's float operations (floatops.c), each in ONE specified order that
 * bitnet_pack/engine/floatops.py replays in numpy bit for bit. They are one portable unit built
 * with the extension's baseline flags and -ffp-contract=off: no backend (scalar, avx2,
 * avx512, avx512vnni) picks another instruction sequence, and a thread computes whole
 * outputs, so neither the backend nor the thread count changes a bit.
 *
 * sum16(t[0..n))  the lane sum shared with half_isa.h: lane j (0..15) starts at +0 and adds
 *                 t[16b + j] for b = 0, 1, ... in order; then a[j] = l[j] + l[j+8],
 *                 b[j] = a[j] + a[j+4], c[j] = b[j] + b[j+2], sum = c[0] + c[1].
 *                 (A missing tail term acts as +0: a lane is never -0.)
 * dot(a, b)       sum16 of the float32 products a[i] * b[i] (rounded), float32 lanes.
 *
 * rms_norm        mean = float(sum16 in double of double(x*x)) / K), x*x a float32
 *                 product; y = (x * (1 / sqrt(mean + eps))) * w, all float32.
 * rope_tables     mode 0 (transformers): inv[i] = 1 / float(pow(theta, float(2i) / d)),
 *                 angle = float(pos) * inv[i]; mode 1 (ggml): step = float(pow(theta,
 *                 -2f / d)), angle[0] = pos, angle[i] = angle[i-1] * step. cos, sin =
 *                 float(floatmath.h sincos(angle)).
 * rope_apply      NeoX pairs (a, b) = (x[i], x[i + d/2]): (a*c - b*s, b*c + a*s).
 * attention       query i (position start + i), head h, kv head g = h / (heads / kv):
 *                 s[j] = dot(q, k[g, j]) * scale for j <= start + i; m = max s;
 *                 e[j] = expf(s[j] - m); softmax 0: p = e / sum16_f32(e);
 *                 softmax 1 (ggml): p = e * float(1 / sum16_double(e)); flag P_F16:
 *                 p rounded to f16; out[dd] = sum16 over j of p[j] * v[g, j, dd] (float32).
 *                 Flag GGML_AVX512 / GGML_AVX2 (one-token steps of bitnet.cpp numerics, f16
 *                 q, k, v): Q.K and P.V in ggml_vec_dot_f16's order instead (floatops_ggml.c),
 *                 P.V over the KV cells padded to 32 as llama.cpp runs it.
 *                 Flag SOFTMAX_AVX512: e = ggml_v_expf (AVX-512 build, floatmath.h) and the
 *                 sum over the 32-padded cells in blocks of 16, each folded by halves in
 *                 float32 and added in double, then p = e * float(1 / sum).
 * activation      relu2: r = (g < 0 ? 0 : g), (r * r) * up;  silu: (g / (1 + expf(-g))) * up;
 *                 gelu_tanh: in double, u = c * (x + 0.044715 * x * x * x) (c = sqrt(2/pi)),
 *                 t = 1 - 2 / (exp(2u) + 1), float(0.5 * x * (1 + t)) * up (floatmath.gelu_tanh).
 * f32_matmul      y[n, v] = dot(x[n], w[v]) (the lm_head when weights are not 16-bit).
 */
#ifndef BITNET_PACK_FLOATOPS_H
#define BITNET_PACK_FLOATOPS_H

#include <stdint.h>

#define BP_SOFTMAX_GGML 1
#define BP_P_F16 2
#define BP_GGML_AVX512 4 /* attention flag and variant: ggml_vec_dot_f16 order (floatops_ggml.c) */
#define BP_GGML_AVX2 8
#define BP_SOFTMAX_AVX512 16 /* with SOFTMAX_GGML: ggml_vec_soft_max_f32 of the AVX-512 build */
#define BP_ACT_RELU2 0
#define BP_ACT_SILU 1
#define BP_ACT_GELU_TANH 2 /* the embedding models' Gemma3 MLP (bitnet_pack/emb), not an LM activation */

void bp_float_set_parallel_min(int64_t work);
int64_t bp_float_parallel_min(void);

void bp_rms_norm(const float *x, int64_t n, int64_t k, const float *w, float eps, float *y);
void bp_rope_tables(const int64_t *positions, int64_t t, int64_t head_dim, double theta, int mode,
                    float *cos_out, float *sin_out);
void bp_rope_apply(float *x, int64_t t, int64_t heads, int64_t head_dim, const float *cos_t,
                   const float *sin_t);
int bp_attention(const float *q, int64_t t, int64_t heads, int64_t head_dim, const float *keys,
                 const float *values, int64_t kv_heads, int64_t capacity, int64_t start, float scale,
                 int flags, float *out);
void bp_activation(const float *gate, const float *up, int64_t n, int kind, float *out);
void bp_f32_matmul(const float *w, int64_t v, int64_t k, const float *x, int64_t n, float *y);

/* y[t, r] = dot(x[t], w, r, k, variant) for r < v, t < n: rows split over the pool in blocks
 * of 32 (each output computed whole by one thread). */
typedef float (*bp_row_dot_fn)(const float *x, const void *w, int64_t row, int64_t k, int variant);
void bp_row_products(bp_row_dot_fn dot, const void *w, int64_t v, int64_t k, const float *x, int64_t n,
                     int variant, float *y);

/* floatops_ggml.c: ggml_vec_dot_f16's order, for operands holding f16 values. */
float bp_ggml_dot(const float *a, int64_t as, const float *b, const uint16_t *b16, int64_t bs,
                  int64_t n, int64_t split, int variant);
void bp_ggml_f16_matmul(const uint16_t *w, int64_t v, int64_t k, const float *x, int64_t n, int variant,
                        float *y);

/* The transcendental functions and the f16 rounding alone, for tests. */
void bp_expf_array(const float *x, int64_t n, float *y);
void bp_ggml_expf_avx512_array(const float *x, int64_t n, float *y);
void bp_sincos_array(const float *x, int64_t n, float *sin_out, float *cos_out);
void bp_round_f16_array(const float *x, int64_t n, float *y);

#endif
