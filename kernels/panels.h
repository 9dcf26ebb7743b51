/* What driver.c needs to know of each layout (panels.c): how it is walked, its geometry,
 * its activation panel, the divisibility its walk relies on. */
#ifndef BITNET_PACK_PANELS_H
#define BITNET_PACK_PANELS_H

#include "isa.h"

#include <stdint.h>

enum { BP_PLANES, BP_HF_PLANES, BP_TQ1_ROWS, BP_TL_TILES, BP_IQ_ROWS }; /* how a layout is walked */

typedef struct {
    int64_t rows;       /* stored rows (hf: ceil(M/4)); TL: row tiles */
    bp_walk walk;
    int64_t panel;      /* bytes of one token's panel (TL: its lookup table) */
    bp_tiling tiling;   /* TL only */
} bp_geometry;

int bp_family(int layout);
bp_geometry bp_geometry_of(const bp_isa *isa, int layout, int64_t m, int64_t k, const int64_t *tiling);
void bp_fill_panel(const bp_isa *isa, int layout, const bp_geometry *g, const int8_t *q, int64_t k, int8_t *panel);
int bp_shape_ok(int layout, int64_t m, int64_t k, const int64_t *tiling);

#endif
