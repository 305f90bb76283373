"""``PostgresStore``: every part of the store (gateway/store/parts.py) in one PostgreSQL database, with psycopg 3.

The same ledger as SQLite's, row for row: one ``groups`` row per group of
records, packed with their checksums and keyed chain values
(gateway/store/packed.py, chain.py), the derived rows with their tags
(gateway/store/rows.py), the sealed head row, all written in ONE transaction
per group of records; ``append`` returns once COMMIT has returned, with
``synchronous_commit = on`` (and a cluster with ``fsync = off`` is refused),
so a reply is never sent for a group the server could still lose.  Reads
(the archive, the projections) are the SQLite backend's own queries
(gateway/store/reader.py).  Schema: gateway/store/postgresql/schema.py.

One writer per partition, by a lease (lease.py): opening the store reads
and proves the ledger without writing; ``take_over(token)``, once this node
holds the partition's lease, makes the store the writer with the lease's
fencing token.  Every append rewrites the head row only where the token is
still its own (``Deposed`` otherwise, a failed commit).  ``open_postgresql``
does both for a tool (takes the lease at once, renews it from a thread, gives
it up on close); a gateway node does them itself (gateway/ownership.py).  Why
psycopg 3 and not asyncpg: docs/postgresql.md.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Sequence

import msgspec
import psycopg

from core import copy_binary, events
from core.events import REVERSED_KIND
from core.partition import route_names, seq_base

from .. import chain, packed, snapshot
from ..chain import Head, HeadFile, HeadRow, LedgerCorrupt, decode_head_row, encode_head_row
from ..packed import PackedLog
from ..parts import Deposed, LedgerUnavailable, Record, StorageDown
from ..reader import ArchiveReads, Reader
from ..rows import COLUMNS, TABLES, checked, request_hash
from ..seal import LedgerKey, SealKey
from . import log_reads, safe_url
from .lease import LeaseKeeper, writer_name
from .schema import COPY_TYPES, SCHEMA, SCHEMA_VERSION

# A table's rows of a group at least this big go by COPY, smaller ones by executemany: measured, executemany is
# faster for one record and COPY five times faster for 100 (docs/postgresql.md); 32 lies between.
COPY_MIN_ROWS = 32
# The first key of the advisory lock that lets one node at a time create the schema ("yidi" in ASCII).
LOCK_CLASS = 0x79696469
# Its second key for the clearing lock (the schema's is -1).
CLEARING_LOCK = -2
# A tool's lease (open_postgresql): its length and renewal period; a gateway's are its options.
LEASE_TTL_S = 2.0
LEASE_RENEW_S = 0.5

_REQUEST_COLUMNS = ("caller", "request_id", "h", "seq", "tag")
FILED_KIND = "filed"
ROUTES_PER_INSERT = 10_000
_DELETE_CLAIMS = ("DELETE FROM request_claims c USING unnest(%s::text[], %s::text[]) AS k(c, r) "
                  "WHERE c.caller = k.c AND c.request_id = k.r AND c.part = %s")


class PostgresStore(PackedLog, ArchiveReads):
    """Every part of ``Store`` on one PostgreSQL database (``SnapshotStore`` too: ``snapshot_store``).

    Threads: one write connection (autocommit; every write is an explicit
    transaction), used under a lock (the ledger's writer thread appends);
    every other thread that reads gets its own autocommit
    connection on first use.  A long range read (``recon_range``) has a
    connection and a server-side cursor of its own.
    """

    def __init__(self, url: str, key: SealKey, witness_dir: str = "", part: int = 0,
                 lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._url = url
        self._path = safe_url(url)
        self.part = part
        self.partitioned = True   # PackedLog: records are read in the partition their seq names
        self.base_seq = seq_base(part)   # the partition's records are numbered from here on (core/partition.py)
        self._token = 0   # the fencing token of this node's lease; 0: not the writer
        self.split = False   # the ledger has several partitions: the persons filed are routed (person_routes)
        self.lease = None   # a tool's LeaseKeeper (open_postgresql), given up on close
        self._lease_ttl_s = lease_ttl_s
        self._closed = False
        self._local = threading.local()
        self._readers: list[_Reads] = []
        self._readers_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wconn: psycopg.Connection | None = None
        self._monitor = _Reads(self)
        self._monitor_lock = threading.Lock()
        try:
            self._wconn = self._connect(autocommit=True, writer=True)
            self._check_durable()
            self._create(key)
            self._head_row = self._prove_head(key)
            self.witness = HeadFile(chain.witness_path(witness_dir, self.key.ledger_id, part), self.key, durable=True) \
                if witness_dir else None
            if self.witness is not None:
                chain.check_witness(self._path, self.witness, self._head_row, self.chain_at)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        return self._path

    # -- opening -------------------------------------------------------------

    def _connect(self, autocommit: bool, writer: bool = False, lock_timeout_s: float = 0,
                 synchronous: bool = True) -> psycopg.Connection:
        # a writer's session names its partition: a node taking the partition over ends only that partition's
        # stalled writer (lease.py), never another partition's, which writes the shared head table too
        name = (writer_name(self.part) if writer else "yidi ") + f"pid {os.getpid()} on {socket.gethostname()}"
        name = name[:63]
        options = f"-c synchronous_commit={'on' if synchronous else 'off'}"
        if writer:   # a writer stalled between a transaction's statements (SIGSTOP) loses it, and its locks
            options += f" -c idle_in_transaction_session_timeout={int(self._lease_ttl_s * 1000)}"
        if lock_timeout_s:
            options += f" -c lock_timeout={int(lock_timeout_s * 1000)}"
        return psycopg.connect(self._url, autocommit=autocommit, application_name=name, options=options,
                               connect_timeout=max(2, int(self._lease_ttl_s)))

    def connect_lease(self) -> psycopg.Connection:
        """A lease keeper's own connection: a lock held by another stalled node fails a take instead of blocking
        it, and a take stalled itself ends its session after a lease's length."""
        return self._connect(autocommit=True, writer=True, lock_timeout_s=self._lease_ttl_s / 2)

    def _check_durable(self) -> None:
        (fsync,) = self._wconn.execute("SHOW fsync").fetchone()
        (sync,) = self._wconn.execute("SHOW synchronous_commit").fetchone()
        if fsync != "on" or sync not in ("on", "remote_write", "remote_apply"):
            raise LedgerUnavailable(f"the PostgreSQL server of {self._path} runs with fsync={fsync}, "
                                    f"synchronous_commit={sync}: a commit there is not durable; refusing to use it")

    def _create(self, key: SealKey) -> None:
        """The schema and the partition's head row, on an empty database (one node at a time)."""
        conn = self._wconn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, -1)", (LOCK_CLASS,))
            conn.execute(SCHEMA)
            # Schema 1 → 2 is SCHEMA's new tables: a schema-1 ledger's records rows are read as they are.
            conn.execute("UPDATE head SET schema = %s WHERE schema = 1", (SCHEMA_VERSION,))
            if conn.execute("SELECT 1 FROM head WHERE part = %s", (self.part,)).fetchone() is None:
                # one ledger, one id: every partition's rows are tagged and its chain keyed alike
                other = conn.execute("SELECT body FROM head ORDER BY part LIMIT 1").fetchone()
                ledger_id = self._decode_head(other[0]).ledger_id if other is not None else uuid.uuid4().hex
                head = HeadRow(ledger_id, self.base_seq, key.for_ledger(ledger_id).genesis, dict.fromkeys(TABLES, 0))
                body = encode_head_row(head)
                conn.execute("INSERT INTO head (part, body, tag, token, schema) VALUES (%s, %s, %s, 0, %s)",
                             (self.part, body, key.for_ledger(ledger_id).mac(b"head" + body), SCHEMA_VERSION))

    def _prove_head(self, key: SealKey) -> HeadRow:
        """The head row, sealed by us and agreeing with the tables (LedgerCorrupt naming what differs), read in one
        snapshot: an owner may be appending meanwhile."""
        conn = self._wconn
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            body, tag, schema = conn.execute("SELECT body, tag, schema FROM head WHERE part = %s",
                                             (self.part,)).fetchone()
            if schema != SCHEMA_VERSION:
                raise LedgerUnavailable(f"ledger {self._path} has schema {schema}, this gateway writes "
                                        f"{SCHEMA_VERSION}")
            head_row = self._decode_head(body)
            self.key = key.for_ledger(head_row.ledger_id)
            log = log_reads(conn, self._path, self.key, self.part)
            others = other_counts(conn, self._path, self.key, self.part)   # the tables are shared by the partitions
            chain.prove_head_row(self._path, self.key, head_row, body, tag, log.last_seq(), log.chain_at, TABLES,
                                 lambda table: conn.execute(packed.count_sql(table)).fetchone()[0]
                                 - others.get(table, 0))
        return head_row

    def _decode_head(self, body: bytes) -> HeadRow:
        try:
            return decode_head_row(body)
        except msgspec.DecodeError:
            raise LedgerCorrupt(self._path, 0, "has a head row that cannot be read (it was changed)") from None

    def take_over(self, token: int) -> Head:
        """Become the partition's writer with the token of the lease this node has just taken: the head row as the
        last writer left it (its appends are refused from now on).  ``Deposed`` if a newer token is there already."""
        with self._write_lock:
            try:   # a session of its own from here on (the one opened at start may be to a primary since lost)
                self._wconn.close()
                self._wconn = self._connect(autocommit=True, writer=True)
                self._check_durable()
                body, tag, head_token = self._wconn.execute("SELECT body, tag, token FROM head WHERE part = %s",
                                                            (self.part,)).fetchone()
            except psycopg.Error as err:
                raise StorageDown(f"the ledger {self._path} cannot be taken over: {_first_line(err)}") from None
            if head_token != token:
                raise Deposed(f"the ledger {self._path} partition {self.part} has token {head_token}, not this "
                              f"node's {token}: another node took it")
            head_row = self._decode_head(body)
            if self.key.mac(b"head" + body) != tag:
                raise LedgerCorrupt(self._path, head_row.seq, "the head row does not match its seal")
            try:   # the last writer's claims: its requests in flight were never recorded, and now cannot be
                self._wconn.execute("DELETE FROM request_claims WHERE part = %s", (self.part,))
            except psycopg.Error as err:
                raise StorageDown(f"the ledger {self._path} cannot be taken over: {_first_line(err)}") from None
            self._head_row, self._token = head_row, token
        return self.head()

    def _reader(self) -> _Reads:
        reads = getattr(self._local, "reads", None)
        if reads is None:
            if self._closed:
                raise psycopg.InterfaceError("PostgresStore is closed")
            reads = self._local.reads = _Reads(self)
            with self._readers_lock:
                self._readers.append(reads)
        return reads

    def _archive(self) -> Reader:
        reader = getattr(self._local, "archive", None)
        if reader is None:
            reader = self._local.archive = Reader(self._reader(), self.key, self._path, 0, self.read, "%s")
        return reader

    # -- Log -------------------------------------------------------------------

    def head(self) -> Head:
        return Head(self._head_row.seq, self._head_row.chain)

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        return self._reader().execute(sql.replace("?", "%s"), args).fetchall()

    def append(self, records: Sequence[Record]) -> list[int]:
        if not records:
            return []
        if not self._token:
            raise Deposed(f"this node does not own the ledger {self._path} partition {self.part} (no lease)")
        with self._write_lock:
            last = self._head_row.seq
            if records[0].seq and [r.seq for r in records] != list(range(last + 1, last + 1 + len(records))):
                raise RuntimeError(f"records {records[0].seq}..{records[-1].seq} do not continue the ledger at {last}")
            group = packed.group(records, last, self._head_row.chain, self.key)   # one row: read by TOAST slices
            head_row = chain.advanced(self._head_row, group.head, group.added, self.witness is not None)
            conn = self._wconn
            with conn.transaction(), conn.cursor() as cur:
                self._write_head_row(cur, head_row)   # first: the fencing check, and the head row's lock
                cur.executemany("INSERT INTO groups (part, last_seq, first_seq, body) VALUES (%s, %s, %s, %s)",
                                [(self.part, *row) for row in group.rows])
                self._insert(cur, "requests", _REQUEST_COLUMNS, group.requests)
                filed = [events.decode(r.body) for r in records if r.kind == FILED_KIND] if self.split else ()
                if filed:
                    self._put_routes(cur, [name for e in filed for name in route_names(e.person, e.filing)])
                for table, values in group.derived.items():
                    self._insert(cur, table, (*COLUMNS[table], "tag"), values)
            # COMMIT has returned: the group is durable
            self._head_row = head_row
            if self.witness is not None:
                self.witness.write(group.head)
        return list(range(last + 1, last + 1 + len(records)))

    def _write_head_row(self, cur: psycopg.Cursor, head: HeadRow) -> None:
        body = encode_head_row(head)
        cur.execute("UPDATE head SET body = %s, tag = %s WHERE part = %s AND token = %s",
                    (body, self.key.mac(b"head" + body), self.part, self._token))
        if cur.rowcount != 1:
            raise Deposed(f"the ledger {self._path} partition {self.part} was taken by another writer (its fencing "
                          f"token is no longer {self._token}): this gateway's appends are refused")

    @staticmethod
    def _insert(cur: psycopg.Cursor, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        types = COPY_TYPES.get(table)
        if types is not None and len(rows) >= COPY_MIN_ROWS:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_binary(rows, types))   # made in C: a third of write_row's CPU per row
            return
        cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                        rows)

    def probe(self) -> None:
        """A test write, committed (WAL flushed) and undone; StorageDown where a real commit would fail."""
        try:
            with self._write_lock, self._wconn.transaction():
                self._wconn.execute("INSERT INTO probe (x) VALUES (%s)", (b"probe",))
                self._wconn.execute("DELETE FROM probe")
        except psycopg.Error as err:
            raise StorageDown(str(err)) from err

    # -- RequestIndex ------------------------------------------------------------

    def _request_rows(self, where: str, args: tuple) -> list[tuple[int, int]]:
        out = []
        for row in self._reader().execute(f"SELECT h, seq, tag FROM requests WHERE {where}", args):
            out.append(checked(self.key, self._path, "requests", row))
        return out

    def known_request_hashes(self, hashes: Sequence[int]) -> set[int]:
        return {h for h, _ in self._request_rows("h = ANY(%s)", (list(hashes),))}

    def find_request(self, caller: str, request_id: str) -> Record | None:
        if not request_id:
            return None
        for h, seq in self._request_rows("caller = %s AND request_id = %s", (caller, request_id)):
            record = self.read(seq) if h == request_hash(caller, request_id) else None
            if record is None:
                raise LedgerCorrupt(self._path, seq, "is missing or not the one the idempotency index names for "
                                                     "a key")
            if record.caller == caller and (record.request_id == request_id or
                                            (record.kind == REVERSED_KIND and record.key == request_id)):
                return record
            raise LedgerCorrupt(self._path, seq, "does not hold the key the idempotency index names for it")
        return None

    def claim_requests(self, keys: Sequence[tuple[str, str, bytes]]) -> dict[tuple[str, str], bytes]:
        """Claim keys (caller, request_id, digest) for this partition before their requests are decided; the keys
        another partition holds, with their digests.  A key this partition holds already stays its own (until
        ``reap_claims`` once it is recorded, or ``release_claims``).  Claims are committed without waiting for the
        WAL flush: a claim lost with the server belongs to a request whose record was not committed either (its
        group's commit would have flushed the claim, earlier in the WAL), and that request's owner ends with the
        lost connection."""
        wanted = {(caller, request_id): digest for caller, request_id, digest in keys}
        foreign: dict[tuple[str, str], bytes] = {}
        conn = self._reader()
        while wanted:   # a claim gone between the two statements (recorded or released): claimed again
            callers, ids, digests = [c for c, _ in wanted], [r for _, r in wanted], list(wanted.values())
            claimed = conn.execute(
                "INSERT INTO request_claims (caller, request_id, part, digest) SELECT c, r, %s, d FROM "
                "unnest(%s::text[], %s::text[], %s::bytea[]) AS k(c, r, d) ON CONFLICT DO NOTHING "
                "RETURNING caller, request_id", (self.part, callers, ids, digests)).fetchall()
            for key in claimed:
                del wanted[tuple(key)]
            if not wanted:
                break
            held = conn.execute("SELECT caller, request_id, part, digest FROM request_claims c JOIN "
                                "unnest(%s::text[], %s::text[]) AS k(c, r) ON c.caller = k.c AND c.request_id = k.r",
                                ([c for c, _ in wanted], [r for _, r in wanted])).fetchall()
            for caller, request_id, part, digest in held:
                if part != self.part:
                    foreign[(caller, request_id)] = digest
                del wanted[(caller, request_id)]
        return foreign

    def put_routes(self, names: Sequence[str]) -> None:
        """Route the persons and filings named (``route_names``) to this partition where no route names them yet
        (an owner taking it over: routes its filings made before routes were kept), a batch at a time, on a
        connection of its own (the writer's group commits go on meanwhile)."""
        try:
            with contextlib.closing(self._connect(autocommit=True)) as conn:
                for i in range(0, len(names), ROUTES_PER_INSERT):
                    conn.execute("INSERT INTO person_routes (name, part) SELECT n, %s FROM unnest(%s::text[]) AS n "
                                 "ON CONFLICT (name) DO NOTHING", (self.part, list(names[i:i + ROUTES_PER_INSERT])))
        except psycopg.Error as err:
            raise StorageDown(f"the ledger {self._path} cannot be written: {_first_line(err)}") from None

    def _put_routes(self, cur: psycopg.Cursor, names: Sequence[str]) -> None:
        cur.execute("INSERT INTO person_routes (name, part) SELECT n, %s FROM unnest(%s::text[]) AS n "
                    "ON CONFLICT (name) DO UPDATE SET part = EXCLUDED.part", (self.part, list(names)))

    def route_part(self, names: Sequence[str]) -> int | None:
        """The partition of the first of ``names`` (``route_names``) a filing by RPC routed; None if none."""
        rows = dict(self._reader().execute("SELECT name, part FROM person_routes WHERE name = ANY(%s)",
                                           (list(names),)).fetchall())
        return next((rows[name] for name in names if name in rows), None)

    def reap_claims(self) -> int:
        """Delete this partition's claims of keys recorded since (the requests rows hold them now); how many."""
        return self._reader().execute("DELETE FROM request_claims c USING requests r WHERE c.part = %s AND "
                                      "r.caller = c.caller AND r.request_id = c.request_id", (self.part,)).rowcount

    def release_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        """This partition's claims of keys whose requests ended without a record (refused, or answered from one)."""
        self._reader().execute(_DELETE_CLAIMS, ([c for c, _ in keys], [r for _, r in keys], self.part))

    # -- ArchiveStore --------------------------------------------------------------

    def archive_complete(self) -> bool:
        return True   # a PostgreSQL ledger was never schema 1: its archive is written with its records

    def write_archive(self, visits, settlements) -> None:
        raise RuntimeError("a PostgreSQL ledger's archive is always complete")

    # -- Projections ---------------------------------------------------------------

    def recon_range(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = ""):
        """A connection and a server-side cursor of their own, read a chunk at a time."""
        try:
            conn = self._connect(autocommit=False)
        except psycopg.OperationalError as err:
            raise StorageDown(f"the ledger {self._path} cannot be read: {_first_line(err)}") from None
        reader = _LongReader(conn, self.key, self._path, 0, self.read, "%s")
        return reader.recon_cursor(fixmedins_code, date_from, date_to, insutype)

    # -- Operations -----------------------------------------------------------------

    def replication(self) -> list[tuple[str, str, int | None, float | None]]:
        """The standbys this server streams to, as it sees them (``pg_stat_replication``): (name, sync state,
        WAL bytes sent but not yet replayed there, seconds of replay lag); empty where none is attached (or the
        server is itself a standby).  The gateway's role needs ``pg_monitor`` to see them (docs/postgresql.md).
        Asked by /metrics' scrapes, each on a thread of its own, through one connection kept for them."""
        with self._monitor_lock:
            rows = self._monitor.execute(
                "SELECT application_name, sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
                " extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication"
                " WHERE NOT pg_is_in_recovery()").fetchall()
        # A role without pg_monitor sees its standbys but not their state (NULLs): counted as "unknown".
        return [(name or "", sync or "unknown", lag_bytes, lag_s) for name, sync, lag_bytes, lag_s in rows]

    def clearing_lock(self, timeout_s: float | None) -> psycopg.Connection:
        """The ledger's clearing lock (a session advisory lock), held until the connection returned is closed:
        one change of the clearing calendar at a time goes through every partition.  StorageDown if it cannot be
        had within ``timeout_s`` (None: a lease's length)."""
        wait_s = self._lease_ttl_s if timeout_s is None else max(0.1, timeout_s)
        try:
            conn = self._connect(autocommit=True, lock_timeout_s=wait_s)
            try:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, CLEARING_LOCK))
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as err:
            raise StorageDown(f"the clearing lock of {self._path} cannot be had now: {_first_line(err)}") from None
        return conn

    def lease_holders(self) -> dict[int, str]:
        """The advertised address of every partition's owner whose lease has not expired (by the server's clock)."""
        rows = self._reader().execute("SELECT part, address FROM leases WHERE expires_at > clock_timestamp() "
                                      "AND address <> ''").fetchall()
        return dict(rows)

    # -- SnapshotStore -----------------------------------------------------------------

    def snapshot_store(self) -> "PostgresSnapshots":
        return PostgresSnapshots(self)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self.lease is not None:
            self.lease.close()
        with self._monitor_lock:
            self._monitor.close()
        if self._wconn is not None:
            with self._write_lock:
                self._wconn.close()
        if getattr(self, "witness", None) is not None:
            self.witness.close()


class _Reads:
    """One thread's reading connection (autocommit), opened on first use and again after it was lost: a server
    that cannot be reached is ``StorageDown`` (answered STORAGE_UNAVAILABLE, retry), never a bug."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.conn: psycopg.Connection | None = None

    def execute(self, sql: str, args: tuple | list = ()) -> psycopg.Cursor:
        """The query's rows, fetched whole (a client-side cursor: nothing more is read from the server).  A
        connection found lost when used (its server gone since the thread's last read: a failover) is opened
        again and the read asked once more, on the new primary; a read changes nothing, so asking twice is safe.
        The only writes a reading connection makes, claims of keys, their release and reaping
        (``claim_requests``), are as safe to ask twice, and are committed without waiting for the WAL flush
        (``synchronous_commit = off``, said there why)."""
        while True:
            fresh = self.conn is None or self.conn.closed
            try:
                if fresh:
                    self.conn = self.store._connect(autocommit=True, synchronous=False)
                return self.conn.execute(sql, args)
            except psycopg.OperationalError as err:
                lost = self.conn is not None and self.conn.broken
                self.close()
                if fresh or not lost:
                    raise StorageDown(f"the ledger {self.store.path} cannot be read: {_first_line(err)}") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _LongReader(Reader):
    """A reader whose long reads are server-side cursors (in its connection's one transaction)."""

    def stream(self, sql: str, args: tuple):
        cursor = self.conn.cursor(name="yidi_recon")
        cursor.execute(sql.replace("?", self.param), args)
        return cursor


class PostgresSnapshots(snapshot.Snapshots):
    """Sealed snapshots (gateway/store/snapshot.py) as rows of the ledger's ``snapshots`` table, per partition:
    written in one transaction that also drops all but the newest ``keep``."""

    def __init__(self, store: PostgresStore, keep: int = 3) -> None:
        super().__init__("", keep)
        self.store = store

    def path(self, seq: int) -> str:
        return f"{self.store.path} snapshots[part {self.store.part}, seq {seq}]"

    def seqs(self) -> list[int]:
        rows = self.store._reader().execute("SELECT seq FROM snapshots WHERE part = %s ORDER BY seq DESC",
                                            (self.store.part,)).fetchall()
        return [seq for (seq,) in rows]

    def read(self, seq: int) -> bytes:
        row = self.store._reader().execute("SELECT blob FROM snapshots WHERE part = %s AND seq = %s",
                                           (self.store.part, seq)).fetchone()
        if row is None:
            raise snapshot.SnapshotCorrupt("removed while it was being read")
        return row[0]

    def write(self, blob: bytes, seq: int) -> str:
        """Written in one transaction; ``StorageDown`` (STORAGE_UNAVAILABLE, retry) if the server cannot be reached."""
        part = self.store.part
        try:
            with contextlib.closing(self.store._connect(autocommit=False)) as conn, conn.transaction():
                conn.execute("INSERT INTO snapshots (part, seq, blob) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                             (part, seq, blob))
                conn.execute("DELETE FROM snapshots WHERE part = %s AND seq NOT IN (SELECT seq FROM snapshots WHERE "
                             "part = %s ORDER BY seq DESC LIMIT %s)", (part, part, self.keep))
        except psycopg.OperationalError as err:
            raise StorageDown(f"the snapshot {self.path(seq)} cannot be written: {_first_line(err)}") from None
        return self.path(seq)


def open_postgresql(url: str, key: SealKey, witness_dir: str = "", take: bool = True,
                    lease_ttl_s: float = LEASE_TTL_S, part: int = 0) -> PostgresStore:
    """``PostgresStore(...)``, or LedgerUnavailable in one line (the URL without its password).

    ``take``: the store is the writer at once, for a tool: it takes the partition's lease (LedgerUnavailable
    naming the holder while another node holds it), renews it from a thread and gives it up on close.  A gateway
    node opens with ``take=False`` and takes the lease itself (gateway/ownership.py)."""
    store = None
    try:
        store = PostgresStore(url, key, witness_dir=witness_dir, part=part, lease_ttl_s=lease_ttl_s)
        if take:
            store.lease = keeper = LeaseKeeper(store.connect_lease, store.part,
                                               f"yidi pid {os.getpid()} on {socket.gethostname()}", "", lease_ttl_s,
                                               LEASE_RENEW_S)
            if not keeper.take_once():
                held = keeper.holder
                raise LedgerUnavailable(f"the ledger {safe_url(url)} partition {store.part} is owned by {held.owner} "
                                        f"({held.address or 'no address'}) for another {held.expires_in_s:.1f} s "
                                        "(another yidi serve on the same database); refusing a second writer")
            store.take_over(keeper.token)
            keeper.start()
        return store
    except psycopg.Error as err:
        if store is not None:
            store.close()
        raise LedgerUnavailable(f"cannot open the ledger {safe_url(url)}: {_first_line(err)}") from None
    except BaseException:
        if store is not None:
            store.close()
        raise


def other_counts(conn: psycopg.Connection, path: str, key: LedgerKey, part: int) -> dict[str, int]:
    """Per table, the rows the sealed head rows of every partition but ``part`` count; each of them proved
    sealed by the ledger's key, of the same ledger (LedgerCorrupt otherwise)."""
    counts: dict[str, int] = {}
    for other, body, tag in conn.execute("SELECT part, body, tag FROM head WHERE part <> %s", (part,)).fetchall():
        try:
            row = decode_head_row(body)
        except msgspec.DecodeError:
            raise LedgerCorrupt(path, 0, f"partition {other} has a head row that cannot be read") from None
        if row.ledger_id != key.ledger_id or key.mac(b"head" + body) != tag:
            raise LedgerCorrupt(path, row.seq, f"partition {other}'s head row does not match its seal")
        for table, n in row.counts.items():
            counts[table] = counts.get(table, 0) + n
    return counts


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
