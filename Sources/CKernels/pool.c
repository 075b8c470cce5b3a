// Persistent thread pool: workers spin on a generation counter for a while, then sleep on a
// condition variable. ck_pool_run publishes (fn, ctx), bumps the generation, runs thread 0's
// share on the caller and spins until every worker has finished. Nothing is allocated per run.
#include "ckernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CK_RELAX() _mm_pause()
#else
#define CK_RELAX() ((void)0)
#endif

/// How long an idle worker spins before it sleeps.
#define CK_SPIN_NS 2000000LL
/// Pause-spins before a waiting thread starts yielding its core to other threads.
#define CK_SPINS_BEFORE_YIELD 20000

typedef struct {
    ck_pool *pool;
    int index;
} ck_worker_arg;

struct ck_pool {
    _Alignas(64) _Atomic uint64_t generation;
    _Alignas(64) _Atomic int pending;
    _Alignas(64) _Atomic int sleepers;
    _Atomic int stop;
    _Atomic int busy;
    ck_task fn;
    void *ctx;
    int threads;
    pthread_t *handles;
    ck_worker_arg *args;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
};

/// Set while this thread runs a pool task: a nested ck_pool_run would deadlock, so it aborts.
static _Thread_local int ck_in_task = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker_main(void *raw) {
    ck_worker_arg *arg = (ck_worker_arg *)raw;
    ck_pool *p = arg->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g == seen) {
            const int64_t deadline = now_ns() + CK_SPIN_NS;
            int spins = 0;
            while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
                CK_RELAX();
                // On a busy machine give the core away rather than burn our time slice.
                if (spins > CK_SPINS_BEFORE_YIELD) sched_yield();
                if (++spins % 256 == 0 && now_ns() > deadline) {
                    pthread_mutex_lock(&p->mutex);
                    atomic_fetch_add(&p->sleepers, 1);
                    while ((g = atomic_load(&p->generation)) == seen) pthread_cond_wait(&p->cond, &p->mutex);
                    atomic_fetch_sub(&p->sleepers, 1);
                    pthread_mutex_unlock(&p->mutex);
                    break;
                }
            }
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        ck_in_task = 1;
        p->fn(p->ctx, arg->index, p->threads);
        ck_in_task = 0;
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

ck_pool *ck_pool_create(int threads) {
    if (threads < 1) threads = 1;
    ck_pool *p = (ck_pool *)aligned_alloc(64, (sizeof(ck_pool) + 63) / 64 * 64);
    if (!p) return NULL;
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->busy, 0);
    p->fn = NULL;
    p->ctx = NULL;
    p->threads = threads;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->handles = (pthread_t *)calloc((size_t)threads, sizeof(pthread_t));
    p->args = (ck_worker_arg *)calloc((size_t)threads, sizeof(ck_worker_arg));
    for (int i = 1; i < threads; i++) {
        p->args[i].pool = p;
        p->args[i].index = i;
        pthread_create(&p->handles[i], NULL, worker_main, &p->args[i]);
    }
    return p;
}

static void wake(ck_pool *p) {
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mutex);
    }
}

void ck_pool_destroy(ck_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_mutex_lock(&p->mutex);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mutex);
    for (int i = 1; i < p->threads; i++) pthread_join(p->handles[i], NULL);
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->cond);
    free(p->handles);
    free(p->args);
    free(p);
}

void ck_pool_run(ck_pool *p, ck_task fn, void *ctx) {
    if (ck_in_task) {
        fprintf(stderr, "ThreadPool.run called from inside a ThreadPool task (nested runs are not supported)\n");
        abort();
    }
    if (p->threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    // Concurrent callers take turns.
    while (atomic_exchange_explicit(&p->busy, 1, memory_order_acquire)) sched_yield();
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1);  // seq_cst: pairs with the sleepers check in wake()
    wake(p);
    ck_in_task = 1;
    fn(ctx, 0, p->threads);
    ck_in_task = 0;
    // Spin briefly (a step's work items are short), then yield: when the machine is
    // oversubscribed the worker may be descheduled, and spinning would only delay it further.
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        CK_RELAX();
        if (spins > CK_SPINS_BEFORE_YIELD) sched_yield();
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}
