/*
 * fib_pool.c -- the blocking-call pool (see fib_pool.h for the design).
 *
 * One mutex guards the queue and the counters; it is held only to link or
 * unlink a job, never while a job runs.  A submit wakes an idle thread if
 * there is one for this job, else starts a thread if the cap allows, else
 * the job waits in the queue: the threads that exist will get to it.
 * Threads are detached and wait on a condition variable with a timeout
 * measured on CLOCK_MONOTONIC, so an idle one can tell that it has been
 * idle long enough to exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fib_pool.h"

static pthread_mutex_t fib__pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fib__pool_work;
static pthread_once_t fib__pool_once = PTHREAD_ONCE_INIT;
static fib__job *fib__pool_head, *fib__pool_tail;
static unsigned fib__pool_queued, fib__pool_threads, fib__pool_idle;
static unsigned fib__pool_cap;
static int64_t fib__pool_idle_ns = 10LL * 1000000000LL;

static void fib__pool_init_once(void)
{
    pthread_condattr_t attr;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fib__pool_work, &attr);
    pthread_condattr_destroy(&attr);
    if (cpus < 1)
        cpus = 1;
    fib__pool_cap = cpus * 4 < 32 ? (unsigned)cpus * 4 : 32;
}

static void fib__sink_push(fib__sink *s, fib__job *job)
{
    uint64_t one = 1;
    pthread_mutex_lock(&s->lock);
    job->next = NULL;
    if (s->tail != NULL)
        s->tail->next = job;
    else
        s->head = job;
    s->tail = job;
    pthread_mutex_unlock(&s->lock);
    /* The counter cannot overflow in practice; EAGAIN would only mean it
     * is already non-zero, which is all the reader needs. */
    if (write(s->efd, &one, sizeof(one)) < 0) {
        /* nothing to do: see above */
    }
}

static void *fib__pool_thread(void *unused)
{
    fib__job *job;
    fib__sink *sink;
    struct timespec deadline;
    int rc;
    (void)unused;

    pthread_mutex_lock(&fib__pool_lock);
    for (;;) {
        while (fib__pool_head == NULL) {
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_sec += fib__pool_idle_ns / 1000000000LL;
            deadline.tv_nsec += fib__pool_idle_ns % 1000000000LL;
            if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
            }
            fib__pool_idle++;
            rc = pthread_cond_timedwait(&fib__pool_work, &fib__pool_lock,
                                        &deadline);
            fib__pool_idle--;
            if (rc == ETIMEDOUT && fib__pool_head == NULL) {
                fib__pool_threads--;
                pthread_mutex_unlock(&fib__pool_lock);
                return NULL;
            }
        }
        job = fib__pool_head;
        fib__pool_head = job->next;
        if (fib__pool_head == NULL)
            fib__pool_tail = NULL;
        fib__pool_queued--;
        pthread_mutex_unlock(&fib__pool_lock);

        job->result = job->fn(job->arg);
        /* After the push the scheduler may free the job at any moment:
         * keep only the sink. */
        sink = job->sink;
        fib__sink_push(sink, job);
        fib__sink_release(sink);

        pthread_mutex_lock(&fib__pool_lock);
    }
}

int fib__on_thread_stack(const void *p)
{
    static __thread uintptr_t lo, hi;
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (hi == 0) {
        if (pthread_getattr_np(pthread_self(), &attr) != 0)
            return 0;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            lo = (uintptr_t)addr;
            hi = lo + size;
        }
        pthread_attr_destroy(&attr);
    }
    return (uintptr_t)p >= lo && (uintptr_t)p < hi;
}

int fib__pool_submit(fib__job *job)
{
    pthread_t tid;
    pthread_attr_t attr;
    int rc = 0;

    pthread_once(&fib__pool_once, fib__pool_init_once);
    __atomic_add_fetch(&job->sink->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&fib__pool_lock);
    job->next = NULL;
    if (fib__pool_tail != NULL)
        fib__pool_tail->next = job;
    else
        fib__pool_head = job;
    fib__pool_tail = job;
    fib__pool_queued++;
    if (fib__pool_queued > fib__pool_idle &&
        fib__pool_threads < fib__pool_cap) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, fib__pool_thread, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0) {
            fib__pool_threads++;
        } else if (fib__pool_threads == 0) {
            /* Nobody could ever run it: take it back. */
            fib__pool_head = fib__pool_tail = NULL;
            fib__pool_queued = 0;
            pthread_mutex_unlock(&fib__pool_lock);
            fib__sink_release(job->sink);
            return -rc;
        }
    }
    pthread_cond_signal(&fib__pool_work);
    pthread_mutex_unlock(&fib__pool_lock);
    return 0;
}

int fib__pool_cancel(fib__job *job)
{
    fib__job *p, *prev = NULL;
    fib__sink *sink;

    pthread_once(&fib__pool_once, fib__pool_init_once);
    pthread_mutex_lock(&fib__pool_lock);
    /* A linear scan: the queue is only long when the pool is saturated,
     * and a cancel is rare. */
    for (p = fib__pool_head; p != NULL; prev = p, p = p->next)
        if (p == job)
            break;
    if (p == NULL) {
        pthread_mutex_unlock(&fib__pool_lock);
        return -EBUSY;
    }
    if (prev != NULL)
        prev->next = job->next;
    else
        fib__pool_head = job->next;
    if (fib__pool_tail == job)
        fib__pool_tail = prev;
    fib__pool_queued--;
    pthread_mutex_unlock(&fib__pool_lock);
    job->result = -ECANCELED;
    sink = job->sink;
    fib__sink_push(sink, job);
    fib__sink_release(sink);
    return 0;
}

void fib__pool_set_limit(unsigned n)
{
    pthread_once(&fib__pool_once, fib__pool_init_once);
    pthread_mutex_lock(&fib__pool_lock);
    fib__pool_cap = n < 1 ? 1 : n;
    pthread_mutex_unlock(&fib__pool_lock);
}

unsigned fib__pool_limit(void)
{
    unsigned n;
    pthread_once(&fib__pool_once, fib__pool_init_once);
    pthread_mutex_lock(&fib__pool_lock);
    n = fib__pool_cap;
    pthread_mutex_unlock(&fib__pool_lock);
    return n;
}

void fib__pool_set_idle_ns(int64_t ns)
{
    pthread_once(&fib__pool_once, fib__pool_init_once);
    pthread_mutex_lock(&fib__pool_lock);
    fib__pool_idle_ns = ns > 0 ? ns : 1;
    /* Waiting threads re-arm their deadline with the new value. */
    pthread_cond_broadcast(&fib__pool_work);
    pthread_mutex_unlock(&fib__pool_lock);
}

void fib__pool_stats(unsigned *threads, unsigned *idle, unsigned *queued)
{
    pthread_once(&fib__pool_once, fib__pool_init_once);
    pthread_mutex_lock(&fib__pool_lock);
    *threads = fib__pool_threads;
    *idle = fib__pool_idle;
    *queued = fib__pool_queued;
    pthread_mutex_unlock(&fib__pool_lock);
}

fib__sink *fib__sink_new(void)
{
    fib__sink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        int err = errno;
        free(s);
        errno = err;
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 1;
    return s;
}

void fib__sink_release(fib__sink *s)
{
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    close(s->efd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

fib__job *fib__sink_drain(fib__sink *s)
{
    fib__job *list;
    uint64_t count;
    if (read(s->efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: the counter was already clear; the list decides. */
    }
    pthread_mutex_lock(&s->lock);
    list = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->lock);
    return list;
}
