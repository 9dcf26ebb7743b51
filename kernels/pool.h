/* A small thread pool for the products (pool.c).
 *
 * bp_pool_run(n, fn, ctx) calls fn(ctx, i) once for every i in [0, n), on the calling
 * thread and on up to threads-1 helpers, and returns when all n calls are done. Items are
 * first handed out in contiguous per-thread ranges (each thread streams its own rows),
 * then stolen one by one; the caller works too and never waits for a helper that has not
 * started or sits between items, so a busy core (another process, BLAS threads spinning)
 * costs at most one item instead of a whole share. One job runs at a time; a second
 * concurrent caller runs its items alone on its own thread.
 */
#ifndef BITNET_PACK_POOL_H
#define BITNET_PACK_POOL_H

#include <stdint.h>

typedef void (*bp_item_fn)(void *ctx, int64_t item);

void bp_pool_run(int64_t n, bp_item_fn fn, void *ctx);
void bp_pool_set_threads(int n); /* n >= 1; the default is the CPUs this process may use */
int bp_pool_threads(void);

#endif
