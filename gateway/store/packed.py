"""Records packed per commit group: a ``groups`` row per transaction, and the log's reads over it.

A row is (``last_seq``, ``first_seq``, ``body``), ``body`` being

    count u32 | offsets u32 × (count + 1) | chain values (32 bytes) × count | record × count

where ``offsets[i]`` is where record ``first_seq + i`` starts after the
chain values (``offsets[count]``: where the last one ends), and a record is

    lengths of kind, caller, request_id (u16 each), digest (u8), key (u16),
    body, response (u32 each) | checksum (16 bytes) |
    kind | caller | request_id | digest | key | body | response

all little-endian.  The head of a row (count, offsets, chain values: 36
bytes a record) is read first and alone, so a record's chain value needs no
more and the record itself one more read.  PostgreSQL writes a commit group
as one row (it reads a slice of a long value by its TOAST chunks); SQLite
at most ``ROW_RECORDS`` records a row (gateway/store/sqlite/store.py: it
reads a long blob's pages as a chain, so a row is kept short).

The checksum and the keyed chain value of every record are the ones a
record has always had (gateway/store/chain.py), computed over the same
content with the record's seq, which is ``first_seq`` plus its place in the
row: so a changed byte breaks that record's checksum, a record moved to
another place (within a row, or a row's seqs changed) breaks its checksum
too, a row removed, duplicated or reordered breaks the chain, and a cut row
no longer decodes (its count, offsets, lengths and length must agree to the
byte).  The head row counts the records of the ledger (``records``: the
rows written one per record before packing plus every row's ``last_seq -
first_seq + 1``) and the ``groups`` rows, so a row, or a record dropped
from a row made consistent again, is found at start.

Any one record is one row read and a slice of it away (``read``,
``chain_at``: the head only); on PostgreSQL ``read`` is one query, the server
cutting the record's slice where the head's offsets say (``_ONE_READ``);
``find_request`` reads it through its idempotency row;
``last_reference_load`` through the tagged ``reference_loads`` row of the
newest reference load (gateway/store/rows.py).  A ledger written before
packing keeps its ``records`` rows: every read looks in ``groups`` first
and then there, and new groups follow its last record.

``PackedLog`` holds these reads once for both backends; a backend gives it
``_query`` (rows of a query written with ``?``), and on PostgreSQL, whose
rows are keyed by partition first (core/partition.py), ``partitioned`` and
its own ``part``: a record is read in the partition its seq names, a scan,
the last seq and the newest reference load are of its own partition.
"""
from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from core import GroupRules
from core.archive import PutSettlement
from core.events import REVERSED_KIND
from core.partition import part_of_seq, seq_base

from . import chain
from .chain import Head, LedgerCorrupt
from .parts import Record
from .rows import checked, derive
from .seal import LedgerKey

REFERENCE_KIND = "reference_loaded"
# Groups per page of a scan: a group holds at most the ledger's max_batch records (4096), so a page is bounded.
SCAN_PAGE_GROUPS = 4
SCAN_PAGE_RECORDS = 1024

# What a group derives besides its records, for the core's GroupPacker.
RULES = GroupRules(derive, PutSettlement, REVERSED_KIND, REFERENCE_KIND)

_RECORD = struct.Struct("<HHHBHII16s")
_CHAIN_BYTES = 32
_COUNT = struct.Struct("<I")
_SPAN = struct.Struct("<II")
_LEGACY_COLUMNS = "kind, caller, request_id, digest, key, body, response, seq, checksum, chain"


class Group(NamedTuple):
    """What one append writes: the group's rows, its derived rows (each tagged) and the new head."""

    rows: list[tuple[int, int, bytes]]   # (last_seq, first_seq, body) of each row the group is packed in
    head: Head
    requests: list[tuple]          # (caller, request_id, h, seq, tag)
    derived: dict[str, list[tuple]]   # table -> rows (values..., tag), reference_loads included
    added: dict[str, int]          # rows each counted table gains (for the head row)


def encode(fields: Sequence[tuple]) -> bytes:
    """A row body of records given as (kind, caller, request_id, digest, key, body, response, checksum, chain),
    text fields encoded (UTF-8), checksums and chain values as computed."""
    packed = [b"".join((_RECORD.pack(len(kind), len(caller), len(rid), len(digest), len(name), len(body),
                                     len(response), sum_), kind, caller, rid, digest, name, body, response))
              for kind, caller, rid, digest, name, body, response, sum_, _ in fields]
    offsets = list(itertools.accumulate(map(len, packed), initial=0))
    chains = b"".join(f[8] for f in fields)
    if len(chains) != _CHAIN_BYTES * len(fields):
        raise ValueError(f"a chain value is {_CHAIN_BYTES} bytes")
    return struct.pack(f"<{len(offsets) + 1}I", len(packed), *offsets) + chains + b"".join(packed)


def head_bytes(count: int) -> int:
    """The length of the head of a row of ``count`` records: its count, offsets and chain values."""
    return 4 * (count + 2) + _CHAIN_BYTES * count


def group(records: Sequence[Record], last: int, previous: bytes, key: LedgerKey, row_records: int = 0) -> Group:
    """Everything an append of ``records`` after ``last``, chained from ``previous``, writes, the same for every
    backend (``row_records``: a backend's most records a row, 0: the whole group in one): packed, chained and
    tagged in one call of the core (core/ledger.pxi), the bytes ``encode``, chain.py and rows.py define."""
    rows, chain_value, requests, derived = key.packer().pack(records, last, previous, row_records, RULES)
    added = {"records": len(records), "groups": len(rows), "requests": len(requests),
             **{t: len(values) for t, values in derived.items()}}
    return Group(rows, Head(last + len(records), chain_value), requests, derived, added)


# ------------------------------------------------------------------ reading a group body
def _damaged(path: str, seq: int) -> LedgerCorrupt:
    return LedgerCorrupt(path, seq, "its group of records cannot be read (the group was cut, or its count, "
                                    "offsets or lengths were changed)")


def _framed(count: int, size: int, length: int, first_seq: int, last_seq: int, path: str) -> None:
    """The row's count is its seqs', and its records end where its body does."""
    if count != last_seq - first_seq + 1 or head_bytes(count) + size != length:
        raise _damaged(path, first_seq)


def _count(body, first_seq: int, last_seq: int, path: str) -> int:
    """The row's count, after checking its frame.  ``body`` is any object with a length and byte slices: bytes,
    or ``Slices`` read on demand."""
    try:
        (count,) = _COUNT.unpack(body[0:4])
        (size,) = _COUNT.unpack(body[4 * (count + 1):4 * (count + 2)])
    except struct.error:
        raise _damaged(path, first_seq) from None
    _framed(count, size, len(body), first_seq, last_seq, path)
    return count


def _decode(raw: bytes, seq: int, link: bytes, path: str) -> Record:
    """One record from its bytes and its chain value."""
    try:
        lk, lc, lr, ld, ly, lb, lp, sum_ = _RECORD.unpack_from(raw, 0)
    except struct.error:
        raise _damaged(path, seq) from None
    at = _RECORD.size
    if at + lk + lc + lr + ld + ly + lb + lp != len(raw):
        raise _damaged(path, seq)
    try:
        kind = raw[at:at + lk].decode()
        at += lk
        caller = raw[at:at + lc].decode()
        at += lc
        rid = raw[at:at + lr].decode()
        at += lr
        digest = raw[at:at + ld]
        at += ld
        name = raw[at:at + ly].decode()
        at += ly
    except UnicodeDecodeError:
        raise _damaged(path, seq) from None
    return Record(kind, caller, rid, digest, name, raw[at:at + lb], raw[at + lb:], seq, sum_, link)


def chain_in(body, first_seq: int, last_seq: int, seq: int, path: str) -> bytes:
    """The chain value of record ``seq`` of a row, from the row's head."""
    at = 4 * (_count(body, first_seq, last_seq, path) + 2) + _CHAIN_BYTES * (seq - first_seq)
    return body[at:at + _CHAIN_BYTES]


def record_in(body, first_seq: int, last_seq: int, seq: int, path: str) -> Record:
    """Record ``seq`` of a row (unproved): read from the row's head, then its own bytes."""
    count, i = _count(body, first_seq, last_seq, path), seq - first_seq
    start, end = _SPAN.unpack(body[4 * (i + 1):4 * (i + 3)])
    if not start + _RECORD.size <= end <= len(body) - head_bytes(count):
        raise _damaged(path, seq)
    at = 4 * (count + 2) + _CHAIN_BYTES * i
    data = head_bytes(count)
    return _decode(body[data + start:data + end], seq, body[at:at + _CHAIN_BYTES], path)


def unpack(body: bytes, first_seq: int, last_seq: int, path: str) -> Iterator[Record]:
    """Every record of a row's body, in seq order (unproved: the caller replays them against the chain)."""
    count = last_seq - first_seq + 1
    try:
        table = struct.unpack_from(f"<{count + 2}I", body)
    except struct.error:
        raise _damaged(path, first_seq) from None
    _framed(table[0], table[-1], len(body), first_seq, last_seq, path)
    chains, data = 4 * (count + 2), head_bytes(count)
    for i, seq in enumerate(range(first_seq, last_seq + 1)):
        start, end = table[i + 1], table[i + 2]
        if not start + _RECORD.size <= end <= table[-1]:
            raise _damaged(path, seq)
        link = body[chains + _CHAIN_BYTES * i:chains + _CHAIN_BYTES * (i + 1)]
        yield _decode(body[data + start:data + end], seq, link, path)


# ------------------------------------------------------------------ the log's reads, for every backend
def count_sql(table: str) -> str:
    """The query counting the rows of ``table`` a head row counts, every partition's: the records in both
    layouts.  (A partition's head row counts its own: the others' sealed counts are taken off.)"""
    if table == "records":
        return ("SELECT (SELECT count(*) FROM records) + "
                "(SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM groups)")
    return f"SELECT count(*) FROM {table}"


def last_seq_sql(scope: str = "", base: int = 0) -> str:
    """The query of a partition's last seq: its newest group's, else its last row written before packing, else
    its base (0 for the first, and for a ledger of one)."""
    where = f"WHERE {scope.removesuffix(' AND ')}" if scope else ""
    return (f"SELECT coalesce((SELECT max(last_seq) FROM groups {where}), (SELECT max(seq) FROM records {where}), "
            f"{int(base)})")


# A record's row (the first ending at or after its seq) and what ``_read_in_one_query`` reads of it, by 1-based
# ``substr`` of the TOASTed body: its head as far as the record's chain value (one slice read: every further
# ``substr`` of the body would read its TOAST chunks again), cut into the count, the records' end (offsets[n]),
# the record's two offsets, its chain value and the one before (where it is not the row's first); the record's
# bytes, cut where its offsets say when they lie within the row; and of the row before (ending at first_seq - 1)
# for a row's first record, its length, count, records' end and last chain value.  Parameters: seq, seq, part, seq.
_ONE_READ = """
SELECT g.first_seq, g.last_seq, g.length, substr(g.head, 1, 4), substr(g.head, 4 * g.n + 5, 4),
       substr(g.head, 4 * g.i + 5, 8),
       substr(g.head, 4 * g.n + 9 + 32 * greatest(g.i - 1, 0), CASE WHEN g.i > 0 THEN 64 ELSE 32 END),
       CASE WHEN s.lo <= s.hi AND 36 * g.n + 8 + s.hi <= g.length
            THEN substr(g.body, (36 * g.n + 9 + s.lo)::int, (s.hi - s.lo)::int) END,
       p.first_seq, p.last_seq, p.length, substr(p.head, 1, 4), substr(p.head, 4 * p.n + 5, 4),
       substr(p.head, 36 * p.n - 23, 32)
FROM (SELECT part, first_seq, last_seq, body, length(body) AS length, (last_seq - first_seq + 1)::int AS n,
             (%s - first_seq)::int AS i,
             substr(body, 1, greatest(4 * (last_seq - first_seq) + 32 * (%s - first_seq) + 44, 0)::int) AS head
      FROM groups WHERE part = %s AND last_seq >= %s ORDER BY last_seq LIMIT 1) g
CROSS JOIN LATERAL (SELECT
    CASE WHEN g.i >= 0 AND length(g.head) >= 4 * g.i + 12 THEN get_byte(g.head, 4 * g.i + 4)
         + 256 * get_byte(g.head, 4 * g.i + 5) + 65536 * get_byte(g.head, 4 * g.i + 6)
         + 16777216 * get_byte(g.head, 4 * g.i + 7)::bigint END AS lo,
    CASE WHEN g.i >= 0 AND length(g.head) >= 4 * g.i + 12 THEN get_byte(g.head, 4 * g.i + 8)
         + 256 * get_byte(g.head, 4 * g.i + 9) + 65536 * get_byte(g.head, 4 * g.i + 10)
         + 16777216 * get_byte(g.head, 4 * g.i + 11)::bigint END AS hi) s
LEFT JOIN LATERAL (SELECT first_seq, last_seq, length(body) AS length, (last_seq - first_seq + 1)::int AS n,
                          substr(body, 1, (36 * (last_seq - first_seq + 1) + 8)::int) AS head
                   FROM groups WHERE g.i = 0 AND part = g.part AND last_seq = g.first_seq - 1 LIMIT 1) p ON true
"""


class PackedLog:
    """``Log``'s reads (read, chain_at, scan, last_seq, last_reference_load) over ``groups`` and the rows of
    ``records`` written before packing."""

    _path: str
    key: LedgerKey
    part = 0              # the partition whose records scan, last_seq and last_reference_load read
    partitioned = False   # rows keyed by partition first (PostgreSQL)

    def _scope(self, part: int) -> str:
        """The condition of a partition's rows ("part = 1 AND "); nothing where rows have no partition."""
        return f"part = {int(part)} AND " if self.partitioned else ""

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        raise NotImplementedError

    @contextlib.contextmanager
    def _group(self, seq: int) -> Iterator[tuple | None]:
        """(first_seq, last_seq, body) of the row holding ``seq``, None if none does.  ``body`` reads slices
        of the stored body on demand: its head (``head_bytes``) comes with the row, a record is one more query."""
        scope = self._scope(part_of_seq(seq))
        rows = self._query("SELECT first_seq, last_seq, length(body), "
                           f"substr(body, 1, CAST({4 + _CHAIN_BYTES} * (last_seq - first_seq + 1) + 8 AS INTEGER)) "
                           f"FROM groups WHERE {scope}last_seq >= ? ORDER BY last_seq LIMIT 1", (seq,))
        if not rows or rows[0][0] > seq:
            yield None
            return
        first, last, length, head = rows[0]
        yield first, last, Slices({(0, len(head)): bytes(head)}, length, self._fetcher(scope, last))

    def _fetcher(self, scope: str, last: int) -> Callable[[int, int], bytes]:
        """A slice of the stored body of the row ending at ``last``, a query each."""
        def fetch(start: int, stop: int) -> bytes:
            found = self._query("SELECT substr(body, CAST(? AS INTEGER), CAST(? AS INTEGER)) FROM groups "
                                f"WHERE {scope}last_seq = ?", (start + 1, stop - start, last))
            return bytes(found[0][0]) if found else b""

        return fetch

    def _legacy(self, columns: str, seq: int) -> tuple | None:
        rows = self._query(f"SELECT {columns} FROM records WHERE {self._scope(part_of_seq(seq))}seq = ?", (seq,))
        return rows[0] if rows else None

    def chain_at(self, seq: int) -> bytes | None:
        """The chain value of record seq (the genesis value at a partition's base, 0 for the first), None if there
        is no such record."""
        if seq == seq_base(part_of_seq(seq)):
            return self.key.genesis
        with self._group(seq) as found:
            if found is not None:
                return chain_in(found[2], found[0], found[1], seq, self._path)
        row = self._legacy("chain", seq)
        return None if row is None else row[0]

    def read(self, seq: int) -> Record | None:
        """The record with that seq, proved (its checksum, and its chain value from the one before it)."""
        if seq <= 0:
            return None
        if self.partitioned:
            record = self._read_in_one_query(seq)
            if record is not None:
                return record
        with self._group(seq) as found:
            if found is not None:
                first, last, body = found
                record = record_in(body, first, last, seq, self._path)
                previous = chain_in(body, first, last, seq - 1, self._path) if seq > first else None
        if found is None:
            row = self._legacy(_LEGACY_COLUMNS, seq)
            return None if row is None else self._proved(Record(*row), self.chain_at(seq - 1))
        return self._proved(record, previous if previous is not None else self.chain_at(seq - 1))

    def _read_in_one_query(self, seq: int) -> Record | None:
        """A packed record read in one round trip (PostgreSQL): the slices ``record_in`` and ``chain_in`` read of
        its row and, for the first record of a row, of the row before, cut by the server (the record's own from
        its offsets); a slice asked for but not among them (a damaged row's) is one more query.  None if no
        row holds ``seq`` (a record written before packing)."""
        part = part_of_seq(seq)
        rows = self._query(_ONE_READ, (seq, seq, part, seq))
        if not rows or rows[0][0] > seq:
            return None
        first, last, length, count, size, span, chains, raw, p_first, p_last, p_length, p_count, p_size, p_chain = \
            rows[0]
        n, i = last - first + 1, seq - first
        head, at = head_bytes(n), 4 * (n + 2) + _CHAIN_BYTES * i
        cut = {(0, 4): count, (4 * (n + 1), 4 * (n + 2)): size, (4 * (i + 1), 4 * (i + 3)): span,
               (at - _CHAIN_BYTES * (i > 0), at + _CHAIN_BYTES): chains}
        if raw is not None and len(span) == 8:
            start, end = _SPAN.unpack(span)
            cut[(head + start, head + end)] = raw
        body = Slices(cut, length, self._fetcher(self._scope(part), last))
        record = record_in(body, first, last, seq, self._path)
        if i > 0:
            return self._proved(record, chain_in(body, first, last, seq - 1, self._path))
        if p_first is None:
            return self._proved(record, self.chain_at(seq - 1))
        pn = p_last - p_first + 1
        before = Slices({(0, 4): p_count, (4 * (pn + 1), 4 * (pn + 2)): p_size,
                         (head_bytes(pn) - _CHAIN_BYTES, head_bytes(pn)): p_chain},
                        p_length, self._fetcher(self._scope(part), p_last))
        return self._proved(record, chain_in(before, p_first, p_last, seq - 1, self._path))

    def _proved(self, record: Record, previous: bytes | None) -> Record:
        if previous is None:
            raise LedgerCorrupt(self._path, record.seq - 1, "is missing (the record after it is there)")
        chain.check_record(self._path, record, previous, self.key)
        return record

    def scan(self, after_seq: int = 0) -> Iterator[Record]:
        """Records with seq > after_seq in seq order, a page at a time (no statement stays open between pages)."""
        yield from self._scan_legacy(after_seq)
        while True:
            rows = self._query(f"SELECT first_seq, last_seq, body FROM groups WHERE {self._scope(self.part)}last_seq > ? "
                               "ORDER BY last_seq LIMIT ?", (after_seq, SCAN_PAGE_GROUPS))
            for first, last, body in rows:
                for record in unpack(body, first, last, self._path):
                    if record.seq > after_seq:
                        yield record
            if len(rows) < SCAN_PAGE_GROUPS:
                return
            after_seq = rows[-1][1]

    def _scan_legacy(self, after_seq: int) -> Iterator[Record]:
        while True:
            rows = self._query(f"SELECT {_LEGACY_COLUMNS} FROM records WHERE {self._scope(self.part)}seq > ? ORDER BY seq "
                               "LIMIT ?", (after_seq, SCAN_PAGE_RECORDS))
            for row in rows:
                yield Record(*row)
            if len(rows) < SCAN_PAGE_RECORDS:
                return
            after_seq = rows[-1][7]

    def last_seq(self) -> int:
        return self._query(last_seq_sql(self._scope(self.part), seq_base(self.part)), ())[0][0]

    def last_reference_load(self) -> Record | None:
        """The newest record of kind ``reference_loaded``, proved: through its tagged row, or in a ledger's rows
        written before packing."""
        rows = self._query("SELECT seq, tag FROM reference_loads WHERE seq > ? AND seq < ? ORDER BY seq DESC LIMIT 1",
                           (seq_base(self.part), seq_base(self.part + 1)))
        if rows:
            (seq,) = checked(self.key, self._path, "reference_loads", rows[0])
            record = self.read(seq)
            if record is None or record.kind != REFERENCE_KIND:
                raise LedgerCorrupt(self._path, seq, "is not the reference load its tagged row names")
            return record
        row = self._query(f"SELECT {_LEGACY_COLUMNS} FROM records WHERE {self._scope(self.part)}kind = '{REFERENCE_KIND}' "
                          "ORDER BY seq DESC LIMIT 1", ())
        return None if not row else self._proved(Record(*row[0]), self.chain_at(row[0][7] - 1))


class Slices:
    """A stored row body as ``record_in`` and ``chain_in`` read it: the slices already read (``cut``: (start, stop)
    -> bytes; a slice within one of them is taken from it), any other fetched when asked (``fetch(start, stop)``:
    a query, a read of a blob handle)."""

    def __init__(self, cut: dict[tuple[int, int], bytes], length: int, fetch: Callable[[int, int], bytes]) -> None:
        self.cut, self.length, self.fetch = cut, length, fetch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, where: slice) -> bytes:
        for (start, stop), data in self.cut.items():
            if start <= where.start and where.stop <= stop and len(data) == stop - start:
                return data[where.start - start:where.stop - start]
        return self.fetch(where.start, where.stop)


def reads_of(query: Callable[[str, tuple], list[tuple]], key: LedgerKey, path: str, part: int | None = None
             ) -> PackedLog:
    """``PackedLog``'s reads on a connection of one's own (verify-ledger's consistent view); ``part``: of that
    partition of a ledger keyed by partition (PostgreSQL)."""
    log = PackedLog()
    log._query, log.key, log._path = query, key, path
    if part is not None:
        log.part, log.partitioned = part, True
    return log
