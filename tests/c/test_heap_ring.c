/*
 * test_heap_ring.c -- the C containers under the scheduler, tested alone,
 * built with AddressSanitizer and UBSan by `make ctest`.
 *
 * - The timer heap against a brute-force model: random arms, cancels from
 *   anywhere and pops; every pop must return the (deadline, seq) minimum,
 *   so equal deadlines come out in arming order, and len must always be
 *   the number of armed nodes (no tombstones).
 * - The ready ring across growth and wrap-around, in FIFO order.
 *
 * Exit status 0 on success, 1 on the first failure (liburing's convention).
 */
#include <stdio.h>
#include <stdlib.h>

#include "fib_heap.h"
#include "fib_ring.h"

#include "check.h"

#define N 2000

static fib__timer_node nodes[N];
static int armed[N];
static uint64_t arm_order[N]; /* model of seq: order of arming */

static int model_min(void)
{
    int best = -1, i;
    for (i = 0; i < N; i++) {
        if (!armed[i])
            continue;
        if (best < 0 || nodes[i].deadline < nodes[best].deadline ||
            (nodes[i].deadline == nodes[best].deadline &&
             arm_order[i] < arm_order[best]))
            best = i;
    }
    return best;
}

static void test_heap(void)
{
    fib__heap h;
    size_t count = 0;
    uint64_t order = 0;
    int step, i;

    srand(12345);
    fib__heap_init(&h);
    for (i = 0; i < N; i++)
        fib__timer_node_init(&nodes[i], 0, &nodes[i]);

    for (step = 0; step < 200000; step++) {
        int op = rand() % 10;
        i = rand() % N;
        if (op < 5) {
            if (!armed[i]) {
                /* few distinct deadlines, so ties are common */
                CHECK(fib__heap_push(&h, &nodes[i], rand() % 50) == 0);
                armed[i] = 1;
                arm_order[i] = order++;
                count++;
            }
        } else if (op < 8) {
            int was = armed[i];
            CHECK(fib__heap_remove(&h, &nodes[i]) == was);
            CHECK(!fib__timer_armed(&nodes[i]));
            if (was)
                count--;
            armed[i] = 0;
        } else {
            int want = model_min();
            fib__timer_node *got = fib__heap_pop(&h);
            if (want < 0) {
                CHECK(got == NULL);
            } else {
                CHECK(got == &nodes[want]);
                CHECK(!fib__timer_armed(got));
                armed[want] = 0;
                count--;
            }
        }
        CHECK(h.len == count);
    }
    /* Drain: non-decreasing (deadline, seq). */
    {
        int64_t last = -1;
        fib__timer_node *n;
        while ((n = fib__heap_pop(&h)) != NULL) {
            CHECK(n->deadline >= last);
            last = n->deadline;
            count--;
        }
        CHECK(count == 0 && h.len == 0);
    }
    fib__heap_destroy(&h);
}

static void test_ring(void)
{
    fib__ring r;
    size_t next_in = 1, next_out = 1;
    int round;

    CHECK(fib__ring_init(&r, 4) == 0);
    CHECK(fib__ring_pop(&r) == NULL && fib__ring_peek(&r) == NULL);
    for (round = 0; round < 200; round++) {
        int pushes = rand() % 300, pops = rand() % 300, k;
        for (k = 0; k < pushes; k++)
            CHECK(fib__ring_push(&r, (void *)next_in++) == 0);
        /* every entry in place, oldest first, across the wrap */
        for (k = 0; (size_t)k < r.count; k++)
            CHECK(fib__ring_at(&r, (size_t)k) == (void *)(next_out + k));
        CHECK(fib__ring_at(&r, r.count) == NULL);
        for (k = 0; k < pops && r.count; k++) {
            CHECK(fib__ring_peek(&r) == (void *)next_out);
            CHECK(fib__ring_pop(&r) == (void *)next_out++);
        }
        CHECK(r.count == next_in - next_out);
    }
    while (r.count)
        CHECK(fib__ring_pop(&r) == (void *)next_out++);
    CHECK(next_out == next_in);
    fib__ring_destroy(&r);
}

int main(void)
{
    test_heap();
    test_ring();
    printf("test_heap_ring: ok\n");
    return 0;
}
