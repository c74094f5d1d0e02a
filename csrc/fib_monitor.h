/*
 * fib_monitor.h -- what a scheduler shows the blocking-call detector, and
 * the per-tick accounting behind Scheduler.stats().
 *
 * Design notes
 * - A *busy stretch* is time a scheduler's thread spends running Python
 *   for the scheduler without going back to the pump's wait.  One starts
 *   with each tick and when the pump's wait ends; it ends when the next
 *   tick starts, when the wait begins, or when run()/step() returns.  The
 *   slot's `since` holds the current stretch's start (monotonic ns), 0
 *   while the thread waits in the pump or the scheduler is not running.
 *   A stretch longer than the threshold is an incident: some fiber (or a
 *   quantum step) kept the thread from coming back to the loop.
 * - The owner thread publishes with relaxed/release atomic stores (plain
 *   moves on x86-64); the monitor thread (fib_monitor.c) reads them with
 *   acquire loads and never takes the GIL to look.  The owner's cost per
 *   tick is the clock read that the tick accounting makes anyway, two
 *   stores and one compare.
 * - When a stretch ends after lasting at least the threshold, the owner
 *   also stores its start and length (`long_start`, `long_ns`), so the
 *   monitor reports the block's exact duration however late it looks.
 * - One monitor thread per process: the slots are linked in a registry
 *   under a mutex, from Scheduler creation to deallocation.  The monitor
 *   holds that mutex only to scan, never while it waits for the GIL, and
 *   the owner takes it only to register and unregister (with the GIL), so
 *   the two locks are always taken GIL first.
 * - Tick durations: the wall time of each finished tick less its time in
 *   the pump's wait, kept in a ring of the last FIB__TICK_WINDOW (the
 *   percentiles are computed from it only when asked) and counted in
 *   fixed log-spaced buckets (a Prometheus histogram).  Always on: it is
 *   the same one clock read per tick (a tick's end is the next one's
 *   start) the detector needs, and two around each wait in the pump.
 */
#ifndef FIB_MONITOR_H
#define FIB_MONITOR_H

#include <stdatomic.h>
#include <stdint.h>

#include "fib_sys.h"

/* ---- the monitor's view of one scheduler ------------------------------ */

typedef struct fib__mon_slot {
    /* written by the owner thread, read by the monitor */
    _Atomic int64_t since;       /* the busy stretch's start; 0: not busy */
    _Atomic int64_t long_start;  /* the last stretch that ended after */
    _Atomic int64_t long_ns;     /*   lasting >= the threshold, and its length */
    /* set at registration */
    unsigned long thread_id;     /* the owner's PyThread_get_thread_ident() */
    void *owner;                 /* the Scheduler (borrowed) */
    uint64_t serial;             /* 0: not registered */
    /* the registry's links and the monitor's own state, under its mutex */
    struct fib__mon_slot *prev, *next;
    int64_t incident;            /* start of the stretch being followed */
    int64_t seen_ns;             /* how long it had lasted when last seen */
    int reported;                /* reported while still going on */
} fib__mon_slot;

/* What the monitor tells its callback (on the monitor thread, without the
 * GIL).  A DETECT comes first; each incident then ends with exactly one
 * ENDED or ONGOING. */
enum {
    FIB__MON_DETECT = 0,    /* a stretch passed the threshold: capture now */
    FIB__MON_ENDED = 1,     /* it ended after ns */
    FIB__MON_ONGOING = 2,   /* it has lasted ns and still goes on */
};

typedef struct fib__mon_event {
    int kind;
    uint64_t serial;             /* the slot's registration */
    fib__mon_slot *slot;         /* only valid while serial is registered */
    unsigned long thread_id;
    int64_t start;               /* the stretch's `since` */
    int64_t ns;                  /* how long it lasted (so far) */
    int exact;                   /* ns is the owner's own measure */
} fib__mon_event;

typedef void (*fib__mon_fn)(const fib__mon_event *ev);

/* The threshold in force (INT64_MAX while the monitor is off). */
extern _Atomic int64_t fib__mon_threshold_ns;

void fib__mon_register(fib__mon_slot *s, unsigned long thread_id,
                       void *owner);
void fib__mon_unregister(fib__mon_slot *s);
/* With the GIL held by the caller (the callback): is `serial` still the
 * slot's registration, and its stretch still the one that began at
 * `start`?  Then the slot's owner is alive. */
int fib__mon_current(fib__mon_slot *s, uint64_t serial, int64_t start);

/* Starts the thread, or changes its threshold and callback; 0 or -errno. */
int fib__monitor_start(int64_t threshold_ns, fib__mon_fn fn);
/* Stops it: its last pass delivers every report still owed (ended
 * incidents, orphans; incidents still going on as ONGOING), then it exits.
 * Waits up to wait_ns for that: 0 when it did (or was not running), 1 when
 * it was left to finish on its own (its generation is stale: it delivers
 * nothing more). */
int fib__monitor_stop(int64_t wait_ns);
/* True once a stop has given up waiting for the thread (or after fork),
 * until the next start: the callback checks it once it holds the GIL, so
 * a thread left behind delivers nothing. */
int fib__monitor_stopping(void);
int fib__monitor_running(void);

/* Owner side: a stretch ends at `now` (recording it if it was long). */
static inline void fib__mon_end(fib__mon_slot *s, int64_t now)
{
    int64_t since = atomic_load_explicit(&s->since, memory_order_relaxed);
    if (since != 0 && now - since >=
            atomic_load_explicit(&fib__mon_threshold_ns,
                                 memory_order_relaxed)) {
        atomic_store_explicit(&s->long_ns, now - since, memory_order_relaxed);
        atomic_store_explicit(&s->long_start, since, memory_order_release);
    }
}

/* A new stretch starts at now (and the current one, if any, ends). */
static inline void fib__mon_busy(fib__mon_slot *s, int64_t now)
{
    fib__mon_end(s, now);
    atomic_store_explicit(&s->since, now, memory_order_release);
}

/* The thread goes back to waiting, or the scheduler stops running. */
static inline void fib__mon_idle(fib__mon_slot *s, int64_t now)
{
    fib__mon_end(s, now);
    atomic_store_explicit(&s->since, 0, memory_order_release);
}

/* ---- tick durations ----------------------------------------------------- */

#define FIB__TICK_WINDOW 1024       /* a power of two */
#define FIB__TICK_BOUNDS 21

/* The histogram's upper bounds (ns), 1-2.5-5 from 2.5 us to 10 s; a last
 * bucket past them is +Inf. */
static const int64_t fib__tick_bounds_ns[FIB__TICK_BOUNDS] = {
    2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000LL,
    5000000000LL, 10000000000LL,
};

typedef struct fib__tick_stats {
    int64_t start;               /* this tick's start */
    int64_t next;                /* the last tick's end, 0 after a leave */
    int64_t waited;              /* this tick's time in the pump's wait */
    int64_t wait_start;
    uint64_t count;              /* ticks timed */
    uint64_t pump_waits;
    int64_t sum_ns;
    uint64_t buckets[FIB__TICK_BOUNDS + 1];  /* per bucket, not cumulative */
    int64_t window[FIB__TICK_WINDOW];
} fib__tick_stats;

/* One clock read per tick: ticks run back to back, so the end of one is
 * the start of the next (the run loop's few checks between them count as
 * the next tick's); a tick after run()/step() returned reads the clock. */
static inline void fib__tick_begin(fib__tick_stats *t, fib__mon_slot *m)
{
    int64_t now = t->next != 0 ? t->next : fib__monotonic_ns();
    t->start = now;
    t->waited = 0;
    fib__mon_busy(m, now);
}

static inline void fib__tick_end(fib__tick_stats *t)
{
    int64_t now = fib__monotonic_ns();
    int64_t ns = now - t->start - t->waited;
    int i = 0;
    t->next = now;
    if (ns < 0)
        ns = 0;
    /* Most ticks are short: the loop ends within the first few bounds. */
    while (i < FIB__TICK_BOUNDS && ns > fib__tick_bounds_ns[i])
        i++;
    t->buckets[i]++;
    t->window[t->count & (FIB__TICK_WINDOW - 1)] = ns;
    t->count++;
    t->sum_ns += ns;
}

static inline void fib__tick_wait_begin(fib__tick_stats *t, fib__mon_slot *m)
{
    int64_t now = fib__monotonic_ns();
    t->wait_start = now;
    t->pump_waits++;
    fib__mon_idle(m, now);
}

static inline void fib__tick_wait_end(fib__tick_stats *t, fib__mon_slot *m)
{
    int64_t now = fib__monotonic_ns();
    t->waited += now - t->wait_start;
    fib__mon_busy(m, now);
}

/* run()/step() returns: the thread is no longer the scheduler's. */
static inline void fib__tick_leave(fib__tick_stats *t, fib__mon_slot *m)
{
    t->next = 0;
    if (atomic_load_explicit(&m->since, memory_order_relaxed) != 0)
        fib__mon_idle(m, fib__monotonic_ns());
}

#endif
