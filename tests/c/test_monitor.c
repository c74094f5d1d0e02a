/*
 * test_monitor.c -- the blocking-call detector's thread (csrc/fib_monitor.c)
 * tested alone, built with AddressSanitizer and UBSan by `make ctest`.
 *
 * A slot plays a scheduler: fib__mon_busy()/fib__mon_idle() mark its busy
 * stretches as the tick code does, with real sleeps in between.  Checked:
 * a stretch past the threshold gives one DETECT while it goes on (and the
 * slot is then "current") and one ENDED with the owner's exact length;
 * short stretches give nothing however many; a stretch that never ends is
 * reported once as ONGOING after one more second; a slot freed with its
 * incident unreported still gets its ENDED (an orphan); a stopped monitor
 * reports nothing, and a restarted one works again.
 *
 * Exit status 0 on success, 1 on the first failure.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fib_monitor.h"

#include "check.h"

#define MS 1000000LL

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static fib__mon_event events[16];
static int current_at_detect[16];
static int nevents;

static void on_event(const fib__mon_event *ev)
{
    int cur = 0;
    if (ev->kind == FIB__MON_DETECT)
        cur = fib__mon_current(ev->slot, ev->serial, ev->start);
    pthread_mutex_lock(&lock);
    if (nevents < 16) {
        events[nevents] = *ev;
        current_at_detect[nevents] = cur;
        nevents++;
    }
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * MS};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Waits (at most ms) until `want` events came; returns how many did. */
static int wait_events_ms(int want, int64_t ms)
{
    struct timespec deadline;
    int64_t t;
    int n;
    clock_gettime(CLOCK_REALTIME, &deadline);
    t = deadline.tv_nsec + ms * MS;
    deadline.tv_sec += (time_t)(t / (1000 * MS));
    deadline.tv_nsec = (long)(t % (1000 * MS));
    pthread_mutex_lock(&lock);
    while (nevents < want &&
           pthread_cond_timedwait(&cond, &lock, &deadline) == 0)
        ;
    n = nevents;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Events expected: wait for them, 3 s at most. */
static int wait_events(int want) { return wait_events_ms(want, 3000); }

/* No more events expected: long enough for the monitor to have looked. */
static int count_events(void) { return wait_events_ms(1000, 100); }

/* The events delivered so far, without waiting for more. */
static int events_now(void)
{
    int n;
    pthread_mutex_lock(&lock);
    n = nevents;
    pthread_mutex_unlock(&lock);
    return n;
}

static void reset(void)
{
    pthread_mutex_lock(&lock);
    nevents = 0;
    memset(events, 0, sizeof(events));
    pthread_mutex_unlock(&lock);
}

int main(void)
{
    fib__mon_slot slot, other;
    int64_t start, t;
    int i;

    memset(&slot, 0, sizeof(slot));
    memset(&other, 0, sizeof(other));
    fib__mon_register(&slot, (unsigned long)pthread_self(), &slot);
    fib__mon_register(&other, 12345, &other);
    CHECK(slot.serial != 0 && other.serial != 0 && slot.serial != other.serial);
    CHECK(fib__monitor_start(0, on_event) < 0);
    CHECK(fib__monitor_start(50 * MS, on_event) == 0);
    CHECK(fib__monitor_running());

    /* One long stretch: DETECT while it lasts, then ENDED, exact. */
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    CHECK(wait_events(1) == 1);
    CHECK(events[0].kind == FIB__MON_DETECT && events[0].start == start);
    CHECK(events[0].ns >= 50 * MS && events[0].slot == &slot);
    CHECK(events[0].thread_id == (unsigned long)pthread_self());
    CHECK(current_at_detect[0] == 1);
    sleep_ms(150);
    t = fib__monotonic_ns();
    fib__mon_idle(&slot, t);
    CHECK(wait_events(2) == 2);
    CHECK(events[1].kind == FIB__MON_ENDED && events[1].start == start);
    CHECK(events[1].exact && events[1].ns == t - start);
    CHECK(events[1].serial == slot.serial);
    sleep_ms(100);
    CHECK(count_events() == 2);            /* once per incident */

    /* Short stretches, back to back for 300 ms: nothing. */
    reset();
    for (i = 0; i < 300; i++) {
        fib__mon_busy(&slot, fib__monotonic_ns());
        sleep_ms(1);
    }
    fib__mon_idle(&slot, fib__monotonic_ns());
    sleep_ms(60);
    CHECK(count_events() == 0);

    /* A new threshold applies at once: 300 ms stretches are now fine. */
    CHECK(fib__monitor_start(400 * MS, on_event) == 0);
    fib__mon_busy(&slot, fib__monotonic_ns());
    sleep_ms(300);
    fib__mon_idle(&slot, fib__monotonic_ns());
    sleep_ms(150);
    CHECK(count_events() == 0);

    /* A stretch that goes on: one ONGOING after threshold + 1 s, and
     * nothing when it finally ends. */
    CHECK(fib__monitor_start(20 * MS, on_event) == 0);
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    CHECK(wait_events(2) == 2);
    CHECK(events[0].kind == FIB__MON_DETECT);
    CHECK(events[1].kind == FIB__MON_ONGOING && events[1].start == start);
    CHECK(events[1].ns >= 1020 * MS && !events[1].exact);
    fib__mon_idle(&slot, fib__monotonic_ns());
    sleep_ms(100);
    CHECK(count_events() == 2);

    /* Freed before the monitor saw the end: the ENDED comes anyway, once. */
    reset();
    CHECK(fib__monitor_start(50 * MS, on_event) == 0);
    start = fib__monotonic_ns();
    fib__mon_busy(&other, start);
    CHECK(wait_events(1) == 1 && events[0].kind == FIB__MON_DETECT);
    CHECK(events[0].thread_id == 12345);
    t = fib__monotonic_ns();
    fib__mon_idle(&other, t);
    fib__mon_unregister(&other);
    CHECK(!fib__mon_current(&other, events[0].serial, start));
    CHECK(wait_events(2) == 2);
    CHECK(events[1].kind == FIB__MON_ENDED && events[1].slot == NULL);
    CHECK(events[1].exact && events[1].ns == t - start);
    CHECK(events[1].thread_id == 12345);
    sleep_ms(100);
    CHECK(count_events() == 2);

    /* A stop delivers what is still owed before it returns: the ENDED of
     * a block that ended just before it (the thread had no look since),
     * and an ONGOING for one still going on. */
    reset();
    CHECK(fib__monitor_start(50 * MS, on_event) == 0);
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    CHECK(wait_events(1) == 1 && events[0].kind == FIB__MON_DETECT);
    t = fib__monotonic_ns();
    fib__mon_idle(&slot, t);
    CHECK(fib__monitor_stop(1000 * MS) == 0);
    CHECK(events_now() == 2);
    CHECK(events[1].kind == FIB__MON_ENDED && events[1].ns == t - start);
    reset();
    CHECK(fib__monitor_start(50 * MS, on_event) == 0);
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    CHECK(wait_events(1) == 1 && events[0].kind == FIB__MON_DETECT);
    CHECK(fib__monitor_stop(1000 * MS) == 0);
    CHECK(events_now() == 2);
    CHECK(events[1].kind == FIB__MON_ONGOING && events[1].start == start);
    fib__mon_idle(&slot, fib__monotonic_ns());

    /* Stopped: nothing is reported and no stretch is recorded as long. */
    reset();
    CHECK(fib__monitor_stop(1000 * MS) == 0);
    CHECK(!fib__monitor_running());
    CHECK(fib__monitor_stop(1000 * MS) == 0);       /* idempotent */
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    sleep_ms(120);
    fib__mon_idle(&slot, fib__monotonic_ns());
    CHECK(count_events() == 0);
    CHECK(atomic_load(&slot.long_start) != start);

    /* Restarted: works again. */
    CHECK(fib__monitor_start(30 * MS, on_event) == 0);
    start = fib__monotonic_ns();
    fib__mon_busy(&slot, start);
    sleep_ms(100);
    fib__mon_idle(&slot, fib__monotonic_ns());
    CHECK(wait_events(2) == 2);
    CHECK(events[0].kind == FIB__MON_DETECT && events[1].kind == FIB__MON_ENDED);
    CHECK(events[1].ns >= 100 * MS && events[1].exact);

    CHECK(fib__monitor_stop(1000 * MS) == 0);
    fib__mon_unregister(&slot);
    fib__mon_unregister(&slot);                     /* idempotent */
    printf("test_monitor: ok\n");
    return 0;
}
