# The collector's pause clock (gateway/operations/gcwatch.py), called by CPython at the start and the end of each
# collection (gc.callbacks).  In C because a Python callback may hand the GIL to another thread when it is
# entered, and that thread's turn (the ledger writer's, gRPC's) would be counted in the pause; here the clocks are
# read before anything can run in between, so a pause is the collection and nothing else.

from posix.fcntl cimport O_RDONLY, open as c_open
from posix.time cimport CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID, clock_gettime, timespec
from posix.unistd cimport close as c_close, read as c_read

cdef extern from "<stdlib.h>" nogil:
    long long strtoll(const char* s, char** end, int base)


cdef inline int64_t _ns(int clock) noexcept:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int64_t _run_queue_wait_ns() noexcept:
    """How long the calling thread has waited for a core since it started (Linux schedstat: "cpu_ns wait_ns
    slices"); 0 where the kernel does not keep it."""
    cdef char buf[96]
    cdef char* end
    cdef int fd = c_open(b"/proc/thread-self/schedstat", O_RDONLY)
    if fd < 0:
        return 0
    cdef ssize_t n = c_read(fd, buf, sizeof(buf) - 1)
    c_close(fd)
    if n <= 0:
        return 0
    buf[n] = 0
    strtoll(buf, &end, 10)
    return strtoll(end, NULL, 10)


cdef class GcClock:
    """A gc.callbacks entry: at each collection's end, ``on_pause(generation, wall_ms, cpu_ms, waited_ms, collected,
    uncollectable)`` with the collection's wall time, the collecting thread's CPU time and its wait for a core."""

    cdef object on_pause
    cdef int64_t _wall, _cpu, _waited

    def __init__(self, on_pause):
        self.on_pause = on_pause

    def __call__(self, str phase, dict info):
        cdef int64_t wall, cpu, waited
        if phase == "start":
            self._wall = _ns(CLOCK_MONOTONIC)
            self._cpu = _ns(CLOCK_THREAD_CPUTIME_ID)
            self._waited = _run_queue_wait_ns()
            return
        # read in the reverse order, inside the wall-clock interval: neither the CPU time nor the wait can
        # exceed the wall time
        waited = _run_queue_wait_ns() - self._waited
        cpu = _ns(CLOCK_THREAD_CPUTIME_ID) - self._cpu
        wall = _ns(CLOCK_MONOTONIC) - self._wall
        self.on_pause(info["generation"], wall / 1e6, cpu / 1e6, waited / 1e6, info["collected"],
                      info["uncollectable"])
