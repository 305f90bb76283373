"""The garbage collector: long-lived state frozen after load, older collections rarer, every pause measured.

The index lives in C arrays, so the objects a load leaves behind are few, but
whatever is there (reference dictionaries, the engine, gRPC's own objects) is
moved to the permanent generation with ``gc.freeze()`` once the state is
built, so no collection walks it again.  What a settlement changes after
that holds nothing the collector tracks (docs/performance.md, Garbage
collection).  Under load a young collection walks what was allocated since
the last one and frees gRPC's garbage (a cycle of 5 objects per call), so
it stays short at CPython's threshold of 700; an older collection walks the
calls in flight however seldom it runs, so generations 1 and 2 are collected
every ``OLDER_EVERY`` collections of the generation below instead of every
10.  ``GcWatch`` records each collection's duration, in wall and CPU time,
overall and by generation, with the objects each collection freed, for the
metrics endpoint, the benchmark report and ``make soak`` (target: no pause
over 10 ms).
"""
from __future__ import annotations

import bisect
import gc

from core import GcClock

PAUSE_BUCKETS_MS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 500)
# Once the state is frozen: a young collection every YOUNG_THRESHOLD allocations (net of deallocations, as
# CPython counts them), a generation-1 collection every OLDER_EVERY young ones, a full one every OLDER_EVERY of
# those (CPython: 700, 10, 10).
YOUNG_THRESHOLD = 700
OLDER_EVERY = 100


class GcWatch:
    """Every collection's pause, overall and by generation (0, 1, 2), and the objects each generation freed."""

    def __init__(self) -> None:
        self.max_pause_ms = 0.0
        self.pause_total_ms = 0.0
        self.collections = [0, 0, 0]
        self.pause_buckets = [0] * (len(PAUSE_BUCKETS_MS) + 1)
        self.max_pause_ms_by_generation = [0.0, 0.0, 0.0]
        self.pause_total_ms_by_generation = [0.0, 0.0, 0.0]
        self.pause_buckets_by_generation = [[0] * (len(PAUSE_BUCKETS_MS) + 1) for _ in range(3)]
        self.collected = [0, 0, 0]        # objects freed, by the generation collected
        self.uncollectable = [0, 0, 0]
        # The pauses in the collecting thread's CPU time: a pause in wall time also holds whatever time the OS gave
        # the cores to other processes meanwhile, and any time the thread was blocked (off a core, not waiting
        # for one).
        self.max_pause_cpu_ms_by_generation = [0.0, 0.0, 0.0]
        self.pause_cpu_total_ms_by_generation = [0.0, 0.0, 0.0]
        # And what of the wall time was the collecting thread waiting for a core (Linux's run-queue delay): the
        # longest pause less that wait is the pause as the gateway would see it with the cores to itself.
        self.pause_waited_total_ms_by_generation = [0.0, 0.0, 0.0]
        self.max_pause_unwaited_ms_by_generation = [0.0, 0.0, 0.0]
        # The clocks are read in C at each collection's start and end (core.GcClock): a Python callback could hand
        # the GIL to another thread as it is entered, and that thread's turn would be counted in the pause.
        self._clock = GcClock(self._record)

    def install(self) -> None:
        gc.callbacks.append(self._clock)

    def uninstall(self) -> None:
        gc.callbacks.remove(self._clock)

    def freeze(self) -> None:
        """After the state is built: collect once, keep everything alive now out of every future collection, and
        collect the older generations every OLDER_EVERY collections of the one below from now on."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, OLDER_EVERY, OLDER_EVERY)

    def _record(self, generation: int, pause_ms: float, cpu_ms: float, waited_ms: float, collected: int,
                uncollectable: int) -> None:
        """One collection, as GcClock read it: its wall time, the collecting thread's CPU time and its wait for a
        core (both read inside the wall-clock interval, so neither exceeds it), and the objects it freed."""
        self.max_pause_cpu_ms_by_generation[generation] = max(self.max_pause_cpu_ms_by_generation[generation], cpu_ms)
        self.pause_cpu_total_ms_by_generation[generation] += cpu_ms
        self.pause_waited_total_ms_by_generation[generation] += waited_ms
        self.max_pause_unwaited_ms_by_generation[generation] = max(
            self.max_pause_unwaited_ms_by_generation[generation], pause_ms - waited_ms)
        self.collections[generation] += 1
        self.collected[generation] += collected
        self.uncollectable[generation] += uncollectable
        self.max_pause_ms = max(self.max_pause_ms, pause_ms)
        self.pause_total_ms += pause_ms
        self.max_pause_ms_by_generation[generation] = max(self.max_pause_ms_by_generation[generation], pause_ms)
        self.pause_total_ms_by_generation[generation] += pause_ms
        bucket = bisect.bisect_left(PAUSE_BUCKETS_MS, pause_ms)   # the first bound >= the pause (le buckets)
        self.pause_buckets[bucket] += 1
        self.pause_buckets_by_generation[generation][bucket] += 1


WATCH = GcWatch()
