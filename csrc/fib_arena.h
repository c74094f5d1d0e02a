/*
 * fib_arena.h -- a native memory arena: the allocator under fibers.Heap.
 *
 * Design notes
 * - An arena owns one or more regions, each a private anonymous mmap.  A
 *   region starts with a small header, then a run of blocks that tile it
 *   exactly, then a 16-byte fence (a zero-sized block marked in use) so a
 *   walk or a forward merge stops at the end without a bounds check.
 * - Every block starts with a 16-byte header: the size of the block just
 *   before it (0 for a region's first block) and its own size with an
 *   in-use bit.  Both neighbours are therefore one addition or subtraction
 *   away (boundary tags), so freeing merges with a free neighbour on either
 *   side in O(1), and two free blocks are never adjacent.  Payloads are
 *   16-byte aligned, sizes are multiples of 16, a block is at least 32
 *   bytes (header plus the two free-list links a free block keeps in its
 *   payload).
 * - Free blocks sit in size-class bins, one per power of two, each a
 *   doubly linked list, with a bitmap of non-empty bins.  Allocation looks
 *   first-fit through the request's own bin, then takes the head of the
 *   next non-empty larger bin (every block there fits), splitting off the
 *   remainder when it can stand as a block of its own.
 * - Growth: when nothing fits, a non-fixed arena maps a new region at least
 *   as large as everything mapped so far (at least 64 KiB, rounded to
 *   pages), or just big enough for the request when max_size leaves less.
 *   A region that becomes entirely free is unmapped at once, except the
 *   initial one.  A fixed arena (for io_uring buffer registration) is one
 *   region made at init; it never grows, moves or shrinks.
 * - Sizes: `mapped` counts the usable bytes of all regions, headers and
 *   fences included; max_size bounds `mapped`, so per-block headers count
 *   against it and an allocation of exactly max_size bytes cannot succeed.
 *   `used` counts the payload capacity of live blocks (requests rounded up
 *   to 16), so it returns to 0 when every block is freed.
 * - No locking: the caller serialises (fibers holds the GIL).
 * - Errors are negative errno values: -ENOMEM (nothing fits, max_size, or
 *   mmap failed), -EINVAL (bad argument).
 */
#ifndef FIB_ARENA_H
#define FIB_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define FIB__ARENA_ALIGN 16
#define FIB__ARENA_NBINS 64
#define FIB__ARENA_UNLIMITED SIZE_MAX

typedef struct fib__arena_block fib__arena_block;
typedef struct fib__arena_region fib__arena_region;

typedef struct fib__arena {
    /* read-only */
    size_t used;        /* payload bytes of live blocks */
    size_t mapped;      /* usable bytes of all regions */
    size_t max_size;    /* bound on mapped; FIB__ARENA_UNLIMITED for none */
    size_t nregions;    /* regions currently mapped */
    int fixed;          /* one region, made at init, never grows */
    /* private */
    fib__arena_region *regions;
    fib__arena_block *bins[FIB__ARENA_NBINS];
    uint64_t binmap;    /* bit i set iff bins[i] is non-empty */
} fib__arena;

/* Set up an arena.  initial > 0 maps a first region of that many bytes
 * now (kept until destroy).  fixed != 0 makes that region the only one:
 * it is max_size bytes, or initial when max_size is UNLIMITED, and the
 * arena never grows.  -EINVAL when initial > max_size or a fixed region
 * would be too small to hold one block; -ENOMEM when mmap fails. */
int fib__arena_init(fib__arena *a, size_t initial, size_t max_size, int fixed);

/* Unmap every region.  Blocks still live are gone with them; the caller
 * must hold no pointer into the arena.  Safe on a corrupted arena: it
 * reads only the region list. */
void fib__arena_destroy(fib__arena *a);

/* Allocate n bytes (n may be 0), 16-byte aligned, contents unspecified. */
int fib__arena_alloc(fib__arena *a, size_t n, void **out);

/* Give p's block back.  -EINVAL when p's header does not say "in use"
 * (a best-effort guard against double frees, not a promise). */
int fib__arena_free(fib__arena *a, void *p);

/* Resize p's block in place to hold n bytes: shrinking always works (the
 * tail goes back to the free space when it is big enough to be a block);
 * growing works when the next block is free and together they are big
 * enough.  -ENOMEM otherwise, with the block unchanged. */
int fib__arena_resize(fib__arena *a, void *p, size_t n);

/* Resize in place if possible; otherwise, unless in_place_only, allocate a
 * new block, copy min(old capacity, n) bytes, free the old one and store
 * the new pointer in *pp.  On failure *pp and its block are unchanged. */
int fib__arena_realloc(fib__arena *a, void **pp, size_t n, int in_place_only);

/* The payload capacity of p's block (>= what was asked for). */
size_t fib__arena_usable(const void *p);

/* The fixed region's extent, for io_uring buffer registration: every
 * block of a fixed arena lies inside [*base, *base + *len).  -EINVAL for
 * an arena that is not fixed. */
int fib__arena_fixed_region(const fib__arena *a, void **base, size_t *len);

/* Walk every structure and check it: regions tile into blocks exactly,
 * boundary tags agree, no two free blocks touch, every free block is in
 * the right bin exactly once and nothing else is, the bitmap matches the
 * bins, and used/mapped/nregions match the walk.  Reads only memory the
 * walk has proven to be inside a region, so a corrupted arena makes it
 * fail, not crash.  0 when consistent, -EFAULT when not, -ENOMEM when the
 * scratch space for the check cannot be allocated. */
int fib__arena_validate(const fib__arena *a);

/* Test hook: toggle a deliberate corruption (calling it twice with the
 * same arguments undoes it), so tests can prove that validate() notices.
 *   SIZE  flips a bit of p's block size;
 *   PREV  flips a bit of p's boundary tag (the previous block's size);
 *   LINK  flips a bit of the free-list link of the free block after p
 *         (-EINVAL when the next block is not free);
 *   USED  flips a bit of the arena's used counter.
 * Between the two calls, only validate() and destroy() are safe. */
enum {
    FIB__ARENA_CORRUPT_SIZE = 0,
    FIB__ARENA_CORRUPT_PREV = 1,
    FIB__ARENA_CORRUPT_LINK = 2,
    FIB__ARENA_CORRUPT_USED = 3
};
int fib__arena_debug_corrupt(fib__arena *a, void *p, int how);

#endif /* FIB_ARENA_H */
