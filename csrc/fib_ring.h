/*
 * fib_ring.h -- the scheduler's ready queue: a growable ring of pointers.
 *
 * Design notes
 * - The queue holds borrowed-by-contract pointers: the caller (the Cython
 *   scheduler) takes a strong reference before pushing and gives it up after
 *   popping.  The ring itself knows nothing about Python.
 * - Capacity is a power of two so the index wrap is a mask, not a modulo.
 * - The ring only grows.  A server that once had 100k runnable fibers will
 *   likely have them again; shrinking would trade memory for realloc churn.
 * - Fairness is the caller's job: it snapshots `count` at the start of a tick
 *   and pops exactly that many, so fibers pushed during the tick (woken ones,
 *   yielders) wait for the next tick.
 */
#ifndef FIB_RING_H
#define FIB_RING_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct fib__ring {
    void **buf;     /* private */
    size_t mask;    /* private: capacity - 1 */
    size_t head;    /* private: index of the oldest entry */
    size_t count;   /* read-only: entries queued */
} fib__ring;

static inline int fib__ring_init(fib__ring *r, size_t capacity)
{
    size_t cap = 16;
    while (cap < capacity)
        cap <<= 1;
    r->buf = (void **)malloc(cap * sizeof(void *));
    if (r->buf == NULL)
        return -ENOMEM;
    r->mask = cap - 1;
    r->head = 0;
    r->count = 0;
    return 0;
}

static inline void fib__ring_destroy(fib__ring *r)
{
    free(r->buf);
    r->buf = NULL;
    r->mask = 0;
    r->head = 0;
    r->count = 0;
}

/* Doubles the capacity, unwrapping the live entries to the front. */
static int fib__ring_grow(fib__ring *r)
{
    size_t cap = r->mask + 1;
    size_t ncap = cap << 1;
    void **nbuf;
    size_t first;

    if (ncap < cap || ncap > ((size_t)-1) / sizeof(void *))
        return -ENOMEM;
    nbuf = (void **)malloc(ncap * sizeof(void *));
    if (nbuf == NULL)
        return -ENOMEM;
    first = cap - r->head;
    if (first > r->count)
        first = r->count;
    memcpy(nbuf, r->buf + r->head, first * sizeof(void *));
    memcpy(nbuf + first, r->buf, (r->count - first) * sizeof(void *));
    free(r->buf);
    r->buf = nbuf;
    r->mask = ncap - 1;
    r->head = 0;
    return 0;
}

static inline int fib__ring_push(fib__ring *r, void *item)
{
    if (r->count > r->mask) {
        int rc = fib__ring_grow(r);
        if (rc < 0)
            return rc;
    }
    r->buf[(r->head + r->count) & r->mask] = item;
    r->count++;
    return 0;
}

/* The caller checks count first; popping an empty ring returns NULL. */
static inline void *fib__ring_pop(fib__ring *r)
{
    void *item;
    if (r->count == 0)
        return NULL;
    item = r->buf[r->head];
    r->head = (r->head + 1) & r->mask;
    r->count--;
    return item;
}

static inline void *fib__ring_peek(const fib__ring *r)
{
    return r->count ? r->buf[r->head] : NULL;
}

/* The i-th entry from the oldest (0 is what pop would return), or NULL past
 * the end.  For the fiber view (Scheduler.fibers), which lists the ready
 * fibers without taking them out. */
static inline void *fib__ring_at(const fib__ring *r, size_t i)
{
    return i < r->count ? r->buf[(r->head + i) & r->mask] : NULL;
}

#endif /* FIB_RING_H */
