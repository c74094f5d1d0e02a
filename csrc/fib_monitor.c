/*
 * fib_monitor.c -- the blocking-call detector's thread (see fib_monitor.h
 * for what a scheduler publishes).
 *
 * One thread per process, started by fib__monitor_start().  It wakes every
 * quarter of the threshold (at most every 250 ms) and scans the registered
 * slots under the registry's mutex, reading the owners' atomics without
 * the GIL.  Each slot goes through one small state machine per incident:
 *
 *     idle --(busy for >= threshold)--> DETECT --(stretch ends)--> ENDED
 *                                          \--(still busy after one more
 *                                              threshold, 1 s at least)--> ONGOING
 *
 * so each incident yields one DETECT (the callback captures the stack
 * then, while the thread is still stuck) and exactly one report.  Events
 * go to the callback one at a time with the mutex released: the callback
 * takes the GIL, and the owners take the mutex while holding the GIL.
 *
 * A scheduler freed while its incident is unreported leaves an *orphan*:
 * the report, queued here and delivered on the next round.
 *
 * Stopping first *drains*: the thread makes one last pass that delivers
 * every report still owed (incidents that ended, orphans, and as ONGOING
 * those still going on) and exits, so a block that ends just before the
 * program does (or before monitor(None)) is still reported.  Then it bumps
 * a generation counter: a thread whose generation is stale exits at its
 * next look, so a thread left behind by a stop that did not wait for it
 * (stuck in a callback) can never run beside a new one.  Starts and stops
 * are serialized by a second mutex (fib__mon_ctl), held across the
 * bounded wait for the drain.
 *
 * After fork() the child has no thread: the registry's mutexes are reset,
 * slots of threads that did not survive are marked idle, and the Python
 * side starts a new thread if the monitor was on (os.register_at_fork).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "fib_monitor.h"

#define NS 1000000000LL

_Atomic int64_t fib__mon_threshold_ns = INT64_MAX;

static pthread_mutex_t fib__mon_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fib__mon_cond;
static pthread_once_t fib__mon_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fib__mon_ctl = PTHREAD_MUTEX_INITIALIZER;
static fib__mon_slot *fib__mon_head;
static uint64_t fib__mon_serials;
static fib__mon_fn fib__mon_callback;
static int64_t fib__mon_period_ns;
static pthread_t fib__mon_thread;
static int fib__mon_running;
static int fib__mon_draining;       /* the last pass is asked for */
static _Atomic uint64_t fib__mon_gen;
static __thread uint64_t fib__mon_my_gen;

typedef struct fib__mon_orphan {
    fib__mon_event ev;
    struct fib__mon_orphan *next;
} fib__mon_orphan;
static fib__mon_orphan *fib__mon_orphans;

static void fib__mon_prepare(void) { pthread_mutex_lock(&fib__mon_lock); }
static void fib__mon_parent(void) { pthread_mutex_unlock(&fib__mon_lock); }

static void fib__mon_child(void)
{
    unsigned long me = (unsigned long)pthread_self();
    fib__mon_slot *s;
    fib__mon_orphan *o;
    pthread_condattr_t attr;

    /* Only the forking thread survives; the parent's reports stay there. */
    for (s = fib__mon_head; s != NULL; s = s->next) {
        if (s->thread_id != me)
            atomic_store_explicit(&s->since, 0, memory_order_relaxed);
        s->incident = 0;
        s->reported = 0;
    }
    while ((o = fib__mon_orphans) != NULL) {
        fib__mon_orphans = o->next;
        free(o);
    }
    fib__mon_running = 0;
    fib__mon_draining = 0;
    atomic_fetch_add(&fib__mon_gen, 1);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fib__mon_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&fib__mon_lock, NULL);
    pthread_mutex_init(&fib__mon_ctl, NULL);
}

static void fib__mon_init_once(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&fib__mon_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_atfork(fib__mon_prepare, fib__mon_parent, fib__mon_child);
}

void fib__mon_register(fib__mon_slot *s, unsigned long thread_id, void *owner)
{
    pthread_once(&fib__mon_once, fib__mon_init_once);
    atomic_store_explicit(&s->since, 0, memory_order_relaxed);
    atomic_store_explicit(&s->long_start, 0, memory_order_relaxed);
    atomic_store_explicit(&s->long_ns, 0, memory_order_relaxed);
    s->thread_id = thread_id;
    s->owner = owner;
    s->incident = 0;
    s->seen_ns = 0;
    s->reported = 0;
    pthread_mutex_lock(&fib__mon_lock);
    s->serial = ++fib__mon_serials;
    s->prev = NULL;
    s->next = fib__mon_head;
    if (fib__mon_head != NULL)
        fib__mon_head->prev = s;
    fib__mon_head = s;
    pthread_mutex_unlock(&fib__mon_lock);
}

/* The length of the stretch that began at start and has ended: the
 * owner's own measure when it made one, else what was last seen. */
static int64_t fib__mon_length(fib__mon_slot *s, int64_t start, int *exact)
{
    if (atomic_load_explicit(&s->long_start, memory_order_acquire) == start) {
        *exact = 1;
        return atomic_load_explicit(&s->long_ns, memory_order_relaxed);
    }
    *exact = 0;
    return s->seen_ns;
}

static void fib__mon_fill(fib__mon_event *ev, int kind, fib__mon_slot *s,
                          int64_t start, int64_t ns, int exact)
{
    ev->kind = kind;
    ev->serial = s->serial;
    ev->slot = s;
    ev->thread_id = s->thread_id;
    ev->start = start;
    ev->ns = ns;
    ev->exact = exact;
}

void fib__mon_unregister(fib__mon_slot *s)
{
    fib__mon_orphan *o;
    if (s->serial == 0)
        return;
    pthread_mutex_lock(&fib__mon_lock);
    if (s->incident != 0 && !s->reported) {
        /* Freed before the monitor saw its incident end: the report goes
         * out anyway (its stretch ended at the latest with run()). */
        o = (fib__mon_orphan *)malloc(sizeof(*o));
        if (o != NULL) {
            int exact;
            int64_t ns = fib__mon_length(s, s->incident, &exact);
            fib__mon_fill(&o->ev, FIB__MON_ENDED, s, s->incident, ns, exact);
            o->ev.slot = NULL;
            o->next = fib__mon_orphans;
            fib__mon_orphans = o;
            pthread_cond_signal(&fib__mon_cond);
        }
    }
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        fib__mon_head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->serial = 0;
    s->incident = 0;
    pthread_mutex_unlock(&fib__mon_lock);
}

int fib__mon_current(fib__mon_slot *s, uint64_t serial, int64_t start)
{
    fib__mon_slot *p;
    int ok = 0;
    pthread_mutex_lock(&fib__mon_lock);
    /* By address first: a slot no longer in the list may be freed memory. */
    for (p = fib__mon_head; p != NULL; p = p->next) {
        if (p == s) {
            ok = p->serial == serial &&
                 atomic_load_explicit(&p->since, memory_order_acquire) == start;
            break;
        }
    }
    pthread_mutex_unlock(&fib__mon_lock);
    return ok;
}

/* The next event, if any, with the mutex held; the slot's state moves on
 * before the event is delivered, so a rescan never repeats it.  `last`:
 * the drain's pass, which starts no incident and reports the ones going
 * on at once. */
static int fib__mon_next(int64_t now, int64_t thr, int last,
                         fib__mon_event *ev)
{
    fib__mon_slot *s;
    fib__mon_orphan *o = fib__mon_orphans;
    int64_t since, start, ns, late;
    int exact;

    if (o != NULL) {
        fib__mon_orphans = o->next;
        *ev = o->ev;
        free(o);
        return 1;
    }
    /* Reported as still going on after this long. */
    if (last)
        late = 0;
    else if (thr > INT64_MAX / 2)       /* a stop is under way */
        late = INT64_MAX;
    else
        late = thr + (thr > NS ? thr : NS);
    for (s = fib__mon_head; s != NULL; s = s->next) {
        since = atomic_load_explicit(&s->since, memory_order_acquire);
        if (s->incident != 0 && since != s->incident) {
            start = s->incident;
            s->incident = 0;
            if (!s->reported) {
                ns = fib__mon_length(s, start, &exact);
                fib__mon_fill(ev, FIB__MON_ENDED, s, start, ns, exact);
                return 1;
            }
            s->reported = 0;
        }
        if (since == 0)
            continue;
        if (s->incident == 0) {
            if (!last && now - since >= thr) {
                s->incident = since;
                s->seen_ns = now - since;
                s->reported = 0;
                fib__mon_fill(ev, FIB__MON_DETECT, s, since, now - since, 0);
                return 1;
            }
        } else if (!s->reported) {
            s->seen_ns = now - since;
            if (s->seen_ns >= late) {
                s->reported = 1;
                fib__mon_fill(ev, FIB__MON_ONGOING, s, since, s->seen_ns, 0);
                return 1;
            }
        }
    }
    return 0;
}

static void *fib__mon_main(void *arg)
{
    uint64_t gen = (uint64_t)(uintptr_t)arg;
    struct timespec deadline;
    fib__mon_event ev;
    fib__mon_fn fn;
    int64_t t;
    int last = 0;

    fib__mon_my_gen = gen;
    pthread_mutex_lock(&fib__mon_lock);
    while (!last && atomic_load(&fib__mon_gen) == gen) {
        if (!fib__mon_draining) {
            t = fib__monotonic_ns() + fib__mon_period_ns;
            deadline.tv_sec = (time_t)(t / NS);
            deadline.tv_nsec = (long)(t % NS);
            pthread_cond_timedwait(&fib__mon_cond, &fib__mon_lock, &deadline);
        }
        last = fib__mon_draining;
        while (atomic_load(&fib__mon_gen) == gen &&
               fib__mon_next(fib__monotonic_ns(),
                             atomic_load(&fib__mon_threshold_ns), last,
                             &ev)) {
            fn = fib__mon_callback;
            pthread_mutex_unlock(&fib__mon_lock);
            fn(&ev);
            pthread_mutex_lock(&fib__mon_lock);
        }
    }
    pthread_mutex_unlock(&fib__mon_lock);
    return NULL;
}

int fib__monitor_start(int64_t threshold_ns, fib__mon_fn fn)
{
    sigset_t all, old;
    uint64_t gen;
    int rc = 0;

    if (threshold_ns <= 0 || fn == NULL)
        return -EINVAL;
    pthread_once(&fib__mon_once, fib__mon_init_once);
    pthread_mutex_lock(&fib__mon_ctl);
    pthread_mutex_lock(&fib__mon_lock);
    fib__mon_callback = fn;
    fib__mon_period_ns = threshold_ns / 4;
    if (fib__mon_period_ns > NS / 4)
        fib__mon_period_ns = NS / 4;
    if (fib__mon_period_ns < 100000)
        fib__mon_period_ns = 100000;
    atomic_store(&fib__mon_threshold_ns, threshold_ns);
    if (!fib__mon_running) {
        gen = atomic_fetch_add(&fib__mon_gen, 1) + 1;
        /* Signals go to the program's own threads, never to this one. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        rc = pthread_create(&fib__mon_thread, NULL, fib__mon_main,
                            (void *)(uintptr_t)gen);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0) {
            /* Named for `top -H`, /proc/PID/task/TID/comm and debuggers;
             * here, so that the name is there when start returns. */
            pthread_setname_np(fib__mon_thread, "fibers-monitor");
            fib__mon_running = 1;
        }
        else
            atomic_store(&fib__mon_threshold_ns, INT64_MAX);
    } else {
        /* A new threshold takes effect now, not after the old period. */
        pthread_cond_signal(&fib__mon_cond);
    }
    pthread_mutex_unlock(&fib__mon_lock);
    pthread_mutex_unlock(&fib__mon_ctl);
    return -rc;
}

int fib__monitor_stop(int64_t wait_ns)
{
    struct timespec deadline;
    pthread_t th;
    int64_t t;
    int rc;

    pthread_once(&fib__mon_once, fib__mon_init_once);
    pthread_mutex_lock(&fib__mon_ctl);
    pthread_mutex_lock(&fib__mon_lock);
    /* No stretch from now on is recorded as long; those already are. */
    atomic_store(&fib__mon_threshold_ns, INT64_MAX);
    if (!fib__mon_running) {
        pthread_mutex_unlock(&fib__mon_lock);
        pthread_mutex_unlock(&fib__mon_ctl);
        return 0;
    }
    fib__mon_draining = 1;
    th = fib__mon_thread;
    pthread_cond_signal(&fib__mon_cond);
    pthread_mutex_unlock(&fib__mon_lock);
    /* The drain's last pass, then the thread's exit, within wait_ns
     * (pthread_timedjoin_np measures on CLOCK_REALTIME). */
    clock_gettime(CLOCK_REALTIME, &deadline);
    t = (int64_t)deadline.tv_nsec + wait_ns;
    deadline.tv_sec += (time_t)(t / NS);
    deadline.tv_nsec = (long)(t % NS);
    rc = pthread_timedjoin_np(th, NULL, &deadline);
    pthread_mutex_lock(&fib__mon_lock);
    atomic_fetch_add(&fib__mon_gen, 1);
    fib__mon_running = 0;
    fib__mon_draining = 0;
    pthread_mutex_unlock(&fib__mon_lock);
    pthread_mutex_unlock(&fib__mon_ctl);
    if (rc == 0)
        return 0;
    pthread_detach(th);
    return 1;
}

int fib__monitor_stopping(void)
{
    return fib__mon_my_gen != atomic_load(&fib__mon_gen);
}

int fib__monitor_running(void)
{
    int r;
    pthread_mutex_lock(&fib__mon_lock);
    r = fib__mon_running;
    pthread_mutex_unlock(&fib__mon_lock);
    return r;
}
