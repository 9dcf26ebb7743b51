/* Packing and unpacking of the ternary layouts; the bit diagrams are in bitnet_pack/formats/layouts.
 *
 * A stored field is code + 1 (0, 1, 2). Codes outside {-1, 0, 1} make a field above 2:
 * encoders count them, decoders count fields equal to 3, and the caller reruns the numpy
 * reference to raise its error.
 */
#include "fastconvert.h"

#define QK_K 256

static inline uint8_t field(int8_t code) { return (uint8_t)(code + 1); }

/* -- i2_s: byte p of a block holds elements p, p+B/4, p+B/2, p+3B/4, the first on top ---- */
int64_t fc_i2s_encode(const int8_t *restrict codes, int64_t n, int64_t block, uint8_t *restrict out) {
    const int64_t stride = block / 4;
    int64_t bad = 0;
    for (int64_t b = 0; b < n / block; b++) {
        const int8_t *q = codes + b * block;
        uint8_t *dst = out + b * stride;
        for (int64_t p = 0; p < stride; p++) {
            uint8_t u0 = field(q[p]), u1 = field(q[p + stride]);
            uint8_t u2 = field(q[p + 2 * stride]), u3 = field(q[p + 3 * stride]);
            bad += (u0 > 2) + (u1 > 2) + (u2 > 2) + (u3 > 2);
            dst[p] = (uint8_t)((u0 << 6) | (u1 << 4) | (u2 << 2) | u3);
        }
    }
    return bad;
}

int64_t fc_i2s_decode(const uint8_t *restrict in, int64_t n, int64_t block, int8_t *restrict codes) {
    const int64_t stride = block / 4;
    int64_t bad = 0;
    for (int64_t b = 0; b < n / block; b++) {
        const uint8_t *src = in + b * stride;
        int8_t *q = codes + b * block;
        for (int g = 0; g < 4; g++) {
            const int shift = 6 - 2 * g;
            for (int64_t p = 0; p < stride; p++) {
                uint8_t u = (src[p] >> shift) & 3;
                bad += u == 3;
                q[g * stride + p] = (int8_t)(u - 1);
            }
        }
    }
    return bad;
}

/* -- hf: packed[j, c] holds rows j, R+j, 2R+j, 3R+j of column c, row j in the low bits ----
 * Both directions work plane by plane: `plane[p]` points at the codes of rows p*R + j0 ..
 * (`count` codes each); a NULL plane is the padding past `out` (stored as code 0). */
int64_t fc_hf_encode(const int8_t *const plane[4], int64_t count, uint8_t *restrict packed) {
    static const int8_t zero_row[256];
    int64_t bad = 0;
    for (int64_t done = 0; done < count; done += 256) {
        const int64_t n = count - done < 256 ? count - done : 256;
        const int8_t *r0 = plane[0] ? plane[0] + done : zero_row, *r1 = plane[1] ? plane[1] + done : zero_row;
        const int8_t *r2 = plane[2] ? plane[2] + done : zero_row, *r3 = plane[3] ? plane[3] + done : zero_row;
        uint8_t *dst = packed + done;
        for (int64_t c = 0; c < n; c++) {
            uint8_t u0 = field(r0[c]), u1 = field(r1[c]), u2 = field(r2[c]), u3 = field(r3[c]);
            bad += (u0 > 2) + (u1 > 2) + (u2 > 2) + (u3 > 2);
            dst[c] = (uint8_t)(u0 | (u1 << 2) | (u2 << 4) | (u3 << 6));
        }
    }
    return bad;
}

void fc_hf_decode_plane(const uint8_t *restrict packed, int64_t count, int plane, int8_t *restrict codes) {
    const int shift = 2 * plane;
    for (int64_t c = 0; c < count; c++) codes[c] = (int8_t)(((packed[c] >> shift) & 3) - 1);
}

/* 2-bit fields equal to 3 in `n` bytes (hf and i2_s never write them). Valid data is the
 * common case, so a vectorizable OR over the bytes decides first whether to count. */
int64_t fc_count_threes(const uint8_t *restrict bytes, int64_t n) {
    uint8_t any = 0;
    for (int64_t i = 0; i < n; i++) any |= bytes[i] & (bytes[i] >> 1);
    if (!(any & 0x55)) return 0;
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        uint8_t both = bytes[i] & (bytes[i] >> 1) & 0x55;
        count += (both & 1) + ((both >> 2) & 1) + ((both >> 4) & 1) + (both >> 6);
    }
    return count;
}

/* -- tq2_0: qs[32h + m] holds a[128h + m + 32n] at bits 2n (first element low) ----------- */
static void put_d(uint8_t *at, uint16_t d) {
    at[0] = (uint8_t)(d & 0xff);
    at[1] = (uint8_t)(d >> 8);
}

static void note_d(fc_tq_stats *stats, int nonzero, const uint8_t *at) {
    if (!nonzero) return;
    uint16_t d = (uint16_t)(at[0] | (at[1] << 8));
    if (stats->nonzero++ == 0) stats->first_d = d;
    else stats->mismatch += d != stats->first_d;
}

int64_t fc_tq2_encode(const int8_t *restrict codes, int64_t blocks, uint16_t d, uint8_t *restrict out) {
    int64_t bad = 0;
    for (int64_t b = 0; b < blocks; b++) {
        const int8_t *a = codes + b * QK_K;
        uint8_t *dst = out + b * 66;
        int nonzero = 0;
        for (int h = 0; h < 2; h++) {
            for (int m = 0; m < 32; m++) {
                const int8_t *e = a + 128 * h + m;
                uint8_t u0 = field(e[0]), u1 = field(e[32]), u2 = field(e[64]), u3 = field(e[96]);
                bad += (u0 > 2) + (u1 > 2) + (u2 > 2) + (u3 > 2);
                nonzero |= (e[0] | e[32] | e[64] | e[96]) != 0;
                dst[32 * h + m] = (uint8_t)(u0 | (u1 << 2) | (u2 << 4) | (u3 << 6));
            }
        }
        put_d(dst + 64, nonzero ? d : 0);
    }
    return bad;
}

void fc_tq2_decode(const uint8_t *restrict in, int64_t blocks, int8_t *restrict codes, fc_tq_stats *stats) {
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *src = in + b * 66;
        int8_t *a = codes + b * QK_K;
        int nonzero = 0;
        for (int h = 0; h < 2; h++) {
            for (int n = 0; n < 4; n++) {
                for (int m = 0; m < 32; m++) {
                    uint8_t u = (src[32 * h + m] >> (2 * n)) & 3;
                    stats->bad += u == 3;
                    nonzero |= u != 1;
                    a[128 * h + 32 * n + m] = (int8_t)(u - 1);
                }
            }
        }
        note_d(stats, nonzero, src + 64);
    }
}

/* -- tq1_0: five trits per byte, v = 81 a0 + 27 a1 + 9 a2 + 3 a3 + a4 stored as ceil(v*256/243) */
static const uint8_t POW3[5] = {1, 3, 9, 27, 81};

static inline uint8_t trit_byte(unsigned v) { return (uint8_t)((v * 256 + 242) / 243); }

static inline uint8_t trit_of(uint8_t byte, int n) { return (uint8_t)(((uint8_t)(byte * POW3[n]) * 3) >> 8); }

static inline int byte_is_valid(uint8_t byte, int trits) {
    unsigned v = 0;
    for (int n = 0; n < 5; n++) v = v * 3 + trit_of(byte, n);
    return trit_byte(v) == byte && (trits == 5 || trit_of(byte, 4) == 0);
}

int64_t fc_tq1_encode(const int8_t *restrict codes, int64_t blocks, uint16_t d, uint8_t *restrict out) {
    int64_t bad = 0;
    for (int64_t b = 0; b < blocks; b++) {
        const int8_t *a = codes + b * QK_K;
        uint8_t *dst = out + b * 54;
        int nonzero = 0;
        for (int i = 0; i < QK_K; i++) {
            bad += field(a[i]) > 2;
            nonzero |= a[i] != 0;
        }
        for (int m = 0; m < 32; m++) {
            unsigned v = 0;
            for (int n = 0; n < 5; n++) v = v * 3 + field(a[m + 32 * n]);
            dst[m] = trit_byte(v & 0xff);
        }
        for (int m = 0; m < 16; m++) {
            unsigned v = 0;
            for (int n = 0; n < 5; n++) v = v * 3 + field(a[160 + m + 16 * n]);
            dst[32 + m] = trit_byte(v & 0xff);
        }
        for (int j = 0; j < 4; j++) {
            unsigned v = 0;
            for (int n = 0; n < 4; n++) v = v * 3 + field(a[240 + j + 4 * n]);
            dst[48 + j] = trit_byte((v * 3) & 0xff);
        }
        put_d(dst + 52, nonzero ? d : 0);
    }
    return bad;
}

static int unpack_tq1_bytes(const uint8_t *src, int count, int trits, int8_t *a, int64_t *bad) {
    int nonzero = 0;
    for (int m = 0; m < count; m++) {
        *bad += !byte_is_valid(src[m], trits);
        for (int n = 0; n < trits; n++) {
            uint8_t t = trit_of(src[m], n);
            nonzero |= t != 1;
            a[n * count + m] = (int8_t)(t - 1);
        }
    }
    return nonzero;
}

void fc_tq1_decode(const uint8_t *restrict in, int64_t blocks, int8_t *restrict codes, fc_tq_stats *stats) {
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *src = in + b * 54;
        int8_t *a = codes + b * QK_K;
        int nonzero = unpack_tq1_bytes(src, 32, 5, a, &stats->bad);
        nonzero |= unpack_tq1_bytes(src + 32, 16, 5, a + 160, &stats->bad);
        nonzero |= unpack_tq1_bytes(src + 48, 4, 4, a + 240, &stats->bad);
        note_d(stats, nonzero, src + 52);
    }
}

/* -- 16-bit maps (bf16 <-> f16 via tables the numpy reference made) ----------------------- */
int64_t fc_lut16(const uint16_t *restrict in, int64_t n, const uint16_t *restrict lut,
                 const uint8_t *restrict flag, uint16_t *restrict out) {
    int64_t flagged = 0;
    for (int64_t i = 0; i < n; i++) {
        out[i] = lut[in[i]];
        flagged += flag[in[i]];
    }
    return flagged;
}
