"""The garbage collector: long-lived state frozen after load, young collections rarer, and every pause measured.

The index lives in C arrays, so the objects a load leaves behind are few, but
whatever is there (reference dictionaries, the engine, gRPC's own objects) is
moved to the permanent generation with ``gc.freeze()`` once the state is
built, so no collection walks it again.  What a settlement changes after
that holds nothing the collector tracks (docs/performance.md, Garbage
collection), so every collection under load walks about the objects of the
calls in flight, whichever generation it collects: a collection's length
does not depend on how often it runs, so the young one runs every
``YOUNG_THRESHOLD`` allocations instead of CPython's 700.  ``GcWatch``
records each collection's duration, in wall and CPU time, overall and by
generation, with the objects each collection freed, for the metrics
endpoint, the benchmark report and ``make soak`` (target: no pause over
10 ms).
"""
from __future__ import annotations

import bisect
import gc
import time

PAUSE_BUCKETS_MS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 500)
# Allocations between young collections once the state is frozen (CPython's default: 700); the older
# generations keep CPython's 10 and 10, so each runs 14 times less often too.
YOUNG_THRESHOLD = 10_000


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
        # The longest pause in this thread's CPU time: a pause in wall time also holds whatever time the OS gave
        # the cores to other processes meanwhile (the collector holds the GIL throughout).
        self.max_pause_cpu_ms_by_generation = [0.0, 0.0, 0.0]
        self.pause_cpu_total_ms_by_generation = [0.0, 0.0, 0.0]
        self._start = self._start_cpu = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def freeze(self) -> None:
        """After the state is built: collect once, keep everything alive now out of every future collection, and
        collect the young generation every YOUNG_THRESHOLD allocations from now on."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start, self._start_cpu = time.perf_counter(), time.thread_time()
            return
        # CPU time read inside the wall-clock interval (started after it, ended before it): a pause's CPU time
        # can then never exceed its wall time.
        cpu_ms = (time.thread_time() - self._start_cpu) * 1000
        pause_ms = (time.perf_counter() - self._start) * 1000
        generation = info["generation"]
        self.max_pause_cpu_ms_by_generation[generation] = max(self.max_pause_cpu_ms_by_generation[generation], cpu_ms)
        self.pause_cpu_total_ms_by_generation[generation] += cpu_ms
        self.collections[generation] += 1
        self.collected[generation] += info["collected"]
        self.uncollectable[generation] += info["uncollectable"]
        self.max_pause_ms = max(self.max_pause_ms, pause_ms)
        self.pause_total_ms += pause_ms
        self.max_pause_ms_by_generation[generation] = max(self.max_pause_ms_by_generation[generation], pause_ms)
        self.pause_total_ms_by_generation[generation] += pause_ms
        bucket = bisect.bisect_left(PAUSE_BUCKETS_MS, pause_ms)   # the first bound >= the pause (le buckets)
        self.pause_buckets[bucket] += 1
        self.pause_buckets_by_generation[generation][bucket] += 1


WATCH = GcWatch()
