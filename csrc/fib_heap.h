/*
 * fib_heap.h -- an intrusive binary min-heap of timers.
 *
 * Design notes
 * - Intrusive: the node lives inside its owner (a Timer object, or a Fiber
 *   for plain sleep), so arming a timer allocates nothing beyond the array
 *   slot.  Each node remembers its array index, which makes cancellation an
 *   O(log n) sift instead of a tombstone that must later be skipped: the
 *   heap never holds dead entries, so its size is exactly the number of
 *   armed timers.
 * - Keys are (deadline, seq).  seq comes from a per-heap counter, so timers
 *   with equal deadlines fire in the order they were armed (FIFO), which is
 *   what users expect from delay(f, 0); delay(g, 0).
 * - Deadlines are int64 nanoseconds on the scheduler's clock.  Integer keys
 *   make periodic schedules exact: start + k * interval never drifts.
 * - The heap does not own its owners: the caller holds a reference for as
 *   long as the node is armed.
 */
#ifndef FIB_HEAP_H
#define FIB_HEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct fib__timer_node {
    int64_t deadline;   /* read-only while armed */
    uint64_t seq;       /* private: FIFO tie-breaker */
    size_t index;       /* private: slot + 1 while armed, 0 when not armed, so
                         * zeroed memory is a valid disarmed node */
    int kind;           /* public: what the owner is; the heap ignores it */
    void *owner;        /* public: back pointer to the owning object */
} fib__timer_node;

typedef struct fib__heap {
    fib__timer_node **nodes; /* private */
    size_t len;              /* read-only: armed timers */
    size_t cap;              /* private */
    uint64_t next_seq;       /* private */
} fib__heap;

static inline void fib__timer_node_init(fib__timer_node *n, int kind, void *owner)
{
    n->deadline = 0;
    n->seq = 0;
    n->index = 0;
    n->kind = kind;
    n->owner = owner;
}

static inline int fib__timer_armed(const fib__timer_node *n)
{
    return n->index != 0;
}

static inline fib__timer_node *fib__heap_peek(const fib__heap *h)
{
    return h->len ? h->nodes[0] : NULL;
}

void fib__heap_init(fib__heap *h);
void fib__heap_destroy(fib__heap *h);
/* Arms n at deadline.  n must not be armed.  Returns 0 or -ENOMEM. */
int fib__heap_push(fib__heap *h, fib__timer_node *n, int64_t deadline);
/* Disarms and returns the earliest node, or NULL when empty. */
fib__timer_node *fib__heap_pop(fib__heap *h);
/* Disarms n.  Returns 1 if it was armed, 0 if not (idempotent). */
int fib__heap_remove(fib__heap *h, fib__timer_node *n);

#endif /* FIB_HEAP_H */
