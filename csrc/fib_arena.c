/*
 * fib_arena.c -- the native memory arena (see fib_arena.h for the design).
 *
 * Layout of one region (addresses grow to the right):
 *
 *   | region header | block | block | ... | block | fence |
 *   ^ mmap base       ^ base + REGION_HDR           ^ base + size - BLOCK_HDR
 *
 * Layout of one block:
 *
 *   | prev_size | head = size | USED? | payload ...                     |
 *   |<------- BLOCK_HDR ------->|<-- 16-aligned; free blocks keep their
 *                                   bin links (next, prev) here
 *
 * Invariants (fib__arena_validate checks each one):
 *   I1  the blocks of a region tile [base + REGION_HDR, fence) exactly;
 *   I2  every block's prev_size is the size of the block before it (0 for
 *       the first), the fence's too;
 *   I3  no two free blocks are adjacent (frees merge at once);
 *   I4  every free block is in bins[bin_of(size)] exactly once, the bins
 *       hold nothing else, and binmap bit i is set iff bins[i] is non-empty;
 *   I5  used is the sum of live payload capacities, mapped the sum of
 *       region sizes, nregions their count, and mapped <= max_size;
 *   I6  only a kept region (the initial or fixed one) may be one single
 *       free block: any other is unmapped when it empties.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fib_arena.h"

struct fib__arena_block {
    size_t prev_size;           /* size of the block before; 0 if first */
    size_t head;                /* size (multiple of 16) | flag bits */
    fib__arena_block *next;     /* free blocks only: bin links */
    fib__arena_block *prev;
};

struct fib__arena_region {
    fib__arena_region *next, *prev;
    size_t size;                /* usable bytes from the base, 16-multiple */
    size_t maplen;              /* bytes mapped (a page multiple) */
    int keep;                   /* never unmapped before destroy */
};

#define ALIGN_UP(n, a) (((n) + ((a) - 1)) & ~((size_t)(a) - 1))
#define BLOCK_HDR ((size_t)16)  /* prev_size + head */
#define MIN_BLOCK ((size_t)32)  /* header + the two links */
#define REGION_HDR ALIGN_UP(sizeof(fib__arena_region), FIB__ARENA_ALIGN)
#define REGION_MIN (REGION_HDR + MIN_BLOCK + BLOCK_HDR)
#define USED ((size_t)1)
#define FLAG_BITS ((size_t)FIB__ARENA_ALIGN - 1)
#define GROW_MIN ((size_t)64 << 10)

typedef fib__arena_block block;
typedef fib__arena_region region;

/* ---- block helpers ------------------------------------------------------ */

static inline size_t bsize(const block *b) { return b->head & ~FLAG_BITS; }
static inline int bused(const block *b) { return (b->head & USED) != 0; }
static inline block *bnext(const block *b)
{
    return (block *)((char *)b + bsize(b));
}
static inline block *bprev(const block *b)
{
    return (block *)((char *)b - b->prev_size);
}
static inline void *payload(const block *b)
{
    return (char *)b + BLOCK_HDR;
}
static inline block *of_payload(const void *p)
{
    return (block *)((char *)p - BLOCK_HDR);
}
static inline region *first_region_of(const block *b)
{
    /* only for a region's first block (prev_size == 0) */
    return (region *)((char *)b - REGION_HDR);
}

/* Size class: floor(log2(size)).  size >= MIN_BLOCK, so 5 .. 63. */
static inline unsigned bin_of(size_t size)
{
    return (unsigned)(sizeof(unsigned long long) * 8 - 1) -
           (unsigned)__builtin_clzll((unsigned long long)size);
}

/* The block size that holds n payload bytes, or 0 on overflow. */
static size_t block_need(size_t n)
{
    size_t need;
    if (n > SIZE_MAX - BLOCK_HDR - FIB__ARENA_ALIGN)
        return 0;
    need = ALIGN_UP(n + BLOCK_HDR, FIB__ARENA_ALIGN);
    return need < MIN_BLOCK ? MIN_BLOCK : need;
}

/* Make b (size already set) a free block and push it on its bin.  LIFO
 * within a bin: a block freed recently is likely still in cache. */
static void bin_insert(fib__arena *a, block *b)
{
    unsigned i = bin_of(bsize(b));
    b->head &= ~USED;
    b->prev = NULL;
    b->next = a->bins[i];
    if (b->next != NULL)
        b->next->prev = b;
    a->bins[i] = b;
    a->binmap |= (uint64_t)1 << i;
}

static void bin_remove(fib__arena *a, block *b)
{
    unsigned i = bin_of(bsize(b));
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        a->bins[i] = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    if (a->bins[i] == NULL)
        a->binmap &= ~((uint64_t)1 << i);
}

/* A free block of at least `need` bytes, still in its bin, or NULL. */
static block *find_fit(const fib__arena *a, size_t need)
{
    unsigned i = bin_of(need);
    uint64_t larger;
    block *b;
    /* first fit among the blocks of the request's own size class ... */
    for (b = a->bins[i]; b != NULL; b = b->next)
        if (bsize(b) >= need)
            return b;
    /* ... else any block of a larger class fits; take the smallest class.
     * (2 << 63 is 0 for a uint64_t, so i == 63 leaves no larger class.) */
    larger = a->binmap & ~(((uint64_t)2 << i) - 1);
    if (larger == 0)
        return NULL;
    return a->bins[__builtin_ctzll(larger)];
}

/* Give b exactly `size` bytes (flags kept) and make the `rest` bytes after
 * it a free block, which must not touch another free block. */
static void split(fib__arena *a, block *b, size_t size, size_t rest)
{
    block *r;
    b->head = size | (b->head & FLAG_BITS);
    r = bnext(b);
    r->prev_size = size;
    r->head = rest;
    bnext(r)->prev_size = rest;
    bin_insert(a, r);
}

/* ---- regions ------------------------------------------------------------ */

static size_t page_size(void)
{
    static size_t ps;
    if (ps == 0) {
        long v = sysconf(_SC_PAGESIZE);
        ps = v > 0 ? (size_t)v : 4096;
    }
    return ps;
}

/* Map a region of `size` usable bytes (a multiple of 16, >= REGION_MIN)
 * holding one free block, and put that block in the bins. */
static int region_new(fib__arena *a, size_t size, int keep)
{
    size_t ps = page_size(), maplen;
    region *r;
    block *b, *fence;
    void *m;

    if (size > SIZE_MAX - ps)
        return -ENOMEM;
    maplen = ALIGN_UP(size, ps);
    m = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -ENOMEM;
    r = m;
    r->size = size;
    r->maplen = maplen;
    r->keep = keep;
    r->prev = NULL;
    r->next = a->regions;
    if (r->next != NULL)
        r->next->prev = r;
    a->regions = r;
    a->mapped += size;
    a->nregions++;

    b = (block *)((char *)m + REGION_HDR);
    b->prev_size = 0;
    b->head = size - REGION_HDR - BLOCK_HDR;
    fence = bnext(b);
    fence->prev_size = bsize(b);
    fence->head = USED;     /* size 0, in use: merges and walks stop here */
    bin_insert(a, b);
    return 0;
}

/* Unmap r; its one free block must already be out of the bins. */
static void region_release(fib__arena *a, region *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        a->regions = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    a->mapped -= r->size;
    a->nregions--;
    munmap(r, r->maplen);
}

/* Map a region with room for a block of `need` bytes.  Geometric growth
 * (at least as much as is mapped already) keeps the number of regions
 * logarithmic in the heap's size; max_size may cut a region down to just
 * what the request needs. */
static int grow(fib__arena *a, size_t need)
{
    size_t want, size, room, ps = page_size();

    if (a->fixed)
        return -ENOMEM;
    if (need > SIZE_MAX - REGION_HDR - BLOCK_HDR - ps)
        return -ENOMEM;
    want = need + REGION_HDR + BLOCK_HDR;
    size = want;
    if (size < a->mapped)
        size = a->mapped;
    if (size < GROW_MIN)
        size = GROW_MIN;
    if (size > SIZE_MAX - ps)
        size = want;
    size = ALIGN_UP(size, ps);
    room = a->max_size - a->mapped;
    if (size > room) {
        size = room & ~FLAG_BITS;
        if (size < want)
            return -ENOMEM;
    }
    return region_new(a, size, 0);
}

/* ---- public API --------------------------------------------------------- */

int fib__arena_init(fib__arena *a, size_t initial, size_t max_size, int fixed)
{
    size_t size;
    int rc;

    memset(a, 0, sizeof(*a));
    a->max_size = max_size;
    if (initial > max_size)
        return -EINVAL;
    if (fixed) {
        size = max_size != FIB__ARENA_UNLIMITED ? max_size : initial;
        size &= ~FLAG_BITS;
        if (size < REGION_MIN)
            return -EINVAL;
        rc = region_new(a, size, 1);
        if (rc == 0)
            a->fixed = 1;
        return rc;
    }
    if (initial == 0)
        return 0;
    /* Round the first region up to whole pages (the rest of the last page
     * is mapped anyway), but not beyond max_size; a region too small to
     * hold a block is not made at all. */
    size = initial > SIZE_MAX - page_size() ? initial
                                            : ALIGN_UP(initial, page_size());
    if (size > max_size)
        size = max_size;
    size &= ~FLAG_BITS;
    if (size < REGION_MIN)
        size = REGION_MIN <= max_size ? REGION_MIN : 0;
    return size ? region_new(a, size, 1) : 0;
}

void fib__arena_destroy(fib__arena *a)
{
    region *r = a->regions, *next;
    while (r != NULL) {
        next = r->next;
        munmap(r, r->maplen);
        r = next;
    }
    memset(a, 0, sizeof(*a));
}

int fib__arena_alloc(fib__arena *a, size_t n, void **out)
{
    size_t need = block_need(n), size;
    block *b;
    int rc;

    if (need == 0)
        return -ENOMEM;
    b = find_fit(a, need);
    if (b == NULL) {
        rc = grow(a, need);
        if (rc < 0)
            return rc;
        b = find_fit(a, need);  /* the new region's block fits */
    }
    bin_remove(a, b);
    size = bsize(b);
    b->head = size | USED;
    if (size - need >= MIN_BLOCK)
        split(a, b, need, size - need);
    a->used += bsize(b) - BLOCK_HDR;
    *out = payload(b);
    return 0;
}

int fib__arena_free(fib__arena *a, void *p)
{
    block *b = of_payload(p), *nx, *pv;
    region *r;

    if (!bused(b) || bsize(b) == 0)
        return -EINVAL;
    a->used -= bsize(b) - BLOCK_HDR;
    b->head &= ~USED;
    /* boundary tags: merge with a free neighbour on either side */
    nx = bnext(b);
    if (!bused(nx)) {
        bin_remove(a, nx);
        b->head = bsize(b) + bsize(nx);
    }
    if (b->prev_size != 0) {
        pv = bprev(b);
        if (!bused(pv)) {
            bin_remove(a, pv);
            pv->head = bsize(pv) + bsize(b);
            b = pv;
        }
    }
    nx = bnext(b);
    nx->prev_size = bsize(b);
    if (b->prev_size == 0 && bsize(nx) == 0) {
        /* b is the whole region: give it back unless it is kept */
        r = first_region_of(b);
        if (!r->keep) {
            region_release(a, r);
            return 0;
        }
    }
    bin_insert(a, b);
    return 0;
}

int fib__arena_resize(fib__arena *a, void *p, size_t n)
{
    block *b = of_payload(p), *nx = bnext(b);
    size_t need = block_need(n), cur = bsize(b), total;

    if (!bused(b) || cur == 0)
        return -EINVAL;
    if (need == 0)
        return -ENOMEM;
    if (need <= cur) {
        if (!bused(nx)) {
            /* the free neighbour takes the slack, however small */
            bin_remove(a, nx);
            total = cur + bsize(nx);
            split(a, b, need, total - need);
        } else if (cur - need >= MIN_BLOCK) {
            split(a, b, need, cur - need);
        } else {
            return 0;   /* too little to stand as a block: keep it */
        }
        a->used -= cur - need;
        return 0;
    }
    if (bused(nx) || bsize(nx) < need - cur)
        return -ENOMEM;
    bin_remove(a, nx);
    total = cur + bsize(nx);
    if (total - need >= MIN_BLOCK) {
        split(a, b, need, total - need);
    } else {
        b->head = total | USED;
        bnext(b)->prev_size = total;
    }
    a->used += bsize(b) - cur;
    return 0;
}

int fib__arena_realloc(fib__arena *a, void **pp, size_t n, int in_place_only)
{
    void *old = *pp, *q;
    size_t keep;
    int rc = fib__arena_resize(a, old, n);

    if (rc != -ENOMEM || in_place_only)
        return rc;
    keep = fib__arena_usable(old);
    if (keep > n)
        keep = n;
    rc = fib__arena_alloc(a, n, &q);
    if (rc < 0)
        return rc;
    memcpy(q, old, keep);
    fib__arena_free(a, old);
    *pp = q;
    return 0;
}

size_t fib__arena_usable(const void *p)
{
    return bsize(of_payload(p)) - BLOCK_HDR;
}

int fib__arena_fixed_region(const fib__arena *a, void **base, size_t *len)
{
    if (!a->fixed || a->regions == NULL)
        return -EINVAL;
    *base = a->regions;
    *len = a->regions->size;
    return 0;
}

/* ---- validation --------------------------------------------------------- */

static int cmp_block(const void *x, const void *y)
{
    uintptr_t u = (uintptr_t)*(block *const *)x;
    uintptr_t v = (uintptr_t)*(block *const *)y;
    return u < v ? -1 : u > v;
}

/* Index of b in the sorted array, or -1: a pointer is only dereferenced
 * once it is known to be a free block found by the region walk. */
static ptrdiff_t find_block(block *const *arr, size_t n, const block *b)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)arr[mid] < (uintptr_t)b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && arr[lo] == b ? (ptrdiff_t)lo : -1;
}

int fib__arena_validate(const fib__arena *a)
{
    block **frees = NULL, **grown;
    unsigned char *seen = NULL;
    size_t nfree = 0, cap = 0, used = 0, mapped = 0, nreg = 0, listed = 0;
    const region *r, *rprev = NULL;
    unsigned i;
    int rc = -EFAULT;

    /* The region list is the root of trust: region headers sit before
     * every payload, out of reach of an overrun of a blob. */
    for (r = a->regions; r != NULL; rprev = r, r = r->next) {
        char *base = (char *)r, *fence, *pos;
        size_t prev_size = 0, nblocks = 0;
        int prev_free = 0;

        if (++nreg > a->nregions || r->prev != rprev)
            goto out;
        if (r->size % FIB__ARENA_ALIGN != 0 || r->size < REGION_MIN ||
            r->size > r->maplen)
            goto out;
        mapped += r->size;
        fence = base + r->size - BLOCK_HDR;
        pos = base + REGION_HDR;
        while (pos < fence) {                       /* I1, I2, I3 */
            block *b = (block *)pos;
            size_t sz = bsize(b);
            if ((b->head & FLAG_BITS & ~USED) != 0)
                goto out;
            if (b->prev_size != prev_size)
                goto out;
            if (sz < MIN_BLOCK || sz > (size_t)(fence - pos))
                goto out;
            if (bused(b)) {
                used += sz - BLOCK_HDR;
            } else {
                if (prev_free)
                    goto out;
                if (nfree == cap) {
                    cap = cap ? cap * 2 : 64;
                    grown = realloc(frees, cap * sizeof(*frees));
                    if (grown == NULL) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    frees = grown;
                }
                frees[nfree++] = b;
            }
            prev_free = !bused(b);
            prev_size = sz;
            pos += sz;
            nblocks++;
        }
        if (((block *)fence)->head != USED ||
            ((block *)fence)->prev_size != prev_size)
            goto out;
        if (nblocks == 1 && prev_free && !r->keep)  /* I6 */
            goto out;
    }
    if (nreg != a->nregions || mapped != a->mapped || used != a->used ||
        a->mapped > a->max_size)                    /* I5 */
        goto out;
    if (a->fixed && nreg != 1)
        goto out;

    /* I4: each bin's list, checked against the walk's free blocks */
    if (nfree > 1)
        qsort(frees, nfree, sizeof(*frees), cmp_block);
    seen = calloc(nfree ? nfree : 1, 1);
    if (seen == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < FIB__ARENA_NBINS; i++) {
        const block *b = a->bins[i], *prev = NULL;
        if ((((a->binmap >> i) & 1) != 0) != (b != NULL))
            goto out;
        while (b != NULL) {
            ptrdiff_t k = find_block(frees, nfree, b);
            if (k < 0 || seen[k])   /* not a free block, or a cycle */
                goto out;
            seen[k] = 1;
            listed++;
            if (b->prev != prev || bin_of(bsize(b)) != i)
                goto out;
            prev = b;
            b = b->next;
        }
    }
    if (listed != nfree)
        goto out;
    rc = 0;
out:
    free(frees);
    free(seen);
    return rc;
}

int fib__arena_debug_corrupt(fib__arena *a, void *p, int how)
{
    block *b = p != NULL ? of_payload(p) : NULL, *nx;

    switch (how) {
    case FIB__ARENA_CORRUPT_SIZE:
        if (b == NULL)
            return -EINVAL;
        /* a size far beyond any region: the walk must reject it */
        b->head ^= (size_t)1 << (sizeof(size_t) * 8 - 2);
        return 0;
    case FIB__ARENA_CORRUPT_PREV:
        if (b == NULL)
            return -EINVAL;
        b->prev_size ^= FIB__ARENA_ALIGN;
        return 0;
    case FIB__ARENA_CORRUPT_LINK:
        if (b == NULL)
            return -EINVAL;
        nx = bnext(b);
        if (bused(nx))
            return -EINVAL;
        /* points 16 bytes off: a pointer validate must not follow */
        nx->next = (block *)((uintptr_t)nx->next ^ FIB__ARENA_ALIGN);
        return 0;
    case FIB__ARENA_CORRUPT_USED:
        a->used ^= 1;
        return 0;
    default:
        return -EINVAL;
    }
}
