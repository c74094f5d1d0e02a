/* fib_heap.c -- see fib_heap.h for the design. */
#include "fib_heap.h"

#include <errno.h>
#include <stdlib.h>

static inline int node_less(const fib__timer_node *a, const fib__timer_node *b)
{
    if (a->deadline != b->deadline)
        return a->deadline < b->deadline;
    return a->seq < b->seq;
}

static inline void place(fib__heap *h, size_t i, fib__timer_node *n)
{
    h->nodes[i] = n;
    n->index = i + 1;
}

static void sift_up(fib__heap *h, size_t i, fib__timer_node *n)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        fib__timer_node *p = h->nodes[parent];
        if (!node_less(n, p))
            break;
        place(h, i, p);
        i = parent;
    }
    place(h, i, n);
}

static void sift_down(fib__heap *h, size_t i, fib__timer_node *n)
{
    size_t len = h->len;
    for (;;) {
        size_t child = 2 * i + 1;
        fib__timer_node *c;
        if (child >= len)
            break;
        c = h->nodes[child];
        if (child + 1 < len && node_less(h->nodes[child + 1], c)) {
            child++;
            c = h->nodes[child];
        }
        if (!node_less(c, n))
            break;
        place(h, i, c);
        i = child;
    }
    place(h, i, n);
}

void fib__heap_init(fib__heap *h)
{
    h->nodes = NULL;
    h->len = 0;
    h->cap = 0;
    h->next_seq = 0;
}

void fib__heap_destroy(fib__heap *h)
{
    size_t i;
    for (i = 0; i < h->len; i++)
        h->nodes[i]->index = 0;
    free(h->nodes);
    fib__heap_init(h);
}

int fib__heap_push(fib__heap *h, fib__timer_node *n, int64_t deadline)
{
    if (h->len == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        fib__timer_node **nn;
        if (ncap > ((size_t)-1) / sizeof(*nn))
            return -ENOMEM;
        nn = (fib__timer_node **)realloc(h->nodes, ncap * sizeof(*nn));
        if (nn == NULL)
            return -ENOMEM;
        h->nodes = nn;
        h->cap = ncap;
    }
    n->deadline = deadline;
    n->seq = h->next_seq++;
    h->len++;
    sift_up(h, h->len - 1, n);
    return 0;
}

fib__timer_node *fib__heap_pop(fib__heap *h)
{
    fib__timer_node *top;
    if (h->len == 0)
        return NULL;
    top = h->nodes[0];
    fib__heap_remove(h, top);
    return top;
}

int fib__heap_remove(fib__heap *h, fib__timer_node *n)
{
    size_t i;
    fib__timer_node *last;
    if (n->index == 0 || n->index > h->len || h->nodes[n->index - 1] != n)
        return 0;
    i = n->index - 1;
    n->index = 0;
    h->len--;
    if (i == h->len)
        return 1;
    /* Move the last node into the hole and restore the heap property in
     * whichever direction it is violated. */
    last = h->nodes[h->len];
    if (i > 0 && node_less(last, h->nodes[(i - 1) / 2]))
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
    return 1;
}
