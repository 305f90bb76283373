"""The garbage collector: long-lived state frozen after load, and every pause measured.

The index lives in C arrays, so the objects a load leaves behind are few, but
whatever is there (reference dictionaries, the engine, gRPC's own objects) is
moved to the permanent generation with ``gc.freeze()`` once the state is
built, so no collection walks it again.  ``pauses`` records each collection's
duration, for the metrics endpoint and the benchmark report (target: no pause
over 10 ms).
"""
from __future__ import annotations

import gc
import time

PAUSE_BUCKETS_MS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 500)


class GcWatch:
    def __init__(self) -> None:
        self.max_pause_ms = 0.0
        self.pause_total_ms = 0.0
        self.collections = [0, 0, 0]
        self.pause_buckets = [0] * (len(PAUSE_BUCKETS_MS) + 1)
        self._start = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def freeze(self) -> None:
        """After the state is built: collect once, then keep everything alive now out of every future collection."""
        gc.collect()
        gc.freeze()

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._start) * 1000
        self.collections[info["generation"]] += 1
        self.max_pause_ms = max(self.max_pause_ms, pause_ms)
        self.pause_total_ms += pause_ms
        for i, bound in enumerate(PAUSE_BUCKETS_MS):
            if pause_ms <= bound:
                self.pause_buckets[i] += 1
                break
        else:
            self.pause_buckets[-1] += 1


WATCH = GcWatch()
