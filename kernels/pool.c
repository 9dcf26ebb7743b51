/* See pool.h. POSIX threads and C11 atomics; without pthreads everything runs serially.
 *
 * Protocol. The caller publishes a job (pool.current) and bumps pool.generation; helpers spin
 * on the generation for SPIN_NS, then sleep on a condition variable. Each item is claimed
 * with fetch_add on a range counter. A helper raises its `users` flag only while it looks
 * at the job and runs one item; once every item is claimed the caller clears pool.current
 * and waits for every flag to drop (seq_cst on both sides: a helper is either seen or sees
 * no job). So all items are finished, and the job, on the caller's stack, is never touched
 * after bp_pool_run returns.
 */
#define _GNU_SOURCE
#include "pool.h"

#if defined(BP_HAVE_PTHREADS)
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define SPIN_NS 300000 /* a helper spins this long for the next job before sleeping */

/* Per-thread counters on their own cache lines: a thread working through its own range
 * touches no line another thread writes. */
typedef struct {
    _Alignas(64) atomic_llong next; /* the range's next unclaimed item */
    long long end;
} range;

typedef struct {
    bp_item_fn fn;
    void *ctx;
    int nthreads;
    range ranges[MAX_THREADS];
} job;

typedef struct {
    _Alignas(64) atomic_llong users; /* 1 while this helper looks at the job */
} helper_slot;

static struct {
    pthread_mutex_t busy; /* held by the caller running a job */
    pthread_mutex_t lock; /* with `wake`, for sleeping helpers */
    pthread_cond_t wake;
    _Alignas(64) atomic_uint generation;
    _Atomic(job *) current;
    helper_slot slots[MAX_THREADS];
    _Alignas(64) atomic_int sleepers;
    int helpers;      /* started */
    int threads;      /* wanted, caller included */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spin, then yield so that a thread we wait for can run on this core if its own is taken. */
static void pause_or_yield(int spins)
{
    relax();
    if (spins > 4000)
        sched_yield();
}

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Claim an item: first from the thread's own range, then from the others in turn. */
static long long claim(job *j, int self)
{
    for (int k = 0; k < j->nthreads; k++) {
        range *r = &j->ranges[(self + k) % j->nthreads];
        if (atomic_load_explicit(&r->next, memory_order_relaxed) >= r->end)
            continue;
        const long long item = atomic_fetch_add(&r->next, 1);
        if (item < r->end)
            return item;
    }
    return -1;
}


static void wait_for_generation(unsigned seen)
{
    const long long deadline = now_ns() + SPIN_NS;
    for (int spins = 0; atomic_load(&pool.generation) == seen; spins++) {
        relax();
        if ((spins & 255) == 255 && now_ns() > deadline) {
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.generation) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
        }
    }
}

static void *helper(void *arg)
{
    const int self = (int)(intptr_t)arg;
    unsigned seen = 0;
    for (;;) {
        wait_for_generation(seen);
        seen = atomic_load(&pool.generation);
        atomic_llong *users = &pool.slots[self].users;
        for (;;) {
            atomic_store(users, 1);
            job *j = atomic_load(&pool.current);
            const long long item = j && self < j->nthreads ? claim(j, self) : -1;
            if (item >= 0)
                j->fn(j->ctx, item);
            atomic_store(users, 0);
            if (item < 0)
                break;
        }
    }
    return NULL;
}

static int available_cpus(void)
{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void forget_helpers_after_fork(void)
{
    /* the child has no helper threads; start again from nothing */
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.current, NULL);
    for (int t = 0; t < MAX_THREADS; t++)
        atomic_store(&pool.slots[t].users, 0);
    atomic_store(&pool.sleepers, 0);
    pool.helpers = 0;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    pool.threads = available_cpus() < MAX_THREADS ? available_cpus() : MAX_THREADS;
    pthread_atfork(NULL, NULL, forget_helpers_after_fork);
}

static void start_helpers(int wanted) /* under pool.busy */
{
    while (pool.helpers < wanted - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int ok = pthread_create(&t, &attr, helper, (void *)(intptr_t)(pool.helpers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break;
        pool.helpers++;
    }
}

void bp_pool_set_threads(int n)
{
    pthread_once(&once, init_once);
    pool.threads = n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : n);
}

int bp_pool_threads(void)
{
    pthread_once(&once, init_once);
    return pool.threads;
}

void bp_pool_run(int64_t n, bp_item_fn fn, void *ctx)
{
    pthread_once(&once, init_once);
    if (n <= 1 || pool.threads <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        for (int64_t i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    start_helpers(pool.threads);
    job j = {fn, ctx, pool.helpers + 1 < n ? pool.helpers + 1 : (int)n};
    for (int t = 0; t < j.nthreads; t++) {
        atomic_init(&j.ranges[t].next, n * t / j.nthreads);
        j.ranges[t].end = n * (t + 1) / j.nthreads;
    }
    atomic_store(&pool.current, &j);
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    for (long long item; (item = claim(&j, 0)) >= 0;)
        fn(ctx, item);
    /* every item is claimed; those still running belong to helpers whose flag is up */
    atomic_store(&pool.current, NULL);
    for (int t = 1; t < j.nthreads; t++)
        for (int spins = 0; atomic_load(&pool.slots[t].users); spins++)
            pause_or_yield(spins);
    pthread_mutex_unlock(&pool.busy);
}

#else /* no pthreads: serial */

void bp_pool_run(int64_t n, bp_item_fn fn, void *ctx)
{
    for (int64_t i = 0; i < n; i++)
        fn(ctx, i);
}

void bp_pool_set_threads(int n) { (void)n; }

int bp_pool_threads(void) { return 1; }

#endif
