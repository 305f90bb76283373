"""The group-commit front end of the ledger: every acknowledged mutation goes through it.

Every mutation the gateway acknowledges is first written to the store's log
(DESIGN §1, SPEC §6). The in-memory state of the core is a cache of this log:
at startup it is rebuilt by replaying ``Log.scan()``.

``GroupCommitLedger`` is the asyncio side of a ``Log`` (gateway/store/parts.py;
any backend). ``ledger.submit(records)`` enqueues a group of records whose
sequence numbers the caller took from ``ledger.next_seq`` (seqs are assigned
on the event loop, in submission order, so an event knows its record before
it is durable) and returns a future that resolves once the group is durable;
``await ledger.append(record)`` does the same for one record. One writer
thread takes everything queued (up to ``max_batch`` records, never splitting
a group) and commits it as one transaction, so one fsync serves every record
that arrived while the previous commit was in flight. Records are committed
in exactly the order they were submitted.

Failure policy: a failed commit is FATAL. After a failed ``Log.append`` we
do not know whether the transaction reached the disk (an fsync error, a full
disk, a lost connection to PostgreSQL after COMMIT was sent, a ledger file
unlinked under us...), and the in-memory state has already been mutated as
if it had. We never guess:

* every waiting ``append()`` fails with ``LedgerFatal`` (chained to the
  cause), so no caller is ever told "done" for a write of unknown outcome;
* every later ``append()`` raises ``LedgerFatal`` at once;
* ``on_fatal(exc)`` is called once, on the writer thread. The gateway's
  handler logs and calls ``os._exit`` so the process restarts and rebuilds
  its state from the ledger; clients then retry with the same ``request_id``
  and get exactly one settlement (SPEC §6).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..operations.metrics import COMMIT_RECORDS, COMMIT_SECONDS
from .parts import Log, Record

log = logging.getLogger(__name__)

DIGEST_BYTES_MIN = 16
DIGEST_BYTES_MAX = 32
# How often an idle writer looks whether the interpreter is shutting down
# (owner forgot close()); it then exits instead of hanging the shutdown.
WRITER_IDLE_POLL_S = 0.25


class LedgerFatal(Exception):
    """A commit failed or its outcome is unknown; the ledger refuses all work.

    The process must restart and rebuild its state from the store.
    """


class LedgerClosed(RuntimeError):
    """append() after close() was called: a programmer error."""


_STOP = object()


class GroupCommitLedger:
    """Asyncio front end that batches appends into group commits.

    ``append()`` must be called from the event-loop thread; the ledger binds
    to the loop of the first ``append()`` (or of ``close()``). Cancelling a
    task that awaits ``append()`` does not un-append its record: it will be
    committed all the same.

    Stats (written by the writer thread, read anywhere): ``commits``,
    ``records``, ``max_batch_seen``.
    """

    def __init__(
        self,
        store: Log,
        *,
        max_batch: int = 4096,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._store = store
        self._max_batch = max_batch
        self._on_fatal = on_fatal
        # SimpleQueue: a C-level FIFO whose put() costs well under a µs and
        # wakes the writer only when it is blocked in get().
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last: asyncio.Future | None = None
        self._next_seq = 0  # set by start(): the seq the next submitted record gets
        self._fatal: BaseException | None = None
        self._stopped: asyncio.Future | None = None
        self.commits = 0
        self.records = 0
        self.max_batch_seen = 0

    @property
    def failed(self) -> BaseException | None:
        """The exception that made the ledger fatal, or None."""
        return self._fatal

    @property
    def next_seq(self) -> int:
        """The seq the next submitted record will get (records are numbered in submission order)."""
        return self._next_seq

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("GroupCommitLedger already started")
        self._next_seq = self._store.last_seq() + 1
        self._thread = threading.Thread(target=self._run, name="yidi-ledger-writer", daemon=False)
        self._thread.start()

    # -- event-loop side -----------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("GroupCommitLedger used from two event loops")
        return loop

    async def append(self, record: Record) -> int:
        """Enqueue ``record`` (its seq 0: the next one is taken); return its seq once it is durable.

        Raises ``LedgerFatal`` if the ledger has failed (now or while this
        record was waiting), ``LedgerClosed`` after ``close()``.
        """
        if record.seq == 0:
            record = replace(record, seq=self._next_seq)
        await self.submit([record])
        return record.seq

    def submit(self, records: Sequence[Record]) -> asyncio.Future:
        """Enqueue a group of records, numbered from ``next_seq`` on; the future resolves once all are durable.

        The group is committed in one transaction (never split).  Raises at
        once, enqueuing nothing, if the ledger has failed, is closed, or the
        records are not numbered next_seq, next_seq + 1, ...
        """
        if self._fatal is not None:
            raise LedgerFatal("ledger has failed; refusing appends until restart") from self._fatal
        if self._closing:
            raise LedgerClosed("ledger is closed")
        if self._thread is None:
            raise RuntimeError("GroupCommitLedger.start() was not called")
        # Checked here, on the caller's side: a bad record must not reach the
        # writer, where any failure is fatal for the whole process.
        for i, record in enumerate(records):
            if record.seq != self._next_seq + i:
                raise ValueError(f"record seq {record.seq} submitted where {self._next_seq + i} is next")
            if not DIGEST_BYTES_MIN <= len(record.digest) <= DIGEST_BYTES_MAX:
                raise ValueError(f"record digest must be {DIGEST_BYTES_MIN}..{DIGEST_BYTES_MAX} bytes")
        loop = self._loop
        if loop is None or asyncio.get_running_loop() is not loop:
            loop = self._bind_loop()
        fut = loop.create_future()
        self._queue.put((list(records), fut))
        self._next_seq += len(records)
        self._last = fut
        return fut

    async def flush(self) -> None:
        """Wait until every record appended so far is durable (FIFO: the last one is enough)."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([last])

    async def close(self) -> None:
        """Commit everything queued, then stop and join the writer thread.

        Returns quietly if the ledger had already failed (nothing can be
        drained then; waiting appenders already got ``LedgerFatal``).
        """
        if self._thread is None or self._fatal is not None:
            self._closing = True
            if self._thread is not None:
                self._thread.join()
            return
        if self._closing:  # a second close() waits for the first one
            if self._stopped is not None:
                await asyncio.shield(self._stopped)
            self._thread.join()
            return
        loop = self._bind_loop()
        self._closing = True
        self._stopped = loop.create_future()
        self._queue.put(_STOP)
        await self._stopped
        self._thread.join()

    def _resolve(self, futures: list[asyncio.Future]) -> None:
        # Runs on the loop: one callback per commit, not one per group.
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    def _fail_all(self, futures: list[asyncio.Future], exc: BaseException) -> None:
        # Runs on the loop. self._fatal is already set, so no append() can
        # enqueue after this point: draining the queue here catches every
        # record that was enqueued before the failure became visible.
        waiting = list(futures)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                waiting.append(item[1])
        for fut in waiting:
            if not fut.done():
                err = LedgerFatal("ledger commit failed; outcome unknown, process must restart")
                err.__cause__ = exc
                fut.set_exception(err)
        self._signal_stopped()

    def _signal_stopped(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    # -- writer thread ------------------------------------------------------

    def _call_loop(self, fn: Callable, *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed: nobody is left to wait for these futures.
            pass

    def _take_batch(self) -> tuple[list[Record], list[asyncio.Future], bool] | None:
        """Block for the first group, then take the groups queued, up to max_batch records.

        Returns (records, futures, stop) or None if the interpreter is
        shutting down with nothing queued.
        """
        q = self._queue
        while True:
            try:
                item = q.get(timeout=WRITER_IDLE_POLL_S)
                break
            except queue.Empty:
                if not threading.main_thread().is_alive():
                    return None
        records: list[Record] = []
        futures: list[asyncio.Future] = []
        max_batch = self._max_batch
        while True:
            if item is _STOP:
                return records, futures, True
            records.extend(item[0])
            futures.append(item[1])
            if len(records) >= max_batch:
                return records, futures, False
            try:
                item = q.get_nowait()
            except queue.Empty:
                return records, futures, False

    def _run(self) -> None:
        while self._commit_next():
            pass

    def _commit_next(self) -> bool:
        """Commit the next batch of groups; False once the writer stops.  A call of its own, so that nothing of a
        committed group stays referenced from this thread while it waits for the next one."""
        taken = self._take_batch()
        if taken is None:
            return False
        records, futures, stop = taken
        if records:
            start = time.perf_counter()
            try:
                seqs = self._store.append(records)
                if seqs != [r.seq for r in records]:
                    raise RuntimeError(f"store wrote seqs {seqs[:1]}.. for records {records[0].seq}..")
            except BaseException as exc:  # noqa: BLE001 - every failure is fatal
                self._die(futures, exc)
                return False
            COMMIT_SECONDS.observe(time.perf_counter() - start)
            COMMIT_RECORDS.observe(len(records))
            self.commits += 1
            self.records += len(records)
            if len(records) > self.max_batch_seen:
                self.max_batch_seen = len(records)
            self._call_loop(self._resolve, futures)
        if stop:
            self._call_loop(self._signal_stopped)
            return False
        return True

    def _die(self, futures: list[asyncio.Future], exc: BaseException) -> None:
        self._fatal = exc  # set before scheduling _fail_all: see its comment
        log.critical("ledger commit failed; the ledger is now fatal", exc_info=exc)
        self._call_loop(self._fail_all, futures, exc)
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except BaseException:  # noqa: BLE001
                log.exception("ledger on_fatal handler raised")
