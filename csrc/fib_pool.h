/*
 * fib_pool.h -- the blocking-call pool: OS threads that run calls which
 * would block the scheduler's thread, and hand the completions back.
 *
 * The idea is tlua's: release the VM lock around a long C call, start OS
 * threads only as they are needed, and keep the cooperative model for
 * everything else.  Here:
 *
 *   - One pool per process, elastic: a job starts a thread when every
 *     thread is busy and the cap (fib__pool_set_limit) allows; a thread
 *     idle for longer than the idle time (10 s by default) exits; past the
 *     cap, jobs queue.
 *   - A job is a C function and its argument.  It runs without the GIL;
 *     a job that runs Python takes the GIL itself.
 *   - A finished job goes to its sink, which belongs to one scheduler: a
 *     locked list plus an eventfd.  The scheduler's pump waits on the
 *     eventfd like on any other fd, so completions arrive through the pump
 *     and nothing polls.
 *
 * Ownership: a job belongs to the pool from submit until the sink hands it
 * back (fib__sink_drain); the caller keeps its memory alive until then.
 * Jobs still in a sink when its last reference goes are not touched: their
 * owners are Python objects that only their scheduler's thread may free.
 */
#ifndef FIB_POOL_H
#define FIB_POOL_H

#include <pthread.h>
#include <stdint.h>

typedef struct fib__sink fib__sink;
typedef struct fib__job fib__job;
typedef int (*fib__job_fn)(void *arg);

struct fib__job {
    /* public, set by the caller before fib__pool_submit() */
    fib__job_fn fn;
    void *arg;
    void *owner;            /* the caller's cookie */
    fib__sink *sink;
    /* public, read-only once drained: fn's return value */
    int result;
    /* private */
    fib__job *next;
};

struct fib__sink {
    /* private */
    pthread_mutex_t lock;
    fib__job *head, *tail;
    int refs;               /* its scheduler + each job not yet delivered */
    /* public, read-only: readable when jobs have finished */
    int efd;
};

/* Is p inside the calling thread's stack?  Fibers are greenlets, which
 * switch by copying stack slices out and back: while a fiber waits, its
 * part of the stack belongs to whichever greenlet runs, so a pool thread
 * must never be handed a pointer into it. */
int fib__on_thread_stack(const void *p);

/* Queue a job; returns 0 or -errno (no thread could be started and none
 * exists to take it). */
int fib__pool_submit(fib__job *job);

/* Takes back a job no thread has started: it goes to its sink at once with
 * result -ECANCELED, as if it had run (one completion either way).
 * Returns 0 if so, -EBUSY if a thread has it already or it is done. */
int fib__pool_cancel(fib__job *job);

/* The cap on threads (>= 1) and the idle time before a thread exits. */
void fib__pool_set_limit(unsigned n);
unsigned fib__pool_limit(void);
void fib__pool_set_idle_ns(int64_t ns);

/* Counters for tests and monitoring. */
void fib__pool_stats(unsigned *threads, unsigned *idle, unsigned *queued);

/* A sink is reference-counted: its scheduler holds one reference and each
 * job in the pool holds one, so a scheduler that goes away while its jobs
 * still run leaves the sink to the last of them.  NULL on failure (errno
 * set). */
fib__sink *fib__sink_new(void);
void fib__sink_release(fib__sink *s);
/* Takes every finished job (a list linked by next), and clears the
 * eventfd.  NULL when none. */
fib__job *fib__sink_drain(fib__sink *s);

#endif /* FIB_POOL_H */
