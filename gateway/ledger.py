"""The durable ledger: an append-only store of records and a group-commit front end.

Every mutation the gateway acknowledges is first written here (DESIGN §1,
SPEC §6). The in-memory state of the core is a cache of this log: at startup
it is rebuilt by replaying ``Store.scan()``.

Two layers:

``Store``
    A small synchronous interface (append one transaction of records, scan,
    find by idempotency key, find by object key). ``SqliteStore`` implements
    it on SQLite in WAL mode with ``synchronous=FULL``; a PostgreSQL backend
    will follow behind the same interface.

``GroupCommitLedger``
    The asyncio front end. ``ledger.submit(records)`` enqueues a group of
    records whose sequence numbers the caller took from ``ledger.next_seq``
    (seqs are assigned on the event loop, in submission order, so an event
    knows its record before it is durable) and returns a future that
    resolves once the group is durable; ``await ledger.append(record)`` does
    the same for one record. One writer thread takes everything queued (up
    to ``max_batch`` records, never splitting a group) and commits it as one
    transaction, so one fsync serves every record that arrived while the
    previous commit was in flight. Records are committed in exactly the order
    they were submitted.

Failure policy: a failed commit is FATAL. After a failed ``Store.append`` we
do not know whether the transaction reached the disk (an fsync error, a full
disk, a lost connection to PostgreSQL after COMMIT was sent...), and the
in-memory state has already been mutated as if it had. We never guess:

* every waiting ``append()`` fails with ``LedgerFatal`` (chained to the
  cause), so no caller is ever told "done" for a write of unknown outcome;
* every later ``append()`` raises ``LedgerFatal`` at once;
* ``on_fatal(exc)`` is called once, on the writer thread. The gateway's
  handler logs and calls ``os._exit`` so the process restarts and rebuilds
  its state from the ledger; clients then retry with the same ``request_id``
  and get exactly one settlement (SPEC §6).

A duplicate ``(caller, request_id)`` makes ``SqliteStore.append`` raise
``sqlite3.IntegrityError`` and roll the whole transaction back. Upstream, the
gateway deduplicates requests in memory before it appends, so a duplicate
reaching the store is a programmer error; the ledger treats it like any
other failed commit, i.e. as fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from . import archive_sql, chain
from .chain import GENESIS, Head, HeadFile, LedgerCorrupt
from .metrics import COMMIT_RECORDS, COMMIT_SECONDS

__all__ = [
    "GroupCommitLedger",
    "LedgerClosed",
    "LedgerCorrupt",
    "LedgerFatal",
    "LedgerUnavailable",
    "Record",
    "SqliteStore",
    "Store",
    "open_store",
]

log = logging.getLogger(__name__)

DIGEST_BYTES_MIN = 16
DIGEST_BYTES_MAX = 32
SCAN_PAGE_RECORDS = 1024
SCHEMA_VERSION = 4
# A test write (``SqliteStore.probe``) must find room for this much: a group of records is about this big.
PROBE_BYTES = 1 << 20
# How often an idle writer looks whether the interpreter is shutting down
# (owner forgot close()); it then exits instead of hanging the shutdown.
WRITER_IDLE_POLL_S = 0.25


@dataclass(slots=True, frozen=True)
class Record:
    """One ledger record. Field order matches the table's column order."""

    kind: str  # "filing", "admit", "fees", "settle", "cancel_settle", ...
    caller: str  # calling platform id, e.g. "210000"
    request_id: str  # idempotency key, unique per caller; "" if none
    digest: bytes  # hash of the canonical request, 16..32 bytes
    key: str  # primary object id (setl_id, mdtrt_id, filing_id ...), for people reading the ledger
    body: bytes  # the event (core/events.py encoding), what replay applies
    response: bytes  # serialized protobuf response, replayed byte-identical
    seq: int = 0  # 1-based, dense; 0: let the store take the next one
    checksum: bytes = b""  # gateway/chain.py: of this record's content (computed by the store)
    chain: bytes = b""     # and bound to every record before it
    # Archive changes the event makes (core/archive.py), written in the same transaction; not a column.
    changes: tuple = ()


class Store(Protocol):
    def append(self, records: Sequence[Record]) -> list[int]:
        """Write ``records`` in ONE transaction, durable when this returns.

        Returns the assigned seqs, in the order of ``records``. The ``seq``
        field of the given records is ignored. On any exception nothing of
        the transaction is visible (or its outcome is unknown: callers must
        treat a failure as fatal).
        """
        ...

    def scan(self, after_seq: int = 0) -> Iterator[Record]:
        """All records with seq > after_seq, in seq order, in constant memory."""
        ...

    def find_request(self, caller: str, request_id: str) -> Record | None: ...

    def known_request_hashes(self, hashes: Sequence[int]) -> set[int]: ...

    def read(self, seq: int) -> Record | None:
        """The record with that seq."""
        ...

    def last_reference_load(self) -> Record | None:
        """The newest record of kind ``reference_loaded``."""
        ...

    def last_seq(self) -> int: ...

    # The archive (core/archive.py): written with the records, read by id.
    def archive_complete(self) -> bool:
        """False for a ledger written before the archive existed, until ``write_archive`` fills it."""
        ...

    def write_archive(self, visits, settlements) -> None: ...

    def visit(self, mdtrt_id: str): ...

    def settlement(self, setl_id: str): ...

    # Projections (gateway/archive_sql.py): reconciliation and problem reports.
    def problem(self, problem_id: str): ...

    def list_problems(self, province: str, state: str, after_seq: int, limit: int): ...

    def problem_notes(self, problem_id: str): ...

    def recon_totals(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = ""): ...

    def flagged(self, fixmedins_code: str, date_from: int, date_to: int, mask: int, limit: int): ...

    def open_reader(self): ...

    def close(self) -> None: ...


class LedgerFatal(Exception):
    """A commit failed or its outcome is unknown; the ledger refuses all work.

    The process must restart and rebuild its state from the store.
    """


class LedgerUnavailable(Exception):
    """The ledger cannot be opened or written (missing directory, read-only file, full disk ...): one line."""


class LedgerClosed(RuntimeError):
    """append() after close() was called: a programmer error."""


# --------------------------------------------------------------------------
# SQLite store
# --------------------------------------------------------------------------

REVERSED_KIND = "request_reversed"   # core.events.REVERSED_KIND (the store imports nothing of the core)


def _keys_of(record: Record) -> tuple[str, ...]:
    """The idempotency keys a record holds: its own, and for a reversal (冲正) the original's (its key)."""
    if record.kind == REVERSED_KIND:
        return (record.request_id, record.key) if record.request_id else (record.key,)
    return (record.request_id,) if record.request_id else ()

_COLUMNS = "kind, caller, request_id, digest, key, body, response, seq, checksum, chain"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    caller     TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    digest     BLOB    NOT NULL,
    key        TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    response   BLOB    NOT NULL,
    checksum   BLOB    NOT NULL DEFAULT x'',
    chain      BLOB    NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS records_reference ON records (seq) WHERE kind = 'reference_loaded';
CREATE TABLE IF NOT EXISTS requests (
    h   INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (h, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe (x BLOB);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
""" + archive_sql.SCHEMA

_INSERT = (
    "INSERT INTO records (seq, kind, caller, request_id, digest, key, body, response, checksum, chain)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_REQUEST = "INSERT INTO requests (h, seq) VALUES (?, ?)"


class SqliteStore:
    """``Store`` on one SQLite file: WAL, ``synchronous=FULL``.

    Threads: one write connection, used under a lock (in production only the
    ledger's writer thread calls ``append``). Every other thread that reads
    gets its own read-only connection on first use (``threading.local``);
    those are opened with ``check_same_thread=False`` only so that ``close()``
    may close them from the closing thread. Call ``close()`` once all readers
    and the writer are done.

    Seqs are the table's INTEGER PRIMARY KEY. Records given with seq 0 get
    ``max(seq) + 1 ...`` inside the write transaction; records given with
    seqs (the group-commit ledger assigns them on the event loop) must
    continue the log exactly, or the append fails. Records are never
    deleted, so seqs are dense and monotonic.

    Schema 3 adds the projections for reconciliation and problem reports
    (``archive_sql``) and each cancellation's clearing month; a schema 2
    ledger is migrated on open (the projection is filled from its records).
    Schema 2 finds idempotency keys through ``requests``, a
    table of 63-bit hashes of (caller, request_id) (an integer key costs a
    quarter of the text index it replaces: bench/ledger_throughput.py), adds
    the archive tables (``archive_sql``) and a ``meta`` table, and drops the
    first release's indexes on ``key`` and (caller, request_id).  A schema 1
    ledger is migrated on open; its archive is marked missing until the
    gateway, replaying it in full, writes it (``write_archive``).

    Schema 4 adds each record's ``checksum`` and ``chain`` (gateway/chain.py),
    computed here, on the writer thread, as records are inserted; an older
    ledger gets them on open, in seq order, in the opening transaction.  The
    head (last seq and chain) is also written to ``<ledger>.head`` after each
    commit.  Records read back one at a time (``read``, ``find_request``, the
    archive) are checked against their checksum, so a damaged old record is
    never served.

    ``max_bytes`` (0: none) caps the database's size (SQLite's
    ``max_page_count``): past it a commit fails exactly as on a full disk.
    """

    def __init__(self, path: str, max_bytes: int = 0) -> None:
        if path == ":memory:" or path.startswith("file::memory:"):
            raise ValueError("SqliteStore needs a file: an in-memory database is not durable")
        self._path = path
        self._closed = False
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._wconn = self._open_writer(path)
        if max_bytes:
            page = self._pragma(self._wconn, "page_size")
            self._pragma(self._wconn, f"max_page_count={max(1, max_bytes // page)}")
        self._legacy_last = self.legacy_last_seq()
        self._head = self._read_head()
        self.head_file = HeadFile(path)

    @property
    def path(self) -> str:
        return self._path

    def head(self) -> Head:
        """The last committed record's seq and chain value (0 and GENESIS for an empty ledger)."""
        return self._head

    def _read_head(self) -> Head:
        row = self._wconn.execute("SELECT seq, chain FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return Head(row[0], row[1]) if row is not None else Head(0, GENESIS)

    def chain_at(self, seq: int) -> bytes | None:
        """The chain value of record seq (GENESIS for 0), None if there is no such record."""
        if seq == 0:
            return GENESIS
        row = self._reader().execute("SELECT chain FROM records WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else row[0]

    # -- connections -------------------------------------------------------

    @staticmethod
    def _pragma(conn: sqlite3.Connection, statement: str) -> object:
        row = conn.execute(f"PRAGMA {statement}").fetchone()
        return None if row is None else row[0]

    def _open_writer(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            mode = self._pragma(conn, "journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise RuntimeError(f"SQLite refused WAL mode for {path!r} (journal_mode={mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            # 2 == FULL: every commit fsyncs the WAL before it returns.
            if self._pragma(conn, "synchronous") != 2:
                raise RuntimeError(f"SQLite refused synchronous=FULL for {path!r}")
            conn.execute("PRAGMA foreign_keys=OFF")
            version = self._pragma(conn, "user_version")
            if version not in (0, 1, 2, 3, SCHEMA_VERSION):
                raise RuntimeError(f"ledger {path!r} has schema version {version}, expected {SCHEMA_VERSION}")
            conn.create_function("yidi_request_hash", 2, archive_sql.request_hash, deterministic=True)
            add_columns = ("ALTER TABLE records ADD COLUMN checksum BLOB NOT NULL DEFAULT x'';"
                           " ALTER TABLE records ADD COLUMN chain BLOB NOT NULL DEFAULT x''; ") if version in (1, 2, 3) else ""
            # One script (executescript would commit an open transaction).
            conn.executescript("BEGIN IMMEDIATE; " + add_columns + _SCHEMA)
            if version == 1:
                self._migrate_v1(conn)
            elif version == 2:
                self._migrate_v2(conn)
            if version in (1, 2, 3):
                self._migrate_chain(conn)
            conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('archive', 'complete')")
            conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('legacy_last_seq', '0')")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate_v1(conn: sqlite3.Connection) -> None:
        """Schema 1 (the first release) → 2, inside the opening transaction.

        The unique text index on (caller, request_id) becomes the hash table
        ``requests``; the archive is marked missing until the gateway, which
        replays such a ledger in full, writes it (``write_archive``); every id
        the first release issued is numbered at most ``legacy_last_seq``.
        """
        conn.execute("DROP INDEX IF EXISTS records_request")
        conn.execute("DROP INDEX IF EXISTS records_key")
        conn.execute("INSERT INTO requests (h, seq) SELECT yidi_request_hash(caller, request_id), seq"
                     " FROM records WHERE request_id != ''")
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
        conn.execute("INSERT INTO meta (name, value) VALUES ('archive', 'missing')")
        conn.execute("INSERT INTO meta (name, value) VALUES ('legacy_last_seq', ?)", (str(last),))

    @staticmethod
    def _migrate_chain(conn: sqlite3.Connection) -> None:
        """Schema 1–3 → 4: each record's checksum and chain value, in seq order, inside the opening transaction."""
        previous, after = GENESIS, 0
        while True:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                                (after, SCAN_PAGE_RECORDS)).fetchall()
            updates = []
            for row in rows:
                r = Record(*row)
                sum_ = chain.checksum(r.seq, r.kind, r.caller, r.request_id, r.digest, r.key, r.body, r.response)
                previous = chain.link(previous, sum_)
                updates.append((sum_, previous, r.seq))
            conn.executemany("UPDATE records SET checksum = ?, chain = ? WHERE seq = ?", updates)
            if len(rows) < SCAN_PAGE_RECORDS:
                return
            after = rows[-1][7]

    @staticmethod
    def _migrate_v2(conn: sqlite3.Connection) -> None:
        """Schema 2 → 3, inside the opening transaction: cancellations record their clearing month (0 for
        those already made, whose answers did not carry one) and the reconciliation projection is filled
        from the settlements already in the ledger."""
        conn.execute("ALTER TABLE cancellations ADD COLUMN clearing_month INTEGER NOT NULL DEFAULT 0")
        row = conn.execute("SELECT value FROM meta WHERE name = 'legacy_last_seq'").fetchone()
        archive_sql.backfill_projection(conn, int(row[0]) if row else 0)

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise sqlite3.ProgrammingError("SqliteStore is closed")
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        with self._readers_lock:
            self._readers.append(conn)
        self._local.conn = conn
        return conn

    # -- Store -------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> list[int]:
        if not records:
            return []
        with self._write_lock:
            with self._transaction() as conn:
                last = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]
                if records[0].seq:
                    seqs = [r.seq for r in records]
                    if seqs != list(range(last + 1, last + 1 + len(records))):
                        raise RuntimeError(f"records {seqs[0]}..{seqs[-1]} do not continue the ledger at {last}")
                rows, head = self._chained(records, last)
                conn.executemany(_INSERT, rows)
                keyed = [(archive_sql.request_hash(r.caller, request_id), last + i)
                         for i, r in enumerate(records, 1) for request_id in _keys_of(r)]
                self._refuse_known_keys(conn, records, keyed)
                conn.executemany(_INSERT_REQUEST, keyed)
                for r in records:
                    if r.changes:
                        archive_sql.write(conn, r.changes)
            self._head = head
            self._write_head(head)
        return list(range(last + 1, last + 1 + len(records)))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer's connection (the caller holds the write lock): committed when
        the block ends, rolled back if it raises."""
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _chained(self, records: Sequence[Record], last: int) -> tuple[list[tuple], Head]:
        """The rows to insert, each with its checksum and chain value, and the new head (writer thread)."""
        if last != self._head.seq:
            raise RuntimeError(f"ledger ends at {last} but its head is at {self._head.seq}: written by another process?")
        previous, rows, seq = self._head.chain, [], last
        checksum, link = chain.checksum, chain.link
        for r in records:
            seq += 1
            sum_ = checksum(seq, r.kind, r.caller, r.request_id, r.digest, r.key, r.body, r.response)
            previous = link(previous, sum_)
            rows.append((seq, r.kind, r.caller, r.request_id, r.digest, r.key, r.body, r.response, sum_, previous))
        return rows, Head(seq, previous)

    def _write_head(self, head: Head) -> None:
        try:
            self.head_file.write(head)
        except OSError as err:  # the commit is durable; only the extra copy of its head is late
            log.error("cannot update %s: %s", self.head_file.path, err)

    def probe(self) -> None:
        """A test write: room for PROBE_BYTES in the database and its WAL, committed and fsynced, then freed.

        Raises (sqlite3.Error, OSError) where a real commit would fail: a full disk, a failing fsync.
        """
        with self._write_lock, self._transaction() as conn:
            conn.execute("INSERT INTO probe (x) VALUES (zeroblob(?))", (PROBE_BYTES,))
            conn.execute("DELETE FROM probe")

    @staticmethod
    def _refuse_known_keys(conn: sqlite3.Connection, records: Sequence[Record], keyed: list) -> None:
        """A (caller, request_id) already in the ledger, or twice in this group: IntegrityError.

        The gateway never records a key twice (it answers the first record), so
        this is a guard against a bug, at the cost of one index probe per group.
        """
        keys = {(r.caller, request_id) for r in records for request_id in _keys_of(r)}
        if len(keys) != len(keyed):
            raise sqlite3.IntegrityError("a request id appears twice in one group")
        for start in range(0, len(keyed), 500):
            hashes = [h for h, _ in keyed[start:start + 500]]
            for (seq,) in conn.execute(f"SELECT seq FROM requests WHERE h IN ({','.join('?' * len(hashes))})",
                                       hashes).fetchall():
                caller, request_id, kind, key = conn.execute(
                    "SELECT caller, request_id, kind, key FROM records WHERE seq = ?", (seq,)).fetchone()
                if (caller, request_id) in keys or (kind == REVERSED_KIND and (caller, key) in keys):
                    raise sqlite3.IntegrityError(f"request id of {caller} already in the ledger at seq {seq}")

    def scan(self, after_seq: int = 0) -> Iterator[Record]:
        # Pages keyed by seq rather than one long-lived cursor: no statement
        # stays open if the consumer stops early, and memory is one page.
        # The log is append-only with seqs assigned under the write lock, so
        # paging by seq never skips or repeats a record.
        while True:
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, SCAN_PAGE_RECORDS),
                )
                .fetchall()
            )
            for row in rows:
                yield Record(*row)
            if len(rows) < SCAN_PAGE_RECORDS:
                return
            after_seq = rows[-1][7]

    def known_request_hashes(self, hashes: Sequence[int]) -> set[int]:
        """Which of these key hashes (archive_sql.request_hash) the ledger holds: one indexed query per 500."""
        conn, found = self._reader(), set()
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            found.update(h for (h,) in conn.execute(
                f"SELECT h FROM requests WHERE h IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def find_request(self, caller: str, request_id: str) -> Record | None:
        if not request_id:
            return None
        conn = self._reader()
        for (seq,) in conn.execute("SELECT seq FROM requests WHERE h = ?",
                                   (archive_sql.request_hash(caller, request_id),)).fetchall():
            row = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE seq = ?", (seq,)).fetchone()
            # A 63-bit hash may (very rarely) collide; a reversal (冲正) also holds its original's key.
            if row[1] == caller and (row[2] == request_id or (row[0] == REVERSED_KIND and row[4] == request_id)):
                return self._checked(Record(*row))
        return None

    def _checked(self, record: Record) -> Record:
        """A record read back alone: its content must still match its checksum (LedgerCorrupt if not)."""
        if record.checksum != chain.checksum(record.seq, record.kind, record.caller, record.request_id,
                                             record.digest, record.key, record.body, record.response):
            raise LedgerCorrupt(self._path, record.seq, "its content does not match its checksum (it was changed "
                                                        "after it was written)")
        return record

    def last_reference_load(self) -> Record | None:
        row = self._reader().execute(
            f"SELECT {_COLUMNS} FROM records WHERE kind = 'reference_loaded' ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else self._checked(Record(*row))

    def archive_complete(self) -> bool:
        row = self._reader().execute("SELECT value FROM meta WHERE name = 'archive'").fetchone()
        return row is not None and row[0] == "complete"

    def write_archive(self, visits, settlements) -> None:
        """Fill the archive of a migrated first-release ledger in one transaction, and mark it complete."""
        with self._write_lock, self._transaction() as conn:
            archive_sql.write_legacy(conn, visits, settlements)
            conn.execute("UPDATE meta SET value = 'complete' WHERE name = 'archive'")

    def legacy_last_seq(self) -> int:
        row = self._reader().execute("SELECT value FROM meta WHERE name = 'legacy_last_seq'").fetchone()
        return int(row[0]) if row is not None else 0

    def visit(self, mdtrt_id: str):
        return archive_sql.read_visit(self._reader(), mdtrt_id, self._legacy_last, self.read)

    def settlement(self, setl_id: str):
        return archive_sql.read_settlement(self._reader(), setl_id, self._legacy_last, self.read)

    def problem(self, problem_id: str):
        return archive_sql.read_problem(self._reader(), problem_id)

    def list_problems(self, province: str, state: str, after_seq: int, limit: int):
        return archive_sql.list_problems(self._reader(), province, state, after_seq, limit)

    def problem_notes(self, problem_id: str):
        return archive_sql.problem_notes(self._reader(), problem_id)

    def recon_totals(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = ""):
        return archive_sql.recon_totals(self._reader(), fixmedins_code, date_from, date_to, insutype)

    def flagged(self, fixmedins_code: str, date_from: int, date_to: int, mask: int, limit: int):
        return archive_sql.flagged(self._reader(), fixmedins_code, date_from, date_to, mask, limit)

    def open_reader(self) -> sqlite3.Connection:
        """A read-only connection of its own (a long read, e.g. a detail reconciliation); the caller closes it."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        return conn

    def read(self, seq: int) -> Record | None:
        """The record with that seq, checked against its checksum."""
        row = self._reader().execute(f"SELECT {_COLUMNS} FROM records WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else self._checked(Record(*row))

    def last_seq(self) -> int:
        return self._reader().execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0]

    def pragma(self, name: str) -> object:
        """Read a PRAGMA on the write connection (for checks and tests)."""
        with self._write_lock:
            return self._pragma(self._wconn, name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._write_lock:
            self._wconn.close()
        self.head_file.close()


def open_store(url_or_path: str, max_bytes: int = 0) -> Store:
    """Open the ledger store named by a path, ``sqlite:///path`` or a URL.

    ``postgresql://`` is reserved for the PostgreSQL backend, which is not
    implemented yet.
    """
    if url_or_path.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError(
            "PostgreSQL ledger backend is not yet supported; use a SQLite file path"
        )
    if url_or_path.startswith("sqlite:///"):
        # As SQLAlchemy: sqlite:///relative/path, sqlite:////absolute/path.
        url_or_path = url_or_path[len("sqlite:///") :]
    elif "://" in url_or_path:
        raise ValueError(f"unsupported ledger URL {url_or_path!r}; give a SQLite file path")
    try:
        return SqliteStore(url_or_path, max_bytes=max_bytes)
    except (sqlite3.Error, OSError) as err:
        raise LedgerUnavailable(f"cannot open the ledger {os.path.abspath(url_or_path)}: {_why(err)}") from None


def _why(err: BaseException) -> str:
    """What went wrong opening a ledger, in words an operator acts on."""
    text = str(err)
    hints = {
        "unable to open database file": "its directory does not exist or is not accessible",
        "readonly database": "the file or its directory is read-only (a read-only mount or an immutable file?)",
        "database or disk is full": "the disk is full",
        "file is not a database": "it is not a SQLite database",
        "disk I/O error": "the disk reports an I/O error",
    }
    for needle, hint in hints.items():
        if needle in text:
            return f"{hint} ({text})"
    return text


# --------------------------------------------------------------------------
# Group commit
# --------------------------------------------------------------------------

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
        store: Store,
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
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            records, futures, stop = taken
            if records:
                start = time.perf_counter()
                try:
                    seqs = self._store.append(records)
                    if seqs != [r.seq for r in records]:
                        raise RuntimeError(f"store wrote seqs {seqs[:1]}.. for records {records[0].seq}..")
                except BaseException as exc:  # noqa: BLE001 - every failure is fatal
                    self._die(futures, exc)
                    return
                COMMIT_SECONDS.observe(time.perf_counter() - start)
                COMMIT_RECORDS.observe(len(records))
                self.commits += 1
                self.records += len(records)
                if len(records) > self.max_batch_seen:
                    self.max_batch_seen = len(records)
                self._call_loop(self._resolve, futures)
            if stop:
                self._call_loop(self._signal_stopped)
                return

    def _die(self, futures: list[asyncio.Future], exc: BaseException) -> None:
        self._fatal = exc  # set before scheduling _fail_all: see its comment
        log.critical("ledger commit failed; the ledger is now fatal", exc_info=exc)
        self._call_loop(self._fail_all, futures, exc)
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except BaseException:  # noqa: BLE001
                log.exception("ledger on_fatal handler raised")
