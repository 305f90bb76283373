"""Idempotency keys (SPEC §6) in bounded memory.

A key is ``(caller, request_id)``.  Three places answer "was this request seen?":

* in flight — decided and applied, its record not yet durable: a duplicate
  waits for the same commit and gets the same answer;
* recent — a bounded cache of the latest durable keys (oldest dropped first);
* the ledger — its unique ``(caller, request_id)`` index, one indexed read,
  for every older key, for as long as the ledger is kept.

So memory holds at most ``capacity`` durable keys however long the ledger
grows, and a replay of a years-old key is still byte-identical (the answer is
the response stored in its record).
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import NamedTuple

from core.errors import YidiError
from core.events import REVERSED_KIND

from .parts import Store
from .rows import request_hash

Key = tuple[str, str]
# The digest kept for a key its caller reversed (冲正) before the request was performed: any request
# under that key is refused with REQUEST_REVERSED.
REVERSED = b"\x00reversed"


class Prior(NamedTuple):
    """A request seen before: its answer, now or once its commit is durable."""

    response: bytes | None        # known bytes (in flight, or read from the ledger)
    durable: asyncio.Future | None  # in flight: resolves when its record is durable
    seq: int                      # the record holding the answer (numbered before it is durable)


class Keys:
    def __init__(self, store: Store, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._store = store
        self._capacity = capacity
        self._inflight: dict[Key, tuple[bytes, bytes, asyncio.Future, int]] = {}
        # insertion order = oldest first; an OrderedDict drops its oldest in constant time, where a dict's first
        # key is found by walking past every slot deleted before it (121 µs a call at 400k keys seen)
        self._recent: OrderedDict[Key, tuple[bytes, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._inflight) + len(self._recent)

    def new_keys(self, caller: str, request_ids: list[str]) -> frozenset[str]:
        """Of a batch's request ids, those certainly never seen: one query for all instead of one each.

        Valid only until the next await (a batch's lookups follow at once): keys in flight or recent are
        left out, so a key this says is new cannot become known before those lookups.
        """
        unknown = {}
        for request_id in request_ids:
            key = (caller, request_id)
            if request_id and key not in self._inflight and key not in self._recent:
                unknown[request_hash(caller, request_id)] = request_id
        if len(unknown) < 2:
            return frozenset()
        known = self._store.known_request_hashes(list(unknown))
        return frozenset(r for h, r in unknown.items() if h not in known)

    def lookup(self, caller: str, request_id: str, digest: bytes, new: frozenset[str] = frozenset()) -> Prior | None:
        """The earlier answer to this key, None if it is new; IDEMPOTENCY_KEY_REUSED if the request differs,
        REQUEST_REVERSED if its caller reversed it.  ``new``: ids ``new_keys`` found absent (not looked up again)."""
        found = self.find(caller, request_id, new)
        if found is None:
            return None
        seen, prior = found
        if seen == REVERSED:
            raise YidiError("REQUEST_REVERSED", request_id=request_id)
        _same(seen, digest, request_id)
        return prior

    def find(self, caller: str, request_id: str, new: frozenset[str] = frozenset()) -> tuple[bytes, Prior] | None:
        """(the digest seen under this key, or REVERSED; its answer), None if the key is new."""
        key = (caller, request_id)
        inflight = self._inflight.get(key)
        if inflight is not None:
            return inflight[0], Prior(inflight[1], inflight[2], inflight[3])
        recent = self._recent.get(key)
        if recent is not None:
            return recent[0], Prior(None, None, recent[1])
        if request_id in new:
            return None
        record = self._store.find_request(caller, request_id)
        if record is None:
            return None
        if record.kind == REVERSED_KIND and record.request_id != request_id:
            return REVERSED, Prior(record.response, None, record.seq)
        return record.digest, Prior(record.response, None, record.seq)

    def begin(self, caller: str, request_id: str, digest: bytes, response: bytes, durable: asyncio.Future,
              seq: int) -> None:
        self._inflight[(caller, request_id)] = (digest, response, durable, seq)

    def durable(self, caller: str, request_id: str, seq: int) -> None:
        digest = self._inflight.pop((caller, request_id))[0]
        self.remember(caller, request_id, digest, seq)

    def remember(self, caller: str, request_id: str, digest: bytes, seq: int) -> None:
        """A durable key (live, or replayed at start-up), kept until capacity newer ones push it out."""
        recent = self._recent
        recent[(caller, request_id)] = (digest, seq)
        while len(recent) > self._capacity:
            recent.popitem(last=False)

    async def answer(self, prior: Prior) -> bytes:
        """The bytes of an earlier answer, waiting for its commit if it is still in flight."""
        if prior.durable is not None:
            await asyncio.shield(prior.durable)
        if prior.response is not None:
            return prior.response
        record = await asyncio.to_thread(self._store.read, prior.seq)
        if record is None:
            raise YidiError("LEDGER_DAMAGED")
        return record.response


def _same(seen: bytes, digest: bytes, request_id: str) -> None:
    if seen != digest:
        raise reused(request_id)


def reused(request_id: str) -> YidiError:
    return YidiError("IDEMPOTENCY_KEY_REUSED", request_id=request_id)
