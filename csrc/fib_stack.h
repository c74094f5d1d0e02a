/*
 * fib_stack.h -- small root data-stack chunks for worker greenlets.
 *
 * Why this exists
 * - Since CPython 3.11, Python frames live in per-thread "data stack"
 *   chunks.  greenlet gives every greenlet its own chain, starting empty, so
 *   the first Python call in a new greenlet makes CPython allocate a 16 KiB
 *   chunk with mmap().  A parked fiber therefore pins at least one 4 KiB
 *   page, and starting a greenlet costs a system call.
 * - Most fibers park only a frame or two deep.  So before a worker greenlet
 *   runs any Python code we hand it a small root chunk carved from a slab.
 *   Small chunks share pages, and nothing calls mmap().  If a fiber needs
 *   more, CPython chains an ordinary 16 KiB chunk after ours and frees it
 *   when the calls return, exactly as it would otherwise.
 * - CPython and greenlet free chunks with the arena allocator's free(), with
 *   the chunk's size.  We wrap that allocator: a free of exactly
 *   FIB__ROOT_CHUNK_SIZE bytes (a size no arena or ordinary chunk has) is one
 *   of ours and goes back to our free list; everything else is passed on.
 * - All of this runs with the GIL held, so the free list needs no lock.
 * - Only for CPython 3.11 to 3.13 (the layout of _PyStackChunk and the
 *   thread-state fields is checked against those); elsewhere the functions
 *   do nothing.
 */
#ifndef FIB_STACK_H
#define FIB_STACK_H

#include <Python.h>

/* Returns 0, or -1 with a Python exception set. */
int fib__stack_install(void);
/* Gives the calling (fresh) greenlet a small root chunk if it has none. */
void fib__stack_seed(void);
/* For tests: chunks handed out and not yet returned. */
Py_ssize_t fib__stack_in_use(void);

#endif /* FIB_STACK_H */
