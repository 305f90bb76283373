"""Admission control: how many calls the gateway holds, how long a call may have queued, and each caller's share.

Two places decide, in this order:

1. **Intake** — as grpc.aio takes a call from gRPC core, before its request is
   read (``Intake.take``, called by ``gateway.services.base.Router``).  grpc.aio
   takes calls one at a time, in arrival order, and only when the event loop
   gets round to it; a burst waits in gRPC core's queue, where nothing of ours
   can see it.  So the intake reads core's own call counters (channelz: calls
   started, and finished), a few times a second at most while calls arrive,
   and works out for each call taken where it stood when core received it:

   * ``max_concurrent_rpcs`` — how many calls the gateway held (queued in
     core, or in a handler, or waiting for the ledger) when this one arrived;
     at or beyond it, the call is refused, as a bounded queue refuses its
     newcomer;
   * ``max_queue_wait_ms`` — how long it has waited in front of the handler;
     beyond it, the call is refused, so that a standing queue drains instead
     of every later call waiting behind it.

   A refused call gets a prebuilt answer without its request being read: a
   refusal costs a fraction of a call (docs/performance.md).
2. **Per caller** — in the handler, once the caller is known from its client
   certificate (``Admission.enter``): ``max_inflight_per_caller`` calls in
   flight for one caller, so one province's burst cannot starve the others,
   and a token bucket (``rate_per_caller_per_s``, burst
   ``rate_burst_per_caller``).

Every refusal is ``RESOURCE_EXHAUSTED``/``OVERLOADED`` with a message the clerk
can read and retry advice (``ErrorInfo.metadata["retry_after_ms"]`` and a
``google.rpc.RetryInfo``).  A refused call changes nothing, so it is retried
with the same ``request_id``.  gRPC's own ``maximum_concurrent_rpcs`` would
answer a bare ``RESOURCE_EXHAUSTED`` with no reason, so it is not used.

Runs on the event loop only (no locks).
"""
from __future__ import annotations

import collections
import json
import logging
import time
from typing import Callable

from core.errors import YidiError

log = logging.getLogger("yidi.admission")

# Intake.take's answers: admit, or the reason for refusing.
ADMIT, TOO_MANY, TOO_LONG = 0, 1, 2


def overloaded(why: str, retry_after_ms: int) -> YidiError:
    return YidiError("OVERLOADED", f"{why}，本次请求未处理。请 {retry_after_ms} 毫秒后使用相同的请求ID重试。",
                     retry_after_ms=retry_after_ms)


class Intake:
    """Where each call stood when gRPC core received it, worked out from core's call counters.

    ``read_counts()`` gives core's (calls started, calls finished) so far; it
    is read as a call is taken if the last reading is ``sample_ms`` old or
    more (a reading costs ~170 µs), so while calls queue there is a reading
    every few ms.  Core numbers calls as they arrive and grpc.aio takes them
    in that order, so the n-th call taken is core's n-th call: it arrived
    between the last reading that had not counted it and the first that had,
    and when and with how many calls held is interpolated between the two
    (to within a reading's interval).  Every call the server takes must pass
    here (health and reflection too) or the numbering drifts; it is set
    right whenever a reading shows the call being taken alone, and whenever
    it would number a call core has not started.
    """

    def __init__(self, max_calls: int, max_wait_ms: float, sample_ms: float, read_counts: Callable[[], tuple[int, int]],
                 observe_wait: Callable[[float], None] = lambda seconds: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls = max_calls or 1 << 62
        self.max_wait_s = max_wait_ms / 1000 if max_wait_ms else float("inf")
        self.sample_s = sample_ms / 1000
        self._read = read_counts
        self._observe_wait = observe_wait
        self._clock = clock
        self._readings: collections.deque[tuple[float, int, int]] = collections.deque()  # (at, started, finished)
        self.taken = 0
        self._offset = 0       # core's number of a call minus its number here
        self.refused = [0, 0, 0]
        self._logged_at = 0.0

    def take(self, refusable: bool = True) -> int:
        """One call taken from core (in arrival order): ADMIT, or TOO_MANY / TOO_LONG to refuse it.

        A call that is not ``refusable`` (health, reflection) is counted and always admitted.
        """
        now = self._clock()
        self.taken += 1
        readings = self._readings
        if not readings or now - readings[-1][0] >= self.sample_s:
            started, finished = self._read()
            readings.append((now, started, finished))
            if started - finished == 1 or self.taken + self._offset > started:
                self._offset = started - self.taken
        if not refusable:
            return ADMIT
        number = self.taken + self._offset
        while len(readings) > 1 and readings[1][1] < number:
            readings.popleft()
        held, arrived = self._arrival(number, now)
        waited_s = now - arrived
        self._observe_wait(waited_s)
        verdict = TOO_MANY if held >= self.max_calls else TOO_LONG if waited_s > self.max_wait_s else ADMIT
        if verdict:
            self._refused(verdict, now, held, waited_s)
        return verdict

    def _arrival(self, number: int, now: float) -> tuple[int, float]:
        """(calls held, time) when core's call ``number`` arrived, between the readings before and after it."""
        readings = self._readings
        at, started, finished = readings[0]
        if started >= number:      # it arrived before the oldest reading kept: as of that reading
            return number - 1 - finished, at
        if len(readings) == 1:     # it arrived after the newest reading: the calls held then, and now
            return number - 1 - finished, now
        at_after, started_after, finished_after = readings[1]
        share = (number - started) / (started_after - started)   # arrivals between two readings: evenly spread
        return (number - 1 - round(finished + share * (finished_after - finished)),
                at + share * (at_after - at))

    def _refused(self, verdict: int, now: float, held: int, waited_s: float) -> None:
        """Counted; logged at most once a second (a burst is refused at thousands of calls a second)."""
        self.refused[verdict] += 1
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            log.warning("overloaded: %d calls refused since start (%d with %d or more calls held, %d after waiting "
                        "over %.0f ms); the last had %d calls ahead of it and had waited %.0f ms",
                        self.refused[TOO_MANY] + self.refused[TOO_LONG], self.refused[TOO_MANY], self.max_calls,
                        self.refused[TOO_LONG], self.max_wait_s * 1000, held, waited_s * 1000)

    def refusal(self, verdict: int, retry_after_ms: int) -> YidiError:
        if verdict == TOO_MANY:
            return overloaded(f"结算网关受理中的请求已达上限 {self.max_calls}", retry_after_ms)
        return overloaded(f"结算网关排队已超过 {self.max_wait_s * 1000:.0f} 毫秒", retry_after_ms)


def channelz_counts(server_ids_before: set[int]) -> Callable[[], tuple[int, int]]:
    """gRPC core's (calls started, calls finished) of the one server made since ``server_ids_before`` was read.

    Read through grpcio's channelz entry (the one the grpcio-channelz service
    serves): core counts a call as started when its headers arrive, before
    any of our code can see it.
    """
    from grpc._cython import cygrpc

    new = channelz_server_ids() - server_ids_before
    if len(new) != 1:
        raise RuntimeError(f"cannot tell this gateway's gRPC server among channelz servers {sorted(new)}")
    server_id = new.pop()
    get, loads = cygrpc.channelz_get_server, json.loads

    def read() -> tuple[int, int]:
        data = loads(get(server_id))["server"]["data"]
        return (int(data.get("callsStarted", 0)),
                int(data.get("callsSucceeded", 0)) + int(data.get("callsFailed", 0)))

    read()
    return read


def channelz_server_ids() -> set[int]:
    from grpc._cython import cygrpc

    ids: set[int] = set()
    start = 0
    while True:
        page = json.loads(cygrpc.channelz_get_servers(start))
        for server in page.get("server", ()):
            ids.add(int(server["ref"]["serverId"]))
        if page.get("end", True) or not ids:
            return ids
        start = max(ids) + 1


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Admission:
    """Per caller, in the handler: calls in flight, and a token bucket."""

    def __init__(self, max_per_caller: int, rate_per_s: float, burst: int,
                 retry_after_ms: int = 200, clock=time.monotonic) -> None:
        self.max_per_caller = max_per_caller
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.retry_after_ms = retry_after_ms
        self._clock = clock
        self.inflight: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0

    def enter(self, caller: str) -> str:
        """Admit one call of caller (returns the ticket for ``leave``), or raise OVERLOADED."""
        mine = self.inflight.get(caller, 0)
        if mine >= self.max_per_caller:
            self._refuse(f"调用方 {caller} 的在途请求已达上限 {self.max_per_caller}", self.retry_after_ms)
        if self.rate_per_s > 0:
            self._take_token(caller)
        self.inflight[caller] = mine + 1
        return caller

    def leave(self, caller: str) -> None:
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
        raise overloaded(why, retry_after_ms)
