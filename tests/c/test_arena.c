/*
 * test_arena.c -- the native heap's allocator (csrc/fib_arena.c), tested
 * alone, built with AddressSanitizer and UBSan by `make ctest`.
 *
 * - A fixed arena against a brute-force model: the model knows every live
 *   block's extent, so it knows every gap between them, and with
 *   immediate merging each gap is exactly one free block.  From that it
 *   predicts, exactly, whether each alloc, in-place resize and moving
 *   realloc must succeed and what capacity the block ends up with.  Every
 *   block is filled with its own pattern, checked before it is freed or
 *   moved, and all of them periodically, with the blocks' disjointness,
 *   the used counter and fib__arena_validate().
 * - A growing arena under max_size: the same checks minus the exact
 *   predictions; mapped never exceeds max_size, a failure only happens
 *   when the request cannot fit in what max_size leaves, and freeing
 *   everything gives all grown regions back.
 * - Edge cases (sizes near SIZE_MAX, bad arguments, double free), and
 *   each corruption hook makes validate() fail and undoing it passes.
 *
 * Seeded and bounded; exit status 0 on success, 1 on the first failure.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fib_arena.h"

#include "check.h"

#define HDR 16      /* block header, per the documented layout */
#define MINB 32     /* smallest block */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* ---- the model ---------------------------------------------------------- */

#define SLOTS 400

typedef struct {
    char *p;            /* NULL: slot empty */
    size_t n;           /* bytes asked for (and filled) */
    size_t usable;      /* capacity the arena reported */
    unsigned char tag;  /* pattern seed */
} slot;

static slot slots[SLOTS];

static size_t need_of(size_t n)
{
    size_t need = (n + HDR + 15) & ~(size_t)15;
    return need < MINB ? MINB : need;
}

static unsigned char pat(const slot *s, size_t i)
{
    return (unsigned char)(s->tag + i * 7 + (i >> 8));
}

static void fill(slot *s, size_t from)
{
    size_t i;
    for (i = from; i < s->n; i++)
        s->p[i] = (char)pat(s, i);
}

static void check_fill(const slot *s, size_t upto)
{
    size_t i;
    for (i = 0; i < upto && i < s->n; i++)
        CHECK((unsigned char)s->p[i] == pat(s, i));
}

static int cmp_slot(const void *x, const void *y)
{
    const slot *a = *(const slot *const *)x, *b = *(const slot *const *)y;
    return (uintptr_t)a->p < (uintptr_t)b->p ? -1
                                              : (uintptr_t)a->p > (uintptr_t)b->p;
}

/* Live slots sorted by address; returns their count. */
static size_t sorted_live(slot **out)
{
    size_t k = 0, i;
    for (i = 0; i < SLOTS; i++)
        if (slots[i].p != NULL)
            out[k++] = &slots[i];
    qsort(out, k, sizeof(*out), cmp_slot);
    return k;
}

/* Everything the model can check about the arena as a whole. */
static void check_all(fib__arena *a, int contents)
{
    slot *live[SLOTS];
    size_t k = sorted_live(live), i, used = 0;
    for (i = 0; i < k; i++) {
        CHECK(((uintptr_t)live[i]->p & 15) == 0);
        CHECK(live[i]->usable >= live[i]->n);
        CHECK(fib__arena_usable(live[i]->p) == live[i]->usable);
        if (i + 1 < k) /* disjoint, header included */
            CHECK(live[i]->p + live[i]->usable + HDR <= live[i + 1]->p);
        used += live[i]->usable;
        if (contents)
            check_fill(live[i], live[i]->n);
    }
    CHECK(a->used == used);
    CHECK(a->mapped <= a->max_size);
    CHECK(fib__arena_validate(a) == 0);
}

static slot *empty_slot(void)
{
    size_t i, start = rnd_below(SLOTS);
    for (i = 0; i < SLOTS; i++)
        if (slots[(start + i) % SLOTS].p == NULL)
            return &slots[(start + i) % SLOTS];
    return NULL;
}

static slot *live_slot(void)
{
    size_t i, start = rnd_below(SLOTS);
    for (i = 0; i < SLOTS; i++)
        if (slots[(start + i) % SLOTS].p != NULL)
            return &slots[(start + i) % SLOTS];
    return NULL;
}

static size_t rnd_size(size_t big)
{
    unsigned r = (unsigned)rnd_below(100);
    if (r < 65)
        return rnd_below(257);
    if (r < 93)
        return rnd_below(8193);
    return rnd_below(big + 1);
}

/* ---- fixed arena: exact predictions ------------------------------------- */

static char *first_blk, *fence;   /* the fixed region's block extent */

/* The largest gap between live blocks (each one free block). */
static size_t max_gap(void)
{
    slot *live[SLOTS];
    size_t k = sorted_live(live), i, best = 0;
    char *at = first_blk;
    for (i = 0; i < k; i++) {
        size_t g = (size_t)(live[i]->p - HDR - at);
        if (g > best)
            best = g;
        at = live[i]->p + live[i]->usable;
    }
    if ((size_t)(fence - at) > best)
        best = (size_t)(fence - at);
    return best;
}

/* The gap right after s's block. */
static size_t gap_after(const slot *s)
{
    size_t i;
    char *end = s->p + s->usable, *next = fence;
    for (i = 0; i < SLOTS; i++)
        if (slots[i].p != NULL && slots[i].p > s->p && slots[i].p - HDR < next)
            next = slots[i].p - HDR;
    return (size_t)(next - end);
}

/* The capacity an in-place resize must give, or 0 if it must fail. */
static size_t predict_resize(const slot *s, size_t n)
{
    size_t need = need_of(n), cur = s->usable + HDR, gap = gap_after(s);
    if (need <= cur) {
        if (gap > 0 || cur - need >= MINB)
            return need - HDR;
        return s->usable;
    }
    if (gap < need - cur)
        return 0;
    if (cur + gap - need >= MINB)
        return need - HDR;
    return cur + gap - HDR;
}

static void test_fixed(void)
{
    const size_t size = 256 << 10;
    fib__arena a;
    void *base, *p;
    size_t len, step, i;

    memset(slots, 0, sizeof(slots));
    rng_state = 0x9e3779b97f4a7c15ULL;
    CHECK(fib__arena_init(&a, 0, size, 1) == 0);
    CHECK(a.fixed && a.nregions == 1 && a.used == 0);
    CHECK(fib__arena_fixed_region(&a, &base, &len) == 0);
    CHECK(len == size && a.mapped == size);
    CHECK(fib__arena_validate(&a) == 0);
    /* the first block of an empty arena starts the block extent */
    CHECK(fib__arena_alloc(&a, 0, &p) == 0);
    first_blk = (char *)p - HDR;
    fence = (char *)base + len - HDR;
    CHECK(first_blk > (char *)base && first_blk < fence);
    CHECK(fib__arena_free(&a, p) == 0);
    CHECK(a.used == 0);
    CHECK(max_gap() == (size_t)(fence - first_blk));

    for (step = 0; step < 30000; step++) {
        unsigned op = (unsigned)rnd_below(100);
        slot *s;
        if (op < 40) {                                  /* alloc */
            size_t n = rnd_size(48 << 10), need = need_of(n);
            int expect = max_gap() >= need, rc;
            s = empty_slot();
            if (s == NULL)
                continue;
            rc = fib__arena_alloc(&a, n, &p);
            CHECK(rc == (expect ? 0 : -ENOMEM));
            if (rc == 0) {
                s->p = p;
                s->n = n;
                s->usable = fib__arena_usable(p);
                CHECK(s->usable == need - HDR || s->usable == need);
                CHECK(s->p - HDR >= first_blk && s->p + s->usable <= fence);
                s->tag = (unsigned char)rnd();
                fill(s, 0);
            }
        } else if (op < 70) {                           /* free */
            s = live_slot();
            if (s == NULL)
                continue;
            check_fill(s, s->n);
            CHECK(fib__arena_free(&a, s->p) == 0);
            s->p = NULL;
        } else if (op < 85) {                           /* resize in place */
            size_t n, want;
            int rc;
            s = live_slot();
            if (s == NULL)
                continue;
            n = rnd_below(2) ? rnd_below(s->n + 1) : s->n + rnd_size(16384);
            want = predict_resize(s, n);
            rc = fib__arena_resize(&a, s->p, n);
            CHECK(rc == (want ? 0 : -ENOMEM));
            if (rc == 0) {
                CHECK(fib__arena_usable(s->p) == want);
                check_fill(s, n);
                s->usable = want;
                if (n > s->n) {
                    size_t old = s->n;
                    s->n = n;
                    fill(s, old);
                } else {
                    s->n = n;
                }
            } else {
                CHECK(fib__arena_usable(s->p) == s->usable);
            }
        } else {                                        /* moving realloc */
            size_t n, in_place;
            void *q;
            int rc, expect;
            s = live_slot();
            if (s == NULL)
                continue;
            n = s->n + rnd_size(32768);
            in_place = predict_resize(s, n);
            expect = in_place != 0 || max_gap() >= need_of(n);
            q = s->p;
            rc = fib__arena_realloc(&a, &q, n, 0);
            CHECK(rc == (expect ? 0 : -ENOMEM));
            if (rc == 0) {
                CHECK(in_place ? q == s->p : q != s->p);
                s->p = q;
                check_fill(s, s->n);    /* contents kept */
                s->usable = fib__arena_usable(q);
                CHECK(in_place ? s->usable == in_place : s->usable >= n);
                {
                    size_t old = s->n;
                    s->n = n;
                    fill(s, old);
                }
            } else {
                CHECK(q == s->p);
                /* in place only must refuse the same way */
                CHECK(fib__arena_realloc(&a, &q, n, 1) == -ENOMEM);
                check_fill(s, s->n);
            }
        }
        check_all(&a, step % 500 == 0);
    }
    /* drain: everything back, one free block spanning the region */
    for (i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            check_fill(&slots[i], slots[i].n);
            CHECK(fib__arena_free(&a, slots[i].p) == 0);
            slots[i].p = NULL;
        }
    }
    CHECK(a.used == 0 && a.nregions == 1 && a.mapped == size);
    CHECK(max_gap() == (size_t)(fence - first_blk));
    CHECK(fib__arena_validate(&a) == 0);
    /* and the whole of it can be had again in one piece */
    CHECK(fib__arena_alloc(&a, (size_t)(fence - first_blk) - HDR, &p) == 0);
    CHECK(fib__arena_alloc(&a, 0, &base) == -ENOMEM);
    CHECK(fib__arena_free(&a, p) == 0);
    fib__arena_destroy(&a);
}

/* ---- growing arena ------------------------------------------------------ */

static void test_growing(size_t initial, size_t max_size, uint64_t seed)
{
    fib__arena a;
    void *p;
    size_t step, i, kept;

    memset(slots, 0, sizeof(slots));
    rng_state = seed;
    CHECK(fib__arena_init(&a, initial, max_size, 0) == 0);
    CHECK(!a.fixed && a.mapped <= max_size);
    CHECK(a.nregions == (initial ? 1u : 0u));
    kept = a.mapped;
    for (step = 0; step < 20000; step++) {
        unsigned op = (unsigned)rnd_below(100);
        slot *s;
        if (op < 45) {
            size_t n = rnd_size(300 << 10);
            int rc;
            s = empty_slot();
            if (s == NULL)
                continue;
            rc = fib__arena_alloc(&a, n, &p);
            if (rc == 0) {
                s->p = p;
                s->n = n;
                s->usable = fib__arena_usable(p);
                CHECK(s->usable >= n && s->usable <= need_of(n));
                s->tag = (unsigned char)rnd();
                fill(s, 0);
            } else {
                /* only when a region for it would not fit under max */
                CHECK(rc == -ENOMEM);
                CHECK(max_size != FIB__ARENA_UNLIMITED);
                CHECK(max_size - a.mapped < need_of(n) + 128);
            }
        } else if (op < 80) {
            s = live_slot();
            if (s == NULL)
                continue;
            check_fill(s, s->n);
            CHECK(fib__arena_free(&a, s->p) == 0);
            s->p = NULL;
        } else {
            size_t n;
            void *q;
            int rc, in_place_only = rnd_below(4) == 0;
            s = live_slot();
            if (s == NULL)
                continue;
            n = rnd_below(3) ? s->n + rnd_size(65536) : rnd_below(s->n + 1);
            q = s->p;
            rc = fib__arena_realloc(&a, &q, n, in_place_only);
            if (rc == 0) {
                if (in_place_only)
                    CHECK(q == s->p);
                s->p = q;
                check_fill(s, n < s->n ? n : s->n);
                s->usable = fib__arena_usable(q);
                if (n > s->n) {
                    size_t old = s->n;
                    s->n = n;
                    fill(s, old);
                } else {
                    s->n = n;
                }
            } else {
                CHECK(rc == -ENOMEM && q == s->p && n > s->n);
                CHECK(fib__arena_usable(q) == s->usable);
                check_fill(s, s->n);
            }
        }
        check_all(&a, step % 1000 == 0);
    }
    for (i = 0; i < SLOTS; i++) {
        if (slots[i].p != NULL) {
            check_fill(&slots[i], slots[i].n);
            CHECK(fib__arena_free(&a, slots[i].p) == 0);
            slots[i].p = NULL;
        }
    }
    /* grown regions are unmapped as they empty; the initial one stays */
    CHECK(a.used == 0);
    CHECK(a.mapped == kept);
    CHECK(a.nregions == (initial ? 1u : 0u));
    CHECK(fib__arena_validate(&a) == 0);
    fib__arena_destroy(&a);
    CHECK(a.regions == NULL && a.mapped == 0);
}

/* ---- edges -------------------------------------------------------------- */

static void test_edges(void)
{
    fib__arena a;
    void *p, *q, *base;
    size_t len;

    CHECK(fib__arena_init(&a, 100, 50, 0) == -EINVAL);
    CHECK(fib__arena_init(&a, 0, 64, 1) == -EINVAL);   /* too small */
    CHECK(fib__arena_init(&a, 0, FIB__ARENA_UNLIMITED, 1) == -EINVAL);

    /* a fixed arena sized by initial when there is no max */
    CHECK(fib__arena_init(&a, 4096, FIB__ARENA_UNLIMITED, 1) == 0);
    CHECK(fib__arena_fixed_region(&a, &base, &len) == 0 && len == 4096);
    CHECK(fib__arena_alloc(&a, 8192, &p) == -ENOMEM);   /* never grows */
    CHECK(a.nregions == 1);
    fib__arena_destroy(&a);

    /* an unlimited arena: no initial region, huge sizes refused */
    CHECK(fib__arena_init(&a, 0, FIB__ARENA_UNLIMITED, 0) == 0);
    CHECK(fib__arena_fixed_region(&a, &base, &len) == -EINVAL);
    CHECK(a.nregions == 0 && a.mapped == 0);
    CHECK(fib__arena_alloc(&a, SIZE_MAX, &p) == -ENOMEM);
    CHECK(fib__arena_alloc(&a, SIZE_MAX - 20, &p) == -ENOMEM);
    CHECK(fib__arena_alloc(&a, SIZE_MAX / 2, &p) == -ENOMEM);
    CHECK(fib__arena_alloc(&a, 0, &p) == 0);
    CHECK(((uintptr_t)p & 15) == 0 && fib__arena_usable(p) == 16);
    CHECK(fib__arena_resize(&a, p, SIZE_MAX) == -ENOMEM);
    q = p;
    CHECK(fib__arena_realloc(&a, &q, SIZE_MAX - 64, 0) == -ENOMEM && q == p);
    CHECK(fib__arena_free(&a, p) == 0);
    CHECK(a.nregions == 0 && a.mapped == 0 && a.used == 0);

    /* a big block gets a region of its own, unmapped when freed */
    CHECK(fib__arena_alloc(&a, 1000, &q) == 0);
    CHECK(fib__arena_alloc(&a, 8 << 20, &p) == 0);
    CHECK(a.nregions == 2);
    memset(p, 0xab, 8 << 20);
    CHECK(fib__arena_validate(&a) == 0);
    CHECK(fib__arena_free(&a, p) == 0);
    CHECK(a.nregions == 1);
    /* double free is refused (the header says "free") */
    CHECK(fib__arena_alloc(&a, 100, &p) == 0);
    CHECK(fib__arena_free(&a, p) == 0);
    CHECK(fib__arena_free(&a, p) == -EINVAL);
    CHECK(fib__arena_free(&a, q) == 0);
    CHECK(a.nregions == 0 && a.used == 0);
    CHECK(fib__arena_validate(&a) == 0);
    fib__arena_destroy(&a);

    /* max_size counts headers: max_size bytes themselves never fit */
    CHECK(fib__arena_init(&a, 0, 64 << 10, 0) == 0);
    CHECK(fib__arena_alloc(&a, 64 << 10, &p) == -ENOMEM);
    CHECK(fib__arena_alloc(&a, 60 << 10, &p) == 0);
    CHECK(a.mapped <= (64 << 10));
    CHECK(fib__arena_alloc(&a, 8 << 10, &q) == -ENOMEM);
    CHECK(fib__arena_free(&a, p) == 0);
    fib__arena_destroy(&a);

    /* initial region smaller than a page is rounded up, within max */
    CHECK(fib__arena_init(&a, 1, FIB__ARENA_UNLIMITED, 0) == 0);
    CHECK(a.nregions == 1 && a.mapped >= 96);
    CHECK(fib__arena_alloc(&a, 10, &p) == 0);
    CHECK(fib__arena_free(&a, p) == 0);
    CHECK(a.nregions == 1);     /* the initial region is kept */
    fib__arena_destroy(&a);
}

/* ---- the corruption hooks ----------------------------------------------- */

static void test_corrupt(void)
{
    fib__arena a;
    void *x, *y, *z, *w;
    int how;

    CHECK(fib__arena_init(&a, 0, FIB__ARENA_UNLIMITED, 0) == 0);
    CHECK(fib__arena_alloc(&a, 100, &x) == 0);
    CHECK(fib__arena_alloc(&a, 200, &y) == 0);
    CHECK(fib__arena_alloc(&a, 300, &z) == 0);
    CHECK(fib__arena_alloc(&a, 400, &w) == 0);
    CHECK(fib__arena_free(&a, y) == 0);     /* x is followed by a free block */
    CHECK(fib__arena_validate(&a) == 0);
    CHECK(fib__arena_debug_corrupt(&a, z, FIB__ARENA_CORRUPT_LINK) == -EINVAL);
    CHECK(fib__arena_debug_corrupt(&a, x, 99) == -EINVAL);
    for (how = FIB__ARENA_CORRUPT_SIZE; how <= FIB__ARENA_CORRUPT_USED; how++) {
        void *target = how == FIB__ARENA_CORRUPT_LINK ? x : z;
        CHECK(fib__arena_debug_corrupt(&a, target, how) == 0);
        CHECK(fib__arena_validate(&a) == -EFAULT);
        CHECK(fib__arena_debug_corrupt(&a, target, how) == 0);
        CHECK(fib__arena_validate(&a) == 0);
    }
    /* the first block's tag too (prev_size 0 becomes non-zero) */
    CHECK(fib__arena_debug_corrupt(&a, x, FIB__ARENA_CORRUPT_PREV) == 0);
    CHECK(fib__arena_validate(&a) == -EFAULT);
    CHECK(fib__arena_debug_corrupt(&a, x, FIB__ARENA_CORRUPT_PREV) == 0);
    CHECK(fib__arena_free(&a, x) == 0);
    CHECK(fib__arena_free(&a, z) == 0);
    CHECK(fib__arena_free(&a, w) == 0);
    CHECK(a.used == 0 && fib__arena_validate(&a) == 0);
    fib__arena_destroy(&a);
}

int main(void)
{
    test_edges();
    test_corrupt();
    test_fixed();
    test_growing(0, FIB__ARENA_UNLIMITED, 1);
    test_growing(0, 2 << 20, 2);
    test_growing(100 << 10, 3 << 20, 3);
    printf("test_arena: ok\n");
    return 0;
}
