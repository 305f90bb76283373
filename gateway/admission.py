"""Admission control: how many calls a caller (and everyone together) may have in flight, and how fast.

gRPC's own ``maximum_concurrent_rpcs`` answers the excess with a bare
``RESOURCE_EXHAUSTED`` or ``CANCELLED`` and no reason; this answers it with
``RESOURCE_EXHAUSTED``/``OVERLOADED``, a message the clerk can read and
retry advice (``ErrorInfo.metadata["retry_after_ms"]`` and a
``google.rpc.RetryInfo``), before any work is done.  A refused call changes
nothing, so it is retried with the same ``request_id``.

Three limits, all in ``Config``:

* ``max_concurrent_rpcs`` — Yidi RPCs in flight on the whole gateway;
* ``max_inflight_per_caller`` — in flight for one caller, so one province's
  burst cannot starve the others;
* ``rate_per_caller_per_s`` with a burst of ``rate_burst_per_caller`` — a
  token bucket per caller.

Runs on the event loop only (no locks).
"""
from __future__ import annotations

import time

from core.errors import YidiError


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Admission:
    def __init__(self, max_total: int, max_per_caller: int, rate_per_s: float, burst: int,
                 retry_after_ms: int = 200, clock=time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_caller = max_per_caller
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.retry_after_ms = retry_after_ms
        self._clock = clock
        self.total = 0
        self.inflight: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0

    def enter(self, caller: str) -> str:
        """Admit one call of caller (returns the ticket for ``leave``), or raise OVERLOADED."""
        mine = self.inflight.get(caller, 0)
        if self.total >= self.max_total:
            self._refuse(f"结算网关当前在途请求已达上限 {self.max_total}", self.retry_after_ms)
        if mine >= self.max_per_caller:
            self._refuse(f"调用方 {caller} 的在途请求已达上限 {self.max_per_caller}", self.retry_after_ms)
        if self.rate_per_s > 0:
            self._take_token(caller)
        self.inflight[caller] = mine + 1
        self.total += 1
        return caller

    def leave(self, caller: str) -> None:
        self.total -= 1
        left = self.inflight[caller] - 1
        if left:
            self.inflight[caller] = left
        else:
            del self.inflight[caller]

    def _take_token(self, caller: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait_ms = max(1, int((1.0 - bucket.tokens) / self.rate_per_s * 1000) + 1)
            self._refuse(f"调用方 {caller} 的请求速率超过每秒 {self.rate_per_s:g} 笔", wait_ms)
        bucket.tokens -= 1.0

    def _refuse(self, why: str, retry_after_ms: int) -> None:
        self.refused += 1
        raise YidiError("OVERLOADED", why=why, retry_after_ms=retry_after_ms)
