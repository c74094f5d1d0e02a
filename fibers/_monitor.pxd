# Declarations for the blocking-call detector and the tick accounting
# (fibers/_monitor.pxi, csrc/fib_monitor.h).  Included by _core.pxd, so
# that they sit beside their code while _core stays one compilation unit.

cdef extern from "fib_monitor.h":
    ctypedef struct fib__mon_slot:
        unsigned long thread_id
        void *owner
        uint64_t serial
    ctypedef struct fib__mon_event:
        int kind
        uint64_t serial
        fib__mon_slot *slot
        unsigned long thread_id
        int64_t start
        int64_t ns
        int exact
    ctypedef void (*fib__mon_fn)(const fib__mon_event *ev) noexcept nogil
    enum:
        FIB__MON_DETECT
        FIB__MON_ENDED
        FIB__MON_ONGOING
        FIB__TICK_WINDOW
        FIB__TICK_BOUNDS
    const int64_t *fib__tick_bounds_ns
    ctypedef struct fib__tick_stats:
        uint64_t count
        uint64_t pump_waits
        int64_t sum_ns
        uint64_t *buckets
        int64_t *window

    void fib__mon_register(fib__mon_slot *s, unsigned long thread_id,
                           void *owner)
    void fib__mon_unregister(fib__mon_slot *s)
    int fib__mon_current(fib__mon_slot *s, uint64_t serial,
                         int64_t start) nogil
    int fib__monitor_start(int64_t threshold_ns, fib__mon_fn fn) nogil
    int fib__monitor_stop(int64_t wait_ns) nogil
    int fib__monitor_stopping() nogil
    int fib__monitor_running() nogil

    void fib__tick_begin(fib__tick_stats *t, fib__mon_slot *m)
    void fib__tick_end(fib__tick_stats *t)
    void fib__tick_wait_begin(fib__tick_stats *t, fib__mon_slot *m)
    void fib__tick_wait_end(fib__tick_stats *t, fib__mon_slot *m)
    void fib__tick_leave(fib__tick_stats *t, fib__mon_slot *m)
