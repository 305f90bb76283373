"""Idempotency keys (SPEC §6) in bounded memory.

A key is ``(caller, request_id)``.  Three places answer "was this request seen?":

* in flight — decided and applied, its record not yet durable: a duplicate
  waits for the same commit and gets the same answer;
* recent — a bounded cache of the latest durable keys (oldest dropped first),
  a ``core.KeyTable``;
* the ledger — its unique ``(caller, request_id)`` index, one indexed read,
  for every older key, for as long as the ledger is kept.

So memory holds at most ``capacity`` durable keys however long the ledger
grows, and a replay of a years-old key is still byte-identical (the answer is
the response stored in its record).

The recent cache is a table in C (core/keytable.pxi) that holds no Python
object per key, so the collector never walks it: per key a 64-byte entry (its
hash, the request's digest, the seq of its record) and two to four 4-byte
slots of an open-addressing table, about 72-80 bytes in all.  The entries form
a ring in arrival order, so dropping the oldest costs the same at any fill.  A
key is named by a 128-bit BLAKE2b hash of (caller, request_id) (``key_hash``),
never compared with the key itself.  That is safe in practice: two keys meet
by chance with a probability near n·m/2^128 (n keys held, m looked up: 10^7
and 10^13 give 3·10^-19), and a caller cannot aim at another caller's key
(the caller is hashed in: it would need a second preimage of BLAKE2b-128).

The ledger is asked off the event loop: ``read_index`` sends a call's keys that
memory does not hold to one look-up thread and the call awaits the answer.
Every call that asks in the same turn of the loop goes in one hop and one
query (a unary settle under load rarely asks alone; a batch asks for all its
keys at once).  While it is out, other calls go on, and one of
them may begin the same key: every key begun while a look-up is out is
dropped from its answer, so the call's own ``lookup`` then finds that key in
memory (in flight or recent) or, if it has already left the recent cache, asks
the ledger again on the loop.  Two identical requests racing still settle once.

A ledger of several partitions (PostgreSQL) has one memory of keys per
partition's owner, so the same hop first claims the keys it asks for
(``request_claims``: the store's ``claim_requests``), then reads the index: a
key another partition claimed and has not recorded is answered from its claim
(``Claimed``: IDEMPOTENCY_KEY_REUSED for another request, REQUEST_IN_PROGRESS
for the same), never decided here too.  The calls that asked hold their keys
(``unhold`` once their records are submitted); a key the last holder leaves
without a record in flight is released on the look-up thread, after every
claim asked before it, and the claims of recorded keys are deleted in bulk
about once a second (docs/postgresql.md, Partitions).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from core import KeyTable
from core.errors import YidiError
from core.events import REVERSED_KIND

from .parts import Record, Store
from .rows import request_hash

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Claimed(NamedTuple):
    """A key another partition's owner has claimed and not recorded yet: the digest of its request there."""

    digest: bytes


# The ledger's answer for the keys memory did not hold, by request id: their record, None (never seen), or the
# claim of another partition.
Looked = dict[str, Record | Claimed | None]
# The digest kept for a key its caller reversed (冲正) before the request was performed: any request
# under that key is refused with REQUEST_REVERSED.
REVERSED = b"\x00reversed"


class Prior(NamedTuple):
    """A request seen before: its answer, now or once its commit is durable."""

    response: bytes | None        # known bytes (in flight, or read from the ledger)
    durable: asyncio.Future | None  # in flight: resolves when its record is durable
    seq: int                      # the record holding the answer (numbered before it is durable)


# The answer to a key another partition has claimed with the same request: not known here yet (retry for it).
ELSEWHERE = Prior(None, None, 0)
ELSEWHERE_RETRY_MS = 200
# How often the claims of keys recorded since are deleted (at most; only while keys are being claimed).
REAP_INTERVAL_S = 1.0


class Keys:
    def __init__(self, store: Store, capacity: int, claiming: bool = False) -> None:
        self._store = store
        self._inflight: dict[Key, tuple[bytes, bytes, asyncio.Future, int, bytes]] = {}   # ..., seq, key_hash
        self._recent = KeyTable(capacity)   # key_hash -> (digest, seq), the oldest dropped first
        self._lookups = ThreadPoolExecutor(1, thread_name_prefix="yidi-keys")
        # The look-up thread opens its read connection and reads through it now, while the ledger is where the
        # store opened it: a SQLite connection first used after the file was removed fails (disk I/O error)
        # before the next commit can find the loss and stop the gateway (tests/tamper.py, unlinked while serving).
        # Waited for, so the store's close() finds the connection; a failure here is met again, where it was
        # met before, by the look-ups themselves.
        try:
            self._lookups.submit(store.known_request_hashes, [0]).result()
        except Exception:
            pass
        self._watching: list[set[Key]] = []   # per look-up out: the keys begun since it was sent
        self._asking: list[tuple[str, list[str], list[tuple[str, str, bytes]], asyncio.Future]] = []   # this turn's
        # ``claiming``: a ledger of several partitions (PostgreSQL): keys are claimed in the ledger before they are
        # decided, and each claimed key is held by the calls deciding it; the last to end without a record
        # releases it.
        self._claiming = claiming
        self._holders: dict[Key, int] = {}
        self._reaped = 0.0   # when this partition's recorded keys' claims were last deleted (monotonic s)

    def __len__(self) -> int:
        return len(self._inflight) + len(self._recent)

    async def read_index(self, caller: str, request_ids: list[str], hashes: list[bytes],
                         digests: list[bytes] | None = None) -> tuple[Looked, list[Key]]:
        """The ledger's answer for those of a call's keys memory does not hold, asked on the look-up thread with
        the other look-ups of this turn of the loop; keys begun while it was out are left out (``lookup``
        finds them).  ``hashes``: each key's ``key_hash``, in the same order; ``digests``: each request's, when
        the keys are claimed (a ledger of several partitions; else nothing is claimed).  Also the keys the call
        now holds claimed: ``unhold`` them once it has submitted its records."""
        digest_of = dict(zip(request_ids, digests, strict=True)) if self._claiming and digests is not None else {}
        ids = [r for r, h in dict(zip(request_ids, hashes, strict=True)).items()
               if r and (caller, r) not in self._inflight and h not in self._recent]
        if not ids:
            return {}, []
        claims = [(caller, r, digest_of[r]) for r in ids if r in digest_of]
        held = [(caller, r) for _, r, _ in claims]
        for key in held:
            self._holders[key] = self._holders.get(key, 0) + 1
        begun: set[Key] = set()
        self._watching.append(begun)
        try:
            answer = asyncio.get_running_loop().create_future()
            if not self._asking:
                answer.get_loop().call_soon(self._send)
            self._asking.append((caller, ids, claims, answer))
            looked = await answer
        except BaseException:
            self.unhold(held)
            raise
        finally:
            self._watching.remove(begun)
        for _caller, request_id in begun:
            looked.pop(request_id, None)
        return looked, held

    def unhold(self, held: list[Key]) -> None:
        """A call's claimed keys, its records submitted: a key no call holds any more and none has in flight
        (refused, or answered from a record) is released, on the look-up thread, after the claims asked before;
        one in flight is the ledger's to reap once recorded (``reap_claims``, from ``_ask``)."""
        release = []
        for key in held:
            left = self._holders[key] - 1
            if left:
                self._holders[key] = left
                continue
            del self._holders[key]
            if key not in self._inflight:
                release.append(key)
        if release:
            self._lookups.submit(self._release, release)

    def _release(self, keys: list[Key]) -> None:
        try:
            self._store.release_claims(keys)
        except Exception:   # a claim left behind is another partition's REQUEST_IN_PROGRESS until a takeover
            log.warning("%d claimed request keys could not be released", len(keys), exc_info=True)

    def _send(self) -> None:
        """At the end of a turn of the loop: every look-up asked during it, to the thread in one hop."""
        asking, self._asking = self._asking, []
        done = asyncio.wrap_future(self._lookups.submit(self._ask, [(caller, ids, claims)
                                                                    for caller, ids, claims, _ in asking]))
        done.add_done_callback(lambda _: _deliver(done, [answer for _, _, _, answer in asking]))

    def _ask(self, asked: list[tuple[str, list[str], list[tuple[str, str, bytes]]]]) -> list[Looked]:
        """On the look-up thread: each asked key's record in the ledger, the claim of another partition, or
        None; one query for all of them (find_request's own, for a key asked alone).  Keys are claimed first,
        so that a key recorded by another partition meanwhile (its claim gone) is found in the index."""
        claims = [claim for _, _, cs in asked for claim in cs]
        if claims and time.monotonic() - self._reaped >= REAP_INTERVAL_S:
            self._reaped = time.monotonic()
            self._store.reap_claims()
        foreign = {key: Claimed(digest) for key, digest in self._store.claim_requests(claims).items()} \
            if claims else {}
        hashes = {request_hash(caller, r): (caller, r) for caller, ids, _ in asked for r in ids}
        known = self._store.known_request_hashes(list(hashes)) if len(hashes) > 1 else set(hashes)
        found = {key: self._store.find_request(*key) for h, key in hashes.items() if h in known}
        return [{r: found.get((caller, r)) or foreign.get((caller, r)) for r in ids} for caller, ids, _ in asked]

    def lookup(self, caller: str, request_id: str, digest: bytes, looked: Looked | None = None,
               h: bytes | None = None) -> Prior | None:
        """The earlier answer to this key, None if it is new; IDEMPOTENCY_KEY_REUSED if the request differs,
        REQUEST_REVERSED if its caller reversed it.  ``looked``: what ``read_index`` found (not asked again);
        ``h``: the key's ``key_hash`` if the caller has it."""
        found = self.find(caller, request_id, looked, h)
        if found is None:
            return None
        seen, prior = found
        if seen == REVERSED:
            raise YidiError("REQUEST_REVERSED", request_id=request_id)
        _same(seen, digest, request_id)
        if prior is ELSEWHERE:
            raise YidiError("REQUEST_IN_PROGRESS", request_id=request_id, retry_after_ms=ELSEWHERE_RETRY_MS)
        return prior

    def find(self, caller: str, request_id: str, looked: Looked | None = None,
             h: bytes | None = None) -> tuple[bytes, Prior] | None:
        """(the digest seen under this key, or REVERSED; its answer), None if the key is new.  Memory first, then
        ``looked``, then (a key neither holds) the ledger, on the loop."""
        key = (caller, request_id)
        inflight = self._inflight.get(key)
        if inflight is not None:
            return inflight[0], Prior(inflight[1], inflight[2], inflight[3])
        recent = self._recent.get(h if h is not None else key_hash(caller, request_id))
        if recent is not None:
            return recent[0], Prior(None, None, recent[1])
        if looked is not None and request_id in looked:
            record = looked[request_id]
        else:
            record = self._store.find_request(caller, request_id)
        if record is None:
            return None
        if type(record) is Claimed:
            return record.digest, ELSEWHERE
        if record.kind == REVERSED_KIND and record.request_id != request_id:
            return REVERSED, Prior(record.response, None, record.seq)
        return record.digest, Prior(record.response, None, record.seq)

    def begin(self, caller: str, request_id: str, digest: bytes, response: bytes, durable: asyncio.Future,
              seq: int, h: bytes | None = None) -> None:
        """A key whose record is submitted; ``h``: its ``key_hash`` if the caller has it (kept for ``durable``)."""
        key = (caller, request_id)
        self._inflight[key] = (digest, response, durable, seq, h if h is not None else key_hash(caller, request_id))
        for begun in self._watching:
            begun.add(key)

    def durable(self, caller: str, request_id: str, seq: int) -> None:
        digest, _, _, _, h = self._inflight.pop((caller, request_id))
        self._recent.put(h, digest, seq)

    def remember(self, caller: str, request_id: str, digest: bytes, seq: int) -> None:
        """A durable key replayed at start-up (or followed from the owner), kept until capacity newer ones push it
        out."""
        self._recent.put(key_hash(caller, request_id), digest, seq)

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


def key_hash(caller: str, request_id: str) -> bytes:
    """The 128-bit name of a key in the recent cache (~0.45 µs: a settlement computes it once, in
    ``execute_many``, and the look-ups and ``begin`` carry it to ``durable``)."""
    return hashlib.blake2b(f"{caller}\x00{request_id}".encode(), digest_size=16).digest()


def _deliver(done: asyncio.Future, answers: list[asyncio.Future]) -> None:
    """Each look-up's answer (or the look-up thread's exception), skipping callers that have gone."""
    for i, answer in enumerate(answers):
        if answer.done():
            continue
        if done.cancelled():
            answer.cancel()
        elif done.exception() is not None:
            answer.set_exception(done.exception())
        else:
            answer.set_result(done.result()[i])


def _same(seen: bytes, digest: bytes, request_id: str) -> None:
    if seen != digest:
        raise reused(request_id)


def reused(request_id: str) -> YidiError:
    return YidiError("IDEMPOTENCY_KEY_REUSED", request_id=request_id)
