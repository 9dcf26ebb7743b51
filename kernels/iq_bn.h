/* ik_llama.cpp's IQ1_BN, IQ2_BN, IQ2_BN_R4 (bitnet_pack/formats/layouts/iq_bn.py has the byte pictures):
 * rows of [row scale d][64-weight blocks]; IQ2_BN_R4 interleaves rows in fours. The walks are
 * portable C, shared by every backend. One token per call; the panel is q (bp_iq_bn_panel).
 *
 * A row whose d is 0 reads as all-zero codes, whatever its bytes (ik writes an all-zero row as
 * code 2 everywhere with d = 0): its sum is sum(q), so that the driver's "minus sum(q)" gives 0.
 * The other rows' d is not read here: the Python side checks that they share one d (beta).
 */
#ifndef BITNET_PACK_IQ_BN_H
#define BITNET_PACK_IQ_BN_H

#include "bitnet_kernels.h"
#include "isa.h"

/* The row function of `layout` (BP_LAYOUT_IQ1BN, _IQ2BN, _IQ2BN_R4), or NULL. For R4, row r of
 * the block passed starts its group of four at w + (r / 4) * 4 * row_bytes (the driver's row
 * blocks start at multiples of 4). walk->row_bytes: bytes per row; walk->nchunks: K / 64. */
bp_rows_fn bp_iq_bn_rows(int layout);

/* The token's panel for `layout` (bp_iq_bn_panel_bytes of them): q as is; for R4, 256 bytes per
 * 64 columns (see iq2_r4_rows). */
void bp_iq_bn_panel(int layout, const int8_t *q, int64_t k, int8_t *panel);
static inline int64_t bp_iq_bn_panel_bytes(int layout, int64_t k) { return layout == BP_LAYOUT_IQ2BN_R4 ? 4 * k : k; }

#endif
