"""``SqliteStore``: every part of the store (gateway/store/parts.py) in one SQLite file.

WAL mode with ``synchronous=FULL``: every commit fsyncs the WAL before it
returns.  A group of records is packed into ``groups`` rows of at most
``ROW_RECORDS`` records, with their checksums and chain values
(gateway/store/packed.py), beside the derived
tables (gateway/store/sqlite/derived.py) and the sealed head row, all written
in one transaction per group.  The schema version is the file's
``user_version`` (6); older ledgers are migrated when opened
(gateway/store/sqlite/migrate.py; a schema-5 ledger keeps its one row per
record in ``records``, read as they are); ``yidi verify-ledger`` proves a
whole file offline (gateway/store/sqlite/verify.py).

A duplicate ``(caller, request_id)`` makes ``append`` raise
``sqlite3.IntegrityError`` and roll the whole transaction back. Upstream, the
gateway deduplicates requests in memory before it appends, so a duplicate
reaching the store is a programmer error; the ledger treats it like any
other failed commit, i.e. as fatal.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence

import msgspec

from core.events import REVERSED_KIND

from .. import chain, packed
from ..chain import Head, HeadFile, HeadRow, LedgerCorrupt
from ..chain import decode_head_row as _HEAD_DECODE
from ..chain import encode_head_row as _HEAD_ENCODE
from ..packed import PackedLog
from ..parts import LedgerUnavailable, Record, StorageDown
from ..rows import TABLES, checked, legacy_rows, request_hash
from ..reader import ArchiveReads
from ..seal import LedgerKey, SealKey
from . import derived, migrate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 6
# The most records a groups row holds: a commit group is packed into rows of this many.  SQLite reads a long
# blob's overflow pages as a chain, so reading at offset X of a row costs X / 4 KiB page reads (the tail of a
# 500-settlement row: ~1 ms here, its head ~10 µs); rows of 64 settlement records (~40 KiB) keep any read
# within ~10 pages, at one more row per 64 records written (docs/design.md, "The ledger").
ROW_RECORDS = 64
# A test write (``SqliteStore.probe``) must find room for this much: a group of records is about this big.
PROBE_BYTES = 1 << 20


class LedgerMoved(OSError):
    """The ledger's file was unlinked or replaced under the running gateway: its commits reach no one."""


# The log (packed groups, and the rows of records written one per row before packing) and the head row; the
# derived tables are derived.SCHEMA.
_RECORDS = """
CREATE TABLE IF NOT EXISTS groups (
    last_seq   INTEGER PRIMARY KEY,
    first_seq  INTEGER NOT NULL,
    body       BLOB    NOT NULL
);
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
CREATE INDEX IF NOT EXISTS records_kind ON records (kind);
CREATE TABLE IF NOT EXISTS probe (x BLOB);
CREATE TABLE IF NOT EXISTS head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    body BLOB    NOT NULL,
    tag  BLOB    NOT NULL
);
"""

_INSERT_GROUP = "INSERT INTO groups (last_seq, first_seq, body) VALUES (?, ?, ?)"


def lock_path(ledger_path: str) -> str:
    return ledger_path + ".lock"


class SqliteStore(PackedLog, ArchiveReads):
    """Every part of ``Store`` on one SQLite file: WAL, ``synchronous=FULL``, the chain keyed with the seal key.

    Opening it:

    1. takes ``<ledger>.lock`` (an exclusive ``flock``): a second gateway on
       the same ledger is refused with one sentence naming the holder's PID;
    2. refuses a ledger file that is gone while its head file remains;
    3. migrates an older schema (migrate.py) in one transaction;
    4. proves the head row (its tag, its last record and chain value, the
       row count of every table) and checks the head file and the witness.

    Threads: one write connection, used under a lock (in production only the
    ledger's writer thread calls ``append``). Every other thread that reads
    gets its own read-only connection on first use (``threading.local``).

    Seqs are dense and monotonic (records are never deleted). Records given
    with seq 0 get the next ones; records given with seqs must continue the
    log exactly. Records read back one at a time are proved before they are
    returned: content against checksum, checksum against chain value
    (gateway/store/chain.py, packed.py); derived rows against their tags
    (gateway/store/rows.py).

    After every commit the store checks that the file it wrote is still the
    one at its path (device and inode of the database and its WAL): a ledger
    unlinked or replaced under the gateway makes that commit fail (fatal),
    since whatever it wrote is in a file no one will read.

    ``max_bytes`` (0: none) caps the database's size (SQLite's
    ``max_page_count``): past it a commit fails exactly as on a full disk.
    ``witness_dir``: where the sealed head is also written, fsynced, after
    every commit (another volume; gateway/store/chain.py).
    """

    part = 0       # one partition: the whole ledger
    base_seq = 0   # numbered from 1

    def __init__(self, path: str, key: SealKey, max_bytes: int = 0, witness_dir: str = "") -> None:
        if path == ":memory:" or path.startswith("file::memory:"):
            raise ValueError("SqliteStore needs a file: an in-memory database is not durable")
        self._path = path
        self._closed = False
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._lock_fd = self._lock(path)
        try:
            if not os.path.exists(path) and os.path.exists(chain.head_path(path)):
                raise LedgerCorrupt(path, 0, f"is missing: the ledger file is gone but its head file "
                                             f"{chain.head_path(path)} remains (acknowledged records were lost)")
            self._wconn, self._head_row = self._open_writer(path, key)
            self.key = key.for_ledger(self._head_row.ledger_id)
            if max_bytes:
                page = self._pragma(self._wconn, "page_size")
                self._pragma(self._wconn, f"max_page_count={max(1, max_bytes // page)}")
            self._prove_head()
            self.head_file = HeadFile(chain.head_path(path), self.key)
            self.witness = HeadFile(chain.witness_path(witness_dir, self.key.ledger_id), self.key, durable=True) \
                if witness_dir else None
            self._check_copies()
            self._files = self._identity()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        return self._path

    def legacy_last_seq(self) -> int:
        return self._head_row.legacy_last_seq

    def head(self) -> Head:
        """The last committed record's seq and chain value (0 and the genesis value for an empty ledger)."""
        return Head(self._head_row.seq, self._head_row.chain)

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        return self._reader().execute(sql, args).fetchall()

    @contextlib.contextmanager
    def _group(self, seq: int) -> Iterator[tuple | None]:
        """The row holding ``seq`` with its body as an incremental blob handle: a read of one record reads the
        row's head and the record's bytes, not the whole row (its last_seq is its rowid)."""
        rows = self._query("SELECT first_seq, last_seq FROM groups WHERE last_seq >= ? ORDER BY last_seq LIMIT 1",
                           (seq,))
        if not rows or rows[0][0] > seq:
            yield None
            return
        first, last = rows[0]
        with self._reader().blobopen("groups", "body", last, readonly=True) as blob:
            head = packed.head_bytes(last - first + 1)
            yield first, last, packed.Slices({(0, head): blob[0:head]}, len(blob), lambda start, stop: blob[start:stop])

    # -- opening -------------------------------------------------------------

    @staticmethod
    def _lock(path: str) -> int | None:
        """An exclusive lock on ``<ledger>.lock``, holding our PID; None where the directory is not there."""
        try:
            fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None   # no directory: opening the database says why, in its own words
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LedgerUnavailable(f"the ledger {os.path.abspath(path)} is in use by process {holder} (another "
                                    "yidi serve on the same ledger); refusing to start a second writer") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    @staticmethod
    def _pragma(conn: sqlite3.Connection, statement: str) -> object:
        row = conn.execute(f"PRAGMA {statement}").fetchone()
        return None if row is None else row[0]

    def _open_writer(self, path: str, key: SealKey) -> tuple[sqlite3.Connection, HeadRow]:
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
            if version not in (0, 1, 2, 3, 4, 5, SCHEMA_VERSION):
                raise RuntimeError(f"ledger {path!r} has schema version {version}, expected {SCHEMA_VERSION}")
            if version == SCHEMA_VERSION:
                return conn, self._read_head_row(conn, path)
            conn.execute("BEGIN IMMEDIATE")
            if version == 0:
                head = self._create(conn, key)
            elif version == 5:   # records packed from here on: the tables they go to, empty
                for statement in migrate.statements(_RECORDS + derived.SCHEMA):
                    conn.execute(statement)
                head = self._read_head_row(conn, path)
            else:
                head = self._migrated(conn, version, path, key)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn, head

    def _create(self, conn: sqlite3.Connection, key: SealKey) -> HeadRow:
        for statement in migrate.statements(_RECORDS + derived.SCHEMA):
            conn.execute(statement)
        ledger_id = uuid.uuid4().hex
        head = HeadRow(ledger_id, 0, key.for_ledger(ledger_id).genesis, dict.fromkeys(TABLES, 0))
        self._write_head_row(conn, head, key.for_ledger(ledger_id))
        return head

    def _migrated(self, conn: sqlite3.Connection, version: int, path: str, key: SealKey) -> HeadRow:
        facts = migrate.migrate(conn, version, path, key, _RECORDS)
        lkey = key.for_ledger(facts["ledger_id"])
        counts = {t: conn.execute(packed.count_sql(t)).fetchone()[0] for t in TABLES}
        head = HeadRow(facts["ledger_id"], facts["seq"], facts["chain"], counts, facts["legacy_last_seq"],
                       facts["archive"])
        self._write_head_row(conn, head, lkey)
        HeadFile(chain.head_path(path), lkey).write(Head(head.seq, head.chain))
        return head

    @staticmethod
    def _write_head_row(conn: sqlite3.Connection, head: HeadRow, key: LedgerKey) -> None:
        body = _HEAD_ENCODE(head)
        conn.execute("INSERT OR REPLACE INTO head (id, body, tag) VALUES (1, ?, ?)", (body, key.mac(b"head" + body)))

    @staticmethod
    def _read_head_row(conn: sqlite3.Connection, path: str) -> HeadRow:
        row = conn.execute("SELECT body, tag FROM head WHERE id = 1").fetchone()
        if row is None:
            raise LedgerCorrupt(path, 0, "has no head row (it was deleted): the ledger cannot prove itself")
        try:
            return _HEAD_DECODE(row[0])
        except msgspec.DecodeError:
            raise LedgerCorrupt(path, 0, "has a head row that cannot be read (it was changed)") from None

    def _prove_head(self) -> None:
        """The head row is sealed by us and agrees with the tables (LedgerCorrupt naming what differs)."""
        conn = self._wconn
        body, tag = conn.execute("SELECT body, tag FROM head WHERE id = 1").fetchone()
        chain.prove_head_row(self._path, self.key, self._head_row, body, tag, self.last_seq(), self.chain_at, TABLES,
                             lambda table: conn.execute(packed.count_sql(table)).fetchone()[0])

    def _check_copies(self) -> None:
        """The head file and the witness: never ahead of the ledger, never another chain at their seq."""
        last = self._head_row.seq
        chain.check_head(self._path, self.head_file.read(), last, self.chain_at, self.head_file.path)
        if self.witness is not None:
            chain.check_witness(self._path, self.witness, self._head_row, self.chain_at)

    def _identity(self) -> tuple:
        """The device and inode of the database file and of its WAL (None where it does not exist yet)."""
        out = []
        for name in (self._path, self._path + "-wal"):
            try:
                st = os.stat(name)
                out.append((st.st_dev, st.st_ino))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _check_identity(self) -> None:
        now = self._identity()
        for was, is_, name in zip(self._files, now, ("", "-wal"), strict=True):
            if was is not None and was != is_:
                raise LedgerMoved(f"the ledger file {self._path}{name} was removed or replaced while the gateway was "
                                  "writing it: its last commit went to a file no one will read; refusing every write")
        self._files = tuple(w if w is not None else n for w, n in zip(self._files, now, strict=True))

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

    def _archive(self) -> derived.Reader:
        reader = getattr(self._local, "archive", None)
        if reader is None:
            reader = self._local.archive = derived.Reader(self._reader(), self.key, self._path,
                                                              self._head_row.legacy_last_seq, self.read)
        return reader

    # -- Store -------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> list[int]:
        if not records:
            return []
        with self._write_lock:
            last = self._head_row.seq
            if records[0].seq and [r.seq for r in records] != list(range(last + 1, last + 1 + len(records))):
                raise RuntimeError(f"records {records[0].seq}..{records[-1].seq} do not continue the ledger at {last}")
            group = packed.group(records, last, self._head_row.chain, self.key, ROW_RECORDS)
            head_row = self._advanced(group.head, group.added)
            with self._transaction() as conn:
                (written,) = conn.execute(packed.last_seq_sql()).fetchone()
                if written != last:
                    raise RuntimeError(f"ledger ends at {written} but its head is at {last}: written by another "
                                       "process?")
                self._refuse_known_keys(conn, group.requests)
                conn.executemany(_INSERT_GROUP, group.rows)
                conn.executemany(derived.INSERT["requests"], [row[2:] for row in group.requests])
                for table, rows in group.derived.items():
                    conn.executemany(derived.INSERT[table], rows)
                self._write_head_row(conn, head_row, self.key)
            self._head_row = head_row
            self._check_identity()
            self._write_head(group.head)
        return list(range(last + 1, last + 1 + len(records)))

    def _advanced(self, head: Head, added: dict[str, int]) -> HeadRow:
        return chain.advanced(self._head_row, head, added, self.witness is not None)

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

    def _write_head(self, head: Head) -> None:
        """The copies of the head: the witness first (fsynced; a failure is a failed commit), then the head file."""
        if self.witness is not None:
            self.witness.write(head)
        try:
            self.head_file.write(head)
        except OSError as err:  # the commit is durable; only the extra copy of its head is late
            log.error("cannot update %s: %s", self.head_file.path, err)

    def probe(self) -> None:
        """A test write: room for PROBE_BYTES in the database and its WAL, committed and fsynced, then freed.

        Raises StorageDown (an OSError) where a real commit would fail: a full disk, a failing fsync.
        """
        try:
            with self._write_lock, self._transaction() as conn:
                conn.execute("INSERT INTO probe (x) VALUES (zeroblob(?))", (PROBE_BYTES,))
                conn.execute("DELETE FROM probe")
        except sqlite3.Error as err:
            raise StorageDown(str(err)) from err

    def _refuse_known_keys(self, conn: sqlite3.Connection, keyed: list) -> None:
        """A (caller, request_id) of the group's idempotency rows already in the ledger, or twice in the group:
        IntegrityError.

        The gateway never records a key twice (it answers the first record), so
        this is a guard against a bug, at the cost of one index probe per group.
        """
        keys = {(row[0], row[1]) for row in keyed}   # (caller, request_id) of every key the group holds
        if len(keys) != len(keyed):
            raise sqlite3.IntegrityError("a request id appears twice in one group")
        for start in range(0, len(keyed), 500):
            hashes = [row[2] for row in keyed[start:start + 500]]
            for (seq,) in conn.execute(f"SELECT seq FROM requests WHERE h IN ({','.join('?' * len(hashes))})",
                                       hashes).fetchall():
                held = self.read(seq)
                if held is not None and ((held.caller, held.request_id) in keys or
                                         (held.kind == REVERSED_KIND and (held.caller, held.key) in keys)):
                    raise sqlite3.IntegrityError(f"request id of {held.caller} already in the ledger at seq {seq}")

    def _request_rows(self, hashes: Sequence[int]) -> list[tuple[int, int]]:
        """(h, seq) of the idempotency index's rows with these hashes, each proved by its tag."""
        conn, out = self._reader(), []
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            for row in conn.execute(f"SELECT h, seq, tag FROM requests WHERE h IN ({','.join('?' * len(chunk))})",
                                    chunk):
                out.append(checked(self.key, self._path, "requests", row))
        return out

    def known_request_hashes(self, hashes: Sequence[int]) -> set[int]:
        """Which of these key hashes (rows.request_hash) the ledger holds: one indexed query per 500."""
        return {h for h, _ in self._request_rows(hashes)}

    def find_request(self, caller: str, request_id: str) -> Record | None:
        if not request_id:
            return None
        for _, seq in self._request_rows([request_hash(caller, request_id)]):
            record = self.read(seq)
            if record is None:
                raise LedgerCorrupt(self._path, seq, "is missing, though the idempotency index holds a key of it")
            # A 63-bit hash may (very rarely) collide; a reversal (冲正) also holds its original's key.
            if record.caller == caller and (record.request_id == request_id or
                                            (record.kind == REVERSED_KIND and record.key == request_id)):
                return record
        return None

    def archive_complete(self) -> bool:
        return self._head_row.archive == "complete"

    def write_archive(self, visits, settlements) -> None:
        """Fill the archive of a migrated schema-1 ledger in one transaction, and mark it complete."""
        with self._write_lock, self._transaction() as conn:
            rows = derived.Rows(conn, self.key)
            rows.insert_all(legacy_rows(visits, settlements))
            head_row = msgspec.structs.replace(self._advanced(self.head(), rows.added), archive="complete")
            self._write_head_row(conn, head_row, self.key)
        self._head_row = head_row

    def recon_range(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = ""):
        """A cursor of its own (a long read, e.g. a detail reconciliation) over the range's settlements."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        reader = derived.Reader(conn, self.key, self._path, self._head_row.legacy_last_seq, self.read)
        return reader.recon_cursor(fixmedins_code, date_from, date_to, insutype)

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
        if getattr(self, "_wconn", None) is not None:
            with self._write_lock:
                self._wconn.close()
        for copy in (getattr(self, "head_file", None), getattr(self, "witness", None)):
            if copy is not None:
                copy.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # releases the lock
            self._lock_fd = None


def open_sqlite(path: str, key: SealKey, max_bytes: int = 0, witness_dir: str = "") -> SqliteStore:
    """``SqliteStore(...)``, or LedgerUnavailable saying in an operator's words why the file cannot be opened."""
    try:
        return SqliteStore(path, key, max_bytes=max_bytes, witness_dir=witness_dir)
    except (sqlite3.Error, OSError) as err:
        raise LedgerUnavailable(f"cannot open the ledger {os.path.abspath(path)}: {_why(err)}") from None



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
