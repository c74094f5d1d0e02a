/* fib_stack.c -- see fib_stack.h for why. */
#include "fib_stack.h"

#include <stdlib.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#define FIB__HAVE_DATASTACK 1
#endif

#ifdef FIB__HAVE_DATASTACK

/* 1 KiB holds ~125 object slots: a few ordinary frames. */
#define FIB__ROOT_CHUNK_SIZE 1024
#define FIB__SLAB_CHUNKS 64

typedef struct free_chunk {
    struct free_chunk *next;
} free_chunk;

static PyObjectArenaAllocator prev_arena;
static int installed = 0;
static free_chunk *free_list = NULL;
static Py_ssize_t in_use = 0;

static void *arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return prev_arena.alloc(prev_arena.ctx, size);
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size == FIB__ROOT_CHUNK_SIZE && ptr != NULL) {
        free_chunk *c = (free_chunk *)ptr;
        c->next = free_list;
        free_list = c;
        in_use--;
        return;
    }
    prev_arena.free(prev_arena.ctx, ptr, size);
}

int fib__stack_install(void)
{
    PyObjectArenaAllocator mine;
    if (installed)
        return 0;
    PyObject_GetArenaAllocator(&prev_arena);
    if (prev_arena.alloc == NULL || prev_arena.free == NULL)
        return 0; /* nothing to wrap: leave CPython alone */
    mine.ctx = NULL;
    mine.alloc = arena_alloc;
    mine.free = arena_free;
    PyObject_SetArenaAllocator(&mine);
    installed = 1;
    return 0;
}

static _PyStackChunk *take_chunk(void)
{
    free_chunk *c = free_list;
    if (c == NULL) {
        /* Slabs are never returned to the system: their chunks are reused
         * by later greenlets, and the count is bounded by how many worker
         * greenlets ever lived at once. */
        char *slab = (char *)malloc((size_t)FIB__ROOT_CHUNK_SIZE * FIB__SLAB_CHUNKS);
        int i;
        if (slab == NULL)
            return NULL;
        for (i = FIB__SLAB_CHUNKS - 1; i >= 0; i--) {
            free_chunk *f = (free_chunk *)(slab + (size_t)i * FIB__ROOT_CHUNK_SIZE);
            f->next = free_list;
            free_list = f;
        }
        c = free_list;
    }
    free_list = c->next;
    in_use++;
    return (_PyStackChunk *)c;
}

void fib__stack_seed(void)
{
    PyThreadState *ts = PyThreadState_Get();
    _PyStackChunk *chunk;
    if (!installed || ts->datastack_chunk != NULL)
        return;
    chunk = take_chunk();
    if (chunk == NULL)
        return; /* CPython will allocate its own chunk as usual */
    chunk->previous = NULL;
    chunk->size = FIB__ROOT_CHUNK_SIZE;
    chunk->top = 0;
    ts->datastack_chunk = chunk;
    /* Like CPython's own root chunks, skip data[0] so the chunk is never
     * popped (and freed) while the greenlet lives. */
    ts->datastack_top = &chunk->data[1];
    ts->datastack_limit = (PyObject **)((char *)chunk + FIB__ROOT_CHUNK_SIZE);
}

Py_ssize_t fib__stack_in_use(void)
{
    return in_use;
}

#else /* no per-thread data stack: frames are heap objects */

int fib__stack_install(void) { return 0; }
void fib__stack_seed(void) {}
Py_ssize_t fib__stack_in_use(void) { return 0; }

#endif
