"""Admission control: calls in flight, how long a call may have queued, and each caller's share.

Two places decide, in this order:

1. **Intake** — as grpc.aio takes each call from gRPC core, before its request
   is read (``Intake.take``, from ``gateway.transport.services.base.Router``):

   * ``max_concurrent_rpcs`` — Yidi calls in flight in their handlers (the
     handler counts them exactly, ``Admission``; the intake refuses the call
     that would go beyond, cheaply, before its request is read);
   * ``max_queue_wait_ms`` — how long the call has waited in front of the
     handler.  grpc.aio takes calls one at a time, in arrival order, only
     when the event loop gets round to it, so a burst waits in gRPC core's
     queue, where no count of ours sees it (docs/performance.md: 4,000 calls
     waited up to 2.5 s there while the handlers held a dozen).  The wait is
     measured by a probe: while calls arrive, the gateway sends itself a call
     through a listener of its own (an abstract Unix socket) every
     ``overload_probe_ms`` while the probes find a queue, and every fifth
     interval while they do not, and notes when it sent each.  The probes
     queue in the same line as everyone else, so a call taken before a probe
     arrived before it: it has waited at least since that probe was sent.
     Beyond the limit the call is refused, so that a standing queue drains
     instead of every later call waiting behind it; the calls admitted are
     the ones that have not waited long.

   A refused call gets a prebuilt answer without its request being read (a
   fraction of a call's cost, docs/performance.md).
2. **In the handler**, once the caller is known from its client certificate
   (``Admission.enter``): the exact count of calls in flight, and per caller
   ``max_inflight_per_caller`` calls in flight, so one province's burst
   cannot starve the others, and a token bucket (``rate_per_caller_per_s``,
   burst ``rate_burst_per_caller``).

Every refusal is ``RESOURCE_EXHAUSTED``/``OVERLOADED`` with a message the clerk
can read and retry advice (``ErrorInfo.metadata["retry_after_ms"]`` and a
``google.rpc.RetryInfo``).  A refused call changes nothing, so it is retried
with the same ``request_id``.  gRPC's own ``maximum_concurrent_rpcs`` would
answer a bare ``RESOURCE_EXHAUSTED`` with no reason, so it is not used.

Runs on the event loop only (no locks).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from typing import Callable

import grpc

from core.errors import YidiError

log = logging.getLogger("yidi.admission")

# Intake.take's answers: admit, or the reason for refusing.
ADMIT, TOO_MANY, TOO_LONG = 0, 1, 2
PROBE = "/yidi.internal.Intake/Probe"    # the probes' method: answered by the router, never by a service
PROBE_KEY = "yidi-queue-probe"
QUIET_PROBES = 5     # probe intervals between probes while they find no queue


# The ticket of a forwarded call (no caller's is empty): counted in the node's calls in flight, not the caller's.
FORWARDED = ""


def overloaded(why: str, retry_after_ms: int) -> YidiError:
    return YidiError("OVERLOADED", why=why, retry_after_ms=retry_after_ms)


class Admission:
    """In the handler: calls in flight, on the whole and per caller, and each caller's token bucket."""

    def __init__(self, max_total: int, max_per_caller: int, rate_per_s: float, burst: int,
                 retry_after_ms: int = 200, clock=time.monotonic) -> None:
        self.max_total = max_total or 1 << 62
        self.max_per_caller = max_per_caller
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.retry_after_ms = retry_after_ms
        self._clock = clock
        self.total = 0
        self.inflight: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0

    def enter(self, caller: str, forwarded: bool = False) -> str:
        """Admit one call of caller (returns the ticket for ``leave``), or raise OVERLOADED.  ``forwarded``: a call
        another gateway node sent on, held to the caller's limits there (the node the client called): here it
        counts toward this node's calls in flight only, so a caller's call is counted once, not at both nodes."""
        mine = self.inflight.get(caller, 0)
        if self.total >= self.max_total:
            self._refuse(in_flight_message(self.max_total), self.retry_after_ms)
        if forwarded:
            self.total += 1
            return FORWARDED
        if mine >= self.max_per_caller:
            self._refuse(f"调用方 {caller} 的在途请求已达上限 {self.max_per_caller}", self.retry_after_ms)
        if self.rate_per_s > 0:
            self._take_token(caller)
        self.inflight[caller] = mine + 1
        self.total += 1
        return caller

    def leave(self, caller: str) -> None:
        self.total -= 1
        if caller == FORWARDED:
            return
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


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


async def _answer_probe(requests, context) -> bytes:
    return b""


_PROBE_ANSWER = grpc.stream_unary_rpc_method_handler(_answer_probe)   # answered without reading the request


def in_flight_message(limit: int) -> str:
    return f"结算网关在途请求已达上限 {limit}"


class Intake:
    """The door: each call as grpc.aio takes it from gRPC core, in arrival order, before its request is read.

    ``take()`` answers ADMIT, TOO_MANY (``admission.total`` at its limit) or
    TOO_LONG (the call waited in core's queue longer than ``max_wait_ms``,
    as measured by the probes: see the module's docstring).  ``start(target)``
    opens the probes' channel to the server's probe listener.
    """

    def __init__(self, admission: Admission, max_wait_ms: float, probe_ms: float,
                 observe_wait: Callable[[float], None] = lambda seconds: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.admission = admission
        self.max_wait_s = max_wait_ms / 1000 if max_wait_ms else float("inf")
        self.probe_s = probe_ms / 1000
        self._observe_wait = observe_wait
        self._clock = clock
        self._nonce = secrets.token_hex(8) + ":"     # so that no one else's call passes for a probe
        self._sent: collections.deque[tuple[int, float]] = collections.deque()   # (seq, sent at), not yet taken
        self._calls: dict[int, grpc.aio.UnaryUnaryCall] = {}   # probes under way (a call dropped is cancelled)
        self._seq = 0
        self._taken_since_tick = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_sent = self._last_wait = 0.0
        self._probe_call = None
        self._channel: grpc.aio.Channel | None = None
        self.refused = [0, 0, 0]   # by verdict
        self._logged_at = 0.0

    def start(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._probe_call = self._channel.unary_unary(PROBE)

    async def close(self) -> None:
        self._probe_call = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._channel is not None:
            await self._channel.close()

    def take(self) -> int:
        """One Yidi call taken from core: ADMIT, or TOO_MANY / TOO_LONG to refuse it."""
        now = self._clock()
        self._taken_since_tick += 1
        if self._timer is None and self._probe_call is not None:   # calls again after a quiet time
            self._tick()
        # Taken before the oldest probe still queued, so it arrived before that probe was sent.
        waited_s = now - self._sent[0][1] if self._sent else 0.0
        self._observe_wait(waited_s)
        verdict = (TOO_MANY if self.admission.total >= self.admission.max_total
                   else TOO_LONG if waited_s > self.max_wait_s else ADMIT)
        if verdict:
            self._refused(verdict, now, waited_s)
        return verdict

    def probe_handler(self, metadata) -> grpc.RpcMethodHandler | None:
        """A probe taken from core: it and the probes sent before it are through. None if it is not ours."""
        for key, value in metadata:
            if key == PROBE_KEY and value.startswith(self._nonce):
                seq = int(value[len(self._nonce):])
                while self._sent and self._sent[0][0] <= seq:
                    self._last_wait = self._clock() - self._sent.popleft()[1]
                return _PROBE_ANSWER
        return None

    def _tick(self) -> None:
        """Every probe_ms while calls are taken: a probe if the last found a queue, or is still in it, or if
        QUIET_PROBES intervals have passed without one."""
        self._timer = None
        if not self._taken_since_tick or self._probe_call is None:
            return
        self._taken_since_tick = 0
        now = self._clock()
        if self._sent or self._last_wait >= self.probe_s / 2 or now - self._last_sent >= QUIET_PROBES * self.probe_s:
            self._probe(now)
        self._timer = asyncio.get_running_loop().call_later(self.probe_s, self._tick)

    def _probe(self, now: float) -> None:
        self._seq += 1
        seq = self._seq
        self._sent.append((seq, now))
        self._last_sent = now
        call = self._probe_call(b"", metadata=((PROBE_KEY, f"{self._nonce}{seq}"),), timeout=60)
        self._calls[seq] = call
        call.add_done_callback(lambda _call: self._probe_done(seq))

    def _probe_done(self, seq: int) -> None:
        """A probe's answer: one that failed before being taken (the server stopping) is forgotten."""
        del self._calls[seq]
        while self._sent and self._sent[0][0] <= seq:
            self._sent.popleft()

    def _refused(self, verdict: int, now: float, waited_s: float) -> None:
        """Counted; logged at most once a second (a burst is refused at thousands of calls a second)."""
        self.refused[verdict] += 1
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            log.warning("overloaded: %d calls refused at the door since start (%d with %d in flight, %d after "
                        "waiting over %.0f ms); the last had waited at least %.0f ms",
                        self.refused[TOO_MANY] + self.refused[TOO_LONG], self.refused[TOO_MANY],
                        self.admission.max_total, self.refused[TOO_LONG], self.max_wait_s * 1000, waited_s * 1000)

    def refusal(self, verdict: int, retry_after_ms: int) -> YidiError:
        if verdict == TOO_MANY:
            return overloaded(in_flight_message(self.admission.max_total), retry_after_ms)
        return overloaded(f"结算网关排队已超过 {self.max_wait_s * 1000:.0f} 毫秒", retry_after_ms)
