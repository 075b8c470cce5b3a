// Persistent thread pool with work claiming.
//
// A run publishes a job (fn, ctx, n items) and bumps a generation; the caller and the workers then
// claim item indices 0..<n from one atomic word (generation << 32 | next index) until none are
// left, and the caller returns once all n items have finished. A worker that is slow to wake (or
// descheduled because the cores are oversubscribed) simply claims nothing: the caller never waits
// for a thread that has not started, only for items already in progress.
//
// Jobs are double-buffered by generation parity: a worker that read job g's fields can only claim
// an item while the word still carries generation g, and the fields of the slot it read are
// rewritten only for job g + 2, after the word moved past g.
//
// Idle workers spin on the word for CK_SPIN_NS, then sleep on a condition variable. Nothing is
// allocated per run.
#include "ckernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CK_RELAX() _mm_pause()
#else
#define CK_RELAX() ((void)0)
#endif

/// How long an idle worker spins before it sleeps: longer than the gaps inside a forward pass (so
/// a step's parallel sections find it awake), shorter than the serial work between a server's
/// steps (sampling, verification, drafting), where a spinning worker only takes a core from the
/// HTTP threads. 2 ms before; through HTTP at 1 concurrent request, 200 us served 7-15% more
/// tokens/s with speculation on and off (load.py, two interleaved rounds).
#define CK_SPIN_NS 200000LL
/// Pause iterations the caller spins on unfinished items before it starts yielding its core.
#define CK_WAIT_SPINS 4000

typedef struct {
    _Atomic(ck_task) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n;
} ck_job;

typedef struct {
    ck_pool *pool;
    int index;
} ck_worker_arg;

struct ck_pool {
    _Alignas(64) _Atomic uint64_t word;  // generation << 32 | next unclaimed item
    _Alignas(64) _Atomic int64_t done;   // finished items of the current job
    _Alignas(64) _Atomic int sleepers;
    _Atomic int stop;
    _Atomic int busy;
    ck_job jobs[2];
    int threads;
    pthread_t *handles;
    ck_worker_arg *args;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
};

/// Set while this thread runs a pool item: a nested ck_pool_run would deadlock, so it aborts.
static _Thread_local int ck_in_task = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint32_t gen_of(uint64_t w) { return (uint32_t)(w >> 32); }

/// Claims and runs items of job `gen` until none are left or the job has changed.
static void work(ck_pool *p, uint32_t gen) {
    const ck_job *job = &p->jobs[gen & 1];
    const ck_task fn = atomic_load_explicit(&job->fn, memory_order_relaxed);
    void *const ctx = atomic_load_explicit(&job->ctx, memory_order_relaxed);
    const int64_t n = atomic_load_explicit(&job->n, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
    for (;;) {
        if (gen_of(w) != gen || (int64_t)(uint32_t)w >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->word, &w, w + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        ck_in_task = 1;
        fn(ctx, (int64_t)(uint32_t)w, n);
        ck_in_task = 0;
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        w = atomic_load_explicit(&p->word, memory_order_acquire);
    }
}

static void *worker_main(void *raw) {
    ck_worker_arg *arg = (ck_worker_arg *)raw;
    ck_pool *p = arg->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = gen_of(atomic_load_explicit(&p->word, memory_order_acquire));
        if (g == seen) {
            const int64_t deadline = now_ns() + CK_SPIN_NS;
            int spins = 0;
            while ((g = gen_of(atomic_load_explicit(&p->word, memory_order_acquire))) == seen) {
                CK_RELAX();
                if (++spins % 256 == 0 && now_ns() > deadline) {
                    pthread_mutex_lock(&p->mutex);
                    atomic_fetch_add(&p->sleepers, 1);
                    while ((g = gen_of(atomic_load(&p->word))) == seen) pthread_cond_wait(&p->cond, &p->mutex);
                    atomic_fetch_sub(&p->sleepers, 1);
                    pthread_mutex_unlock(&p->mutex);
                    break;
                }
            }
        }
        seen = g;
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        work(p, g);
    }
}

ck_pool *ck_pool_create(int threads) {
    if (threads < 1) threads = 1;
    ck_pool *p = (ck_pool *)aligned_alloc(64, (sizeof(ck_pool) + 63) / 64 * 64);
    if (!p) return NULL;
    atomic_init(&p->word, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->busy, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init(&p->jobs[i].fn, NULL);
        atomic_init(&p->jobs[i].ctx, NULL);
        atomic_init(&p->jobs[i].n, 0);
    }
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

static void wake_sleepers(ck_pool *p) {
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mutex);
    }
}

void ck_pool_destroy(ck_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    const uint64_t w = atomic_load(&p->word);
    atomic_store(&p->word, (uint64_t)(gen_of(w) + 1) << 32 | 0xFFFFFFFFu);
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

int ck_pool_threads(const ck_pool *p) { return p->threads; }

void ck_pool_run(ck_pool *p, ck_task fn, void *ctx, int64_t n) {
    if (n <= 0) return;
    if (ck_in_task) {
        fprintf(stderr, "ThreadPool: run called from inside a pool task (nested runs are not supported)\n");
        abort();
    }
    if (p->threads == 1 || n == 1) {
        ck_in_task = 1;
        for (int64_t i = 0; i < n; i++) fn(ctx, i, n);
        ck_in_task = 0;
        return;
    }
    // Concurrent callers take turns.
    while (atomic_exchange_explicit(&p->busy, 1, memory_order_acquire)) sched_yield();
    const uint32_t gen = gen_of(atomic_load_explicit(&p->word, memory_order_relaxed)) + 1;
    ck_job *job = &p->jobs[gen & 1];
    atomic_store_explicit(&job->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&job->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&job->n, n, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store(&p->word, (uint64_t)gen << 32);  // seq_cst: pairs with the sleepers check
    wake_sleepers(p);
    work(p, gen);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < n) {
        if (++spins < CK_WAIT_SPINS) CK_RELAX();
        else sched_yield();
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}
