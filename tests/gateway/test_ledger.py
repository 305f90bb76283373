"""The durable ledger: SqliteStore and GroupCommitLedger on real SQLite files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import orjson
import pytest
import uvloop

from gateway.testing import dev_certs, seal_key
from gateway.store import (
    GroupCommitLedger,
    LedgerClosed,
    LedgerFatal,
    LedgerUnavailable,
    Record,
    SqliteStore,
    open_store,
)
from gateway.store.sqlite.store import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_record(i: int, *, caller: str = "210000", kind: str = "settle", key: str | None = None) -> Record:
    request_id = f"req-{i}"
    body = orjson.dumps({"i": i, "setl_id": f"S{i:08d}", "amount_fen": i * 7})
    return Record(
        kind=kind,
        caller=caller,
        request_id=request_id,
        digest=hashlib.blake2b(body, digest_size=16).digest(),
        key=key if key is not None else f"S{i:08d}",
        body=body,
        response=b"\x0a\x05" + str(i).encode() + b"\x00\xff",
    )


def same_content(a: Record, b: Record) -> bool:
    return (a.kind, a.caller, a.request_id, a.digest, a.key, a.body, a.response) == (
        b.kind,
        b.caller,
        b.request_id,
        b.digest,
        b.key,
        b.body,
        b.response,
    )


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "ledger.sqlite"), seal_key())
    yield s
    s.close()


# -- SqliteStore -------------------------------------------------------------


def test_pragmas_wal_and_synchronous_full(store, tmp_path):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    # Independently of the store's own connection: the file is in WAL mode.
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_in_memory_database_is_refused():
    with pytest.raises(ValueError, match="not durable"):
        SqliteStore(":memory:", seal_key())


def test_append_scan_round_trip_preserves_fields_and_order(store):
    records = [make_record(i) for i in range(1, 2501)]
    records.append(
        Record(kind="filing", caller="110000", request_id="", digest=b"\x00" * 32, key="P1", body=b"{}", response=b"")
    )
    seqs = store.append(records[:1000]) + store.append(records[1000:]) + store.append([])
    assert seqs == list(range(1, len(records) + 1))
    assert store.last_seq() == len(records)

    scanned = list(store.scan())  # more than one scan page
    assert [r.seq for r in scanned] == seqs
    assert all(same_content(a, b) for a, b in zip(records, scanned, strict=True))
    assert all(isinstance(r.digest, bytes) and isinstance(r.response, bytes) for r in scanned)

    tail = list(store.scan(after_seq=2400))
    assert [r.seq for r in tail] == list(range(2401, len(records) + 1))
    assert list(store.scan(after_seq=len(records))) == []


def test_seqs_continue_after_reopen(tmp_path):
    path = str(tmp_path / "l.sqlite")
    s = SqliteStore(path, seal_key())
    assert s.append([make_record(1), make_record(2)]) == [1, 2]
    s.close()
    s = SqliteStore(path, seal_key())
    try:
        assert s.last_seq() == 2
        assert s.append([make_record(3)]) == [3]
    finally:
        s.close()


def test_find_request_read_and_last_reference_load(store):
    store.append([make_record(1, key="M1"), make_record(2, key="M2"), make_record(3, key="M1")])
    store.append([make_record(4, caller="320000", key="M1")])
    store.append([Record("filing", "210000", "", b"d" * 16, "P9", b"{}", b"")])

    found = store.find_request("210000", "req-2")
    assert found is not None and found.seq == 2 and same_content(found, make_record(2, key="M2"))
    assert store.find_request("320000", "req-2") is None  # keys are per caller
    assert store.find_request("320000", "req-4").seq == 4
    assert store.find_request("210000", "") is None  # records without a key are not findable by it

    assert same_content(store.read(4), make_record(4, caller="320000", key="M1")) and store.read(6) is None
    assert store.last_reference_load() is None
    store.append([make_record(6, kind="reference_loaded", key="reference"), make_record(7)])
    assert store.last_reference_load().seq == 6


def test_archive_facts_come_from_the_record_changes_from_the_archive_and_a_first_release_ledger_migrates(tmp_path):
    from core import events
    from core.archive import ArchivedVisit, VisitStatus
    from core.events import Admitted, VisitFacts, visit_id

    facts = VisitFacts(visit_id(1), "P1", "H46010000001", "inpatient", 20260301, "F1", "referral", "210102", "460100", 3)
    admitted = Admitted(visit=facts)
    s = SqliteStore(str(tmp_path / "new.sqlite"), seal_key())
    try:
        assert s.archive_complete() and s.legacy_last_seq() == 0  # a new ledger's archive grows with it
        s.append([Record("admitted", "460000", "a", b"d" * 16, facts.mdtrt_id, events.encode(admitted), b"")])
        assert s.visit(facts.mdtrt_id) == ArchivedVisit(facts, "admitted")  # facts from the record itself
        other = events.encode(events.FeesWithdrawn(mdtrt_id=facts.mdtrt_id, sns=()))
        s.append([Record("settled", "460000", "b", b"d" * 16, "S2", other, b"", changes=(
            VisitStatus(facts.mdtrt_id, "settled", "S000000000000002"),))])
        assert s.visit(facts.mdtrt_id) == ArchivedVisit(facts, "settled", "S000000000000002")
        assert s.visit(visit_id(2)) is None and s.visit("M9") is None and s.settlement("S000000000000002") is None
        with pytest.raises(sqlite3.IntegrityError):  # the store never records a request id twice
            s.append([Record("x", "460000", "a", b"d" * 16, "", b"{}", b"")])
        assert s.last_seq() == 2 and s.find_request("460000", "b").seq == 2
    finally:
        s.close()
    old = str(tmp_path / "v1.sqlite")
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "ledger-v1.db"), old)
    s = SqliteStore(old, seal_key())
    try:
        assert not s.archive_complete() and s.last_seq() == 16 and s.pragma("user_version") == SCHEMA_VERSION
        assert s.legacy_last_seq() == 16 and s.find_request("210000", "v1-file").seq == 1
        s.write_archive([ArchivedVisit(facts, "admitted")], [])
        assert s.archive_complete() and s.visit(facts.mdtrt_id).status == "admitted"
    finally:
        s.close()

def test_reads_from_another_thread_use_their_own_connection(store):
    store.append([make_record(1)])
    out = {}

    def reader():
        out["rec"] = store.find_request("210000", "req-1")
        out["last"] = store.last_seq()

    t = threading.Thread(target=reader)
    t.start()
    t.join()
    assert out["rec"].seq == 1 and out["last"] == 1


def test_duplicate_request_id_raises_and_rolls_back_whole_transaction(store):
    """A duplicate (caller, request_id) is an IntegrityError from the store.

    The gateway deduplicates before appending, so this is a programmer error
    upstream; the whole transaction is rolled back (nothing of it is kept).
    """
    store.append([make_record(1)])
    with pytest.raises(sqlite3.IntegrityError):
        store.append([make_record(2), make_record(1)])
    assert store.last_seq() == 1
    assert store.find_request("210000", "req-2") is None
    # The same request_id from another caller, and many records without one, are fine.
    blank = Record("admit", "210000", "", b"x" * 16, "M", b"{}", b"")
    assert store.append([make_record(1, caller="440000"), blank, blank]) == [2, 3, 4]


def test_open_store(tmp_path):
    s = open_store(str(tmp_path / "a.sqlite"), seal_key())
    assert isinstance(s, SqliteStore)
    s.close()
    s = open_store("sqlite:///" + str(tmp_path / "b.sqlite"), seal_key())  # sqlite:////abs/path
    assert isinstance(s, SqliteStore)
    s.close()
    # a server that is not there: one line naming the URL without its password
    with pytest.raises(LedgerUnavailable, match=r"cannot open the ledger postgresql://user@127\.0\.0\.1:1/yidi: ") as err:
        open_store("postgresql://user:pw-secret@127.0.0.1:1/yidi", seal_key())
    assert "pw-secret" not in str(err.value)
    with pytest.raises(ValueError):
        open_store("mysql://db/yidi", seal_key())


# -- GroupCommitLedger ---------------------------------------------------------


@pytest.mark.parametrize("loop_factory", ["uvloop", "asyncio"])
def test_group_commit_groups_and_keeps_fifo_order(store, loop_factory):
    n = 2000
    records = [make_record(i) for i in range(n)]

    async def main():
        ledger = GroupCommitLedger(store)
        ledger.start()
        try:
            # Appends are enqueued in task start order, i.e. the order of `records`.
            seqs = await asyncio.gather(*(ledger.append(r) for r in records))
        finally:
            await ledger.close()
        return ledger, seqs

    if loop_factory == "uvloop":
        ledger, seqs = uvloop.run(main())
    else:
        ledger, seqs = asyncio.run(main())

    assert seqs == list(range(1, n + 1))  # FIFO: append order == seq order
    assert ledger.records == n
    assert ledger.commits < n
    assert ledger.max_batch_seen > 1
    scanned = list(store.scan())
    assert all(same_content(a, b) for a, b in zip(records, scanned, strict=True))


def test_max_batch_is_respected(store):
    async def main():
        ledger = GroupCommitLedger(store, max_batch=7)
        ledger.start()
        try:
            await asyncio.gather(*(ledger.append(make_record(i)) for i in range(100)))
        finally:
            await ledger.close()
        return ledger

    ledger = asyncio.run(main())
    assert ledger.max_batch_seen <= 7
    assert ledger.commits >= 15
    assert [r.request_id for r in store.scan()] == [f"req-{i}" for i in range(100)]


def test_close_drains_queued_records(store):
    async def main():
        ledger = GroupCommitLedger(store)
        ledger.start()
        tasks = [asyncio.create_task(ledger.append(make_record(i))) for i in range(500)]
        await asyncio.sleep(0)  # every task has enqueued; most are not yet committed
        await ledger.close()
        # close() returned: every queued record is committed and its future resolved.
        assert all(t.done() for t in tasks)
        with pytest.raises(LedgerClosed):
            await ledger.append(make_record(999))
        return [t.result() for t in tasks], ledger

    seqs, ledger = asyncio.run(main())
    assert seqs == list(range(1, 501))
    assert store.last_seq() == 500
    assert ledger.records == 500
    assert not ledger._thread.is_alive()


def test_bad_digest_is_refused_before_the_writer(store):
    async def main():
        ledger = GroupCommitLedger(store)
        ledger.start()
        try:
            with pytest.raises(ValueError):
                await ledger.append(Record("settle", "210000", "r", b"short", "k", b"{}", b""))
            assert await ledger.append(make_record(1)) == 1
        finally:
            await ledger.close()

    asyncio.run(main())


class FailingStore:
    """A Store whose append fails on the n-th call (1-based)."""

    def __init__(self, inner: SqliteStore, fail_on_call: int) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.gate = threading.Event()

    def append(self, records):
        self.calls += 1
        if self.calls == self.fail_on_call:
            self.gate.wait(5)  # hold the commit so more appenders queue behind it
            raise OSError(5, "Input/output error (simulated fsync failure)")
        return self.inner.append(records)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_failed_commit_is_fatal(store):
    fatal_calls: list[BaseException] = []
    fs = FailingStore(store, fail_on_call=2)

    async def main():
        ledger = GroupCommitLedger(fs, on_fatal=fatal_calls.append)
        ledger.start()
        assert await ledger.append(make_record(0)) == 1  # the first commit works
        first = [asyncio.create_task(ledger.append(make_record(i))) for i in range(1, 50)]
        await asyncio.sleep(0.05)  # the writer is now inside the failing commit
        queued = [asyncio.create_task(ledger.append(make_record(i))) for i in range(50, 100)]
        await asyncio.sleep(0)
        fs.gate.set()
        results = await asyncio.gather(*first, *queued, return_exceptions=True)
        assert all(isinstance(r, LedgerFatal) for r in results), results
        assert isinstance(results[0].__cause__, OSError)
        with pytest.raises(LedgerFatal):
            await ledger.append(make_record(1000))
        await ledger.close()  # quiet after a fatal failure
        return ledger

    ledger = asyncio.run(main())
    assert len(fatal_calls) == 1 and isinstance(fatal_calls[0], OSError)
    assert isinstance(ledger.failed, OSError)
    assert fs.calls == 2  # nothing was attempted after the failure
    assert store.last_seq() == 1


def test_duplicate_request_id_through_the_ledger_is_fatal(store):
    fatal_calls: list[BaseException] = []

    async def main():
        ledger = GroupCommitLedger(store, on_fatal=fatal_calls.append)
        ledger.start()
        await ledger.append(make_record(1))
        with pytest.raises(LedgerFatal):
            await ledger.append(make_record(1))
        await ledger.close()

    asyncio.run(main())
    assert len(fatal_calls) == 1 and isinstance(fatal_calls[0], sqlite3.IntegrityError)


# -- durability across a hard kill -----------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import uvloop
    sys.path.insert(0, {root!r})
    from gateway.store import GroupCommitLedger, SqliteStore
    from gateway.store.seal import SealKey
    from tests.gateway.test_ledger import make_record

    async def worker(ledger, w, per_worker):
        out = sys.stdout
        for j in range(per_worker):
            i = w * per_worker + j
            seq = await ledger.append(make_record(i))
            out.write(f"{{seq}} {{i}}\\n")
            out.flush()

    async def main():
        ledger = GroupCommitLedger(SqliteStore({path!r}, SealKey.read({key!r})))
        ledger.start()
        # Far more than the parent waits for: the kill always lands mid-stream.
        await asyncio.gather(*(worker(ledger, w, 100_000) for w in range(64)))

    uvloop.run(main())
    """
)


def test_acknowledged_records_survive_sigkill(tmp_path):
    path = str(tmp_path / "crash.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(REPO_ROOT), path=path, key=dev_certs().seal_key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    acked: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        while len(acked) < 3000:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child ended early: {proc.stderr.read().decode()}")
            seq, i = map(int, line.split())
            acked.append((seq, i))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # Lines written before the kill and still in the pipe were acknowledged too.
    for line in rest.split(b"\n"):
        parts = line.split()
        if len(parts) == 2:
            acked.append((int(parts[0]), int(parts[1])))

    store = SqliteStore(path, seal_key())
    try:
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("synchronous") == 2
        by_seq = {r.seq: r for r in store.scan()}
        assert sorted(by_seq) == list(range(1, len(by_seq) + 1))  # dense, no holes
        assert len(by_seq) >= len(acked)
        for seq, i in acked:
            rec = by_seq.get(seq)
            assert rec is not None, f"acknowledged seq {seq} lost"
            assert same_content(rec, make_record(i)), f"seq {seq} has wrong content"
    finally:
        store.close()
