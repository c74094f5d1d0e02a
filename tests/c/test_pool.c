/*
 * test_pool.c -- the blocking-call pool's cancel (csrc/fib_pool.c), tested
 * alone, built with AddressSanitizer and UBSan by `make ctest`.
 *
 * With the pool capped at one thread and that thread held in a job, a
 * second job waits in the queue: fib__pool_cancel() takes it back (it
 * reaches the sink with -ECANCELED and never runs), while the running job
 * cannot be taken back (-EBUSY) and completes with its own result.  Every
 * job is delivered exactly once and the sink's references come back.
 *
 * Exit status 0 on success, 1 on the first failure.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fib_pool.h"

#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int started, released, ran_second;

static int hold(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    started = 1;
    pthread_cond_broadcast(&cond);
    while (!released)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return 7;
}

static int second(void *arg)
{
    (void)arg;
    ran_second = 1;
    return 8;
}

/* Drains the sink until `want` jobs came back (bounded by poll timeouts). */
static int collect(fib__sink *s, fib__job **got, int want)
{
    struct pollfd p;
    fib__job *j;
    int n = 0, rounds;
    for (rounds = 0; rounds < 100 && n < want; rounds++) {
        p.fd = s->efd;
        p.events = POLLIN;
        p.revents = 0;
        poll(&p, 1, 100);
        for (j = fib__sink_drain(s); j != NULL; j = j->next)
            got[n++] = j;
    }
    return n;
}

int main(void)
{
    fib__sink *s = fib__sink_new();
    fib__job a = {0}, b = {0};
    fib__job *got[4];
    int n;

    CHECK(s != NULL);
    fib__pool_set_limit(1);
    a.fn = hold;
    a.sink = s;
    b.fn = second;
    b.sink = s;
    CHECK(fib__pool_submit(&a) == 0);
    pthread_mutex_lock(&lock);
    while (!started)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    CHECK(fib__pool_submit(&b) == 0);          /* queued: the thread is busy */

    CHECK(fib__pool_cancel(&a) == -EBUSY);     /* running: not ours to take */
    CHECK(fib__pool_cancel(&b) == 0);
    CHECK(fib__pool_cancel(&b) == -EBUSY);     /* only once */
    n = collect(s, got, 1);
    CHECK(n == 1 && got[0] == &b && b.result == -ECANCELED);

    pthread_mutex_lock(&lock);
    released = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    n = collect(s, got, 1);
    CHECK(n == 1 && got[0] == &a && a.result == 7);
    CHECK(!ran_second);
    CHECK(fib__pool_cancel(&a) == -EBUSY);     /* done */

    /* Every job gives its reference back (the thread drops its own just
     * after delivering the job): ours is the last. */
    for (n = 0; n < 1000 && __atomic_load_n(&s->refs, __ATOMIC_ACQUIRE) != 1;
         n++)
        usleep(1000);
    CHECK(__atomic_load_n(&s->refs, __ATOMIC_ACQUIRE) == 1);
    fib__sink_release(s);
    printf("test_pool: ok\n");
    return 0;
}
