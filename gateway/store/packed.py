"""Records packed per commit group: one ``groups`` row per transaction, and the log's reads over it.

A group's row is (``last_seq``, ``first_seq``, ``body``), ``body`` being

    count u32 | offsets u32 × (count + 1) | record × count

where ``offsets[i]`` is where record ``first_seq + i`` starts after the
offset table (``offsets[count]``: where the last one ends), and a record is

    lengths of kind, caller, request_id (u16 each), digest (u8), key (u16),
    body, response (u32 each) | checksum (16 bytes) | chain value (32 bytes) |
    kind | caller | request_id | digest | key | body | response

all little-endian.  The checksum and the keyed chain value of every record
are the ones a record has always had (gateway/store/chain.py), computed over
the same content with the record's seq, which is ``first_seq`` plus its
place in the group: so a changed byte breaks that record's checksum, a
record moved to another place (within a group, or a group's seqs changed)
breaks its checksum too, a group removed, duplicated or reordered breaks
the chain, and a cut group no longer decodes (its count, offsets and lengths
must agree to the byte).  The head row counts the records of the ledger
(``records``: the rows written one per record before packing plus every
group's ``last_seq - first_seq + 1``) and its ``groups``, so a group or a
record dropped with its row made consistent again is found at start.

Any one record is one row read and two offset look-ups away (``read``,
``chain_at``); ``find_request`` reads it through its idempotency row;
``last_reference_load`` through the tagged ``reference_loads`` row of the
newest reference load (gateway/store/rows.py).  A ledger written before
packing keeps its ``records`` rows: every read looks in ``groups`` first
and then there, and new groups follow its last record.

``PackedLog`` holds these reads once for both backends; a backend gives it
``_query`` (rows of a query written with ``?``) and ``_scope`` (its
partition's condition, or nothing).
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from . import chain
from .chain import Head, LedgerCorrupt
from .parts import Record
from .rows import checked, derive, keys_of, request_hash
from .seal import LedgerKey

REFERENCE_KIND = "reference_loaded"
# Groups per page of a scan: a group holds at most the ledger's max_batch records (4096), so a page is bounded.
SCAN_PAGE_GROUPS = 4
SCAN_PAGE_RECORDS = 1024

_RECORD = struct.Struct("<HHHBHII16s32s")
_CHAIN_AT = _RECORD.size - 32
_COUNT = struct.Struct("<I")
_SPAN = struct.Struct("<II")
_LEGACY_COLUMNS = "kind, caller, request_id, digest, key, body, response, seq, checksum, chain"


class Group(NamedTuple):
    """What one append writes: the group's row, its derived rows (each tagged) and the new head."""

    first_seq: int
    last_seq: int
    body: bytes
    head: Head
    requests: list[tuple]          # (caller, request_id, h, seq, tag)
    derived: dict[str, list[tuple]]   # table -> rows (values..., tag), reference_loads included
    added: dict[str, int]          # rows each counted table gains (for the head row)


def pack(records: Sequence[Record], last: int, previous: bytes, key: LedgerKey) -> tuple[bytes, Head]:
    """The group body of ``records`` numbered after ``last``, chained from ``previous``; and the new head."""
    fields, seq = [], last
    for r in records:
        seq += 1
        kind, caller, rid, name = r.kind.encode(), r.caller.encode(), r.request_id.encode(), r.key.encode()
        sum_ = chain.checksum_of(seq, kind, caller, rid, r.digest, name, r.body, r.response)
        previous = key.link(previous, sum_)
        fields.append((kind, caller, rid, r.digest, name, r.body, r.response, sum_, previous))
    return encode(fields), Head(seq, previous)


def encode(fields: Sequence[tuple]) -> bytes:
    """A group body of records given as (kind, caller, request_id, digest, key, body, response, checksum, chain),
    text fields encoded (UTF-8), checksums and chain values as computed."""
    parts: list[bytes] = []
    offsets: list[int] = []
    at = 0
    for kind, caller, rid, digest, name, body, response, sum_, link in fields:
        offsets.append(at)
        parts += (_RECORD.pack(len(kind), len(caller), len(rid), len(digest), len(name), len(body), len(response),
                               sum_, link), kind, caller, rid, digest, name, body, response)
        at += _RECORD.size + len(kind) + len(caller) + len(rid) + len(digest) + len(name) + len(body) + len(response)
    offsets.append(at)
    return struct.pack(f"<{len(offsets) + 1}I", len(fields), *offsets) + b"".join(parts)


def group(records: Sequence[Record], last: int, previous: bytes, key: LedgerKey) -> Group:
    """Everything an append of ``records`` after ``last`` writes, the same for every backend."""
    body, head = pack(records, last, previous, key)
    tag = key.tag
    requests = [(r.caller, rid, h, seq, tag("requests", (h, seq)))
                for seq, r in enumerate(records, last + 1) for rid in keys_of(r)
                for h in (request_hash(r.caller, rid),)]
    derived: dict[str, list[tuple]] = {}
    for seq, r in enumerate(records, last + 1):
        if r.kind == REFERENCE_KIND:
            derived.setdefault("reference_loads", []).append((seq, tag("reference_loads", (seq,))))
        if r.changes:
            for table, values in derive(r.changes, seq):
                derived.setdefault(table, []).append((*values, tag(table, values)))
    added = {"records": len(records), "groups": 1, "requests": len(requests),
             **{t: len(rows) for t, rows in derived.items()}}
    return Group(last + 1, head.seq, body, head, requests, derived, added)


# ------------------------------------------------------------------ reading a group body
def _damaged(path: str, seq: int) -> LedgerCorrupt:
    return LedgerCorrupt(path, seq, "its group of records cannot be read (the group was cut, or its count, "
                                    "offsets or lengths were changed)")


def _span(body: bytes, first_seq: int, last_seq: int, seq: int, path: str) -> tuple[int, int]:
    """Where record ``seq`` lies in ``body`` (start, end), after checking the group's count."""
    try:
        (count,) = _COUNT.unpack_from(body, 0)
        if count != last_seq - first_seq + 1:
            raise _damaged(path, first_seq)
        start, end = _SPAN.unpack_from(body, 4 * (seq - first_seq + 1))
        (size,) = _COUNT.unpack_from(body, 4 * (count + 1))
    except struct.error:
        raise _damaged(path, first_seq) from None
    data = 4 * (count + 2)
    if data + size != len(body) or not start + _RECORD.size <= end <= size:
        raise _damaged(path, seq)
    return data + start, data + end


def _decode(body: bytes, start: int, end: int, seq: int, path: str) -> Record:
    lk, lc, lr, ld, ly, lb, lp, sum_, link = _RECORD.unpack_from(body, start)
    at = start + _RECORD.size
    if at + lk + lc + lr + ld + ly + lb + lp != end:
        raise _damaged(path, seq)
    try:
        kind = body[at:at + lk].decode()
        at += lk
        caller = body[at:at + lc].decode()
        at += lc
        rid = body[at:at + lr].decode()
        at += lr
        digest = body[at:at + ld]
        at += ld
        name = body[at:at + ly].decode()
        at += ly
    except UnicodeDecodeError:
        raise _damaged(path, seq) from None
    return Record(kind, caller, rid, digest, name, body[at:at + lb], body[at + lb:end], seq, sum_, link)


def record_in(body: bytes, first_seq: int, last_seq: int, seq: int, path: str) -> Record:
    """Record ``seq`` of a group (unproved)."""
    start, end = _span(body, first_seq, last_seq, seq, path)
    return _decode(body, start, end, seq, path)


def chain_in(body: bytes, first_seq: int, last_seq: int, seq: int, path: str) -> bytes:
    """The chain value of record ``seq`` of a group, without decoding the record."""
    start, _ = _span(body, first_seq, last_seq, seq, path)
    return body[start + _CHAIN_AT:start + _RECORD.size]


def unpack(body: bytes, first_seq: int, last_seq: int, path: str) -> Iterator[Record]:
    """Every record of a group, in seq order (unproved: the caller replays them against the chain)."""
    for seq in range(first_seq, last_seq + 1):
        start, end = _span(body, first_seq, last_seq, seq, path)
        yield _decode(body, start, end, seq, path)


# ------------------------------------------------------------------ the log's reads, for every backend
def count_sql(table: str, scope: str = "") -> str:
    """The query counting what the head row counts of ``table``: the records are counted in both layouts."""
    where = f" WHERE {scope.removesuffix(' AND ')}" if scope else ""
    if table == "records":
        return (f"SELECT (SELECT count(*) FROM records{where}) + "
                f"(SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM groups{where})")
    return f"SELECT count(*) FROM {table}"


def last_seq_sql(scope: str = "") -> str:
    """The query of the ledger's last seq: its newest group's, else its last row written before packing, else 0."""
    where = f"WHERE {scope.removesuffix(' AND ')}" if scope else ""
    return (f"SELECT coalesce((SELECT max(last_seq) FROM groups {where}), (SELECT max(seq) FROM records {where}), "
            "0)")


class PackedLog:
    """``Log``'s reads (read, chain_at, scan, last_seq, last_reference_load) over ``groups`` and the rows of
    ``records`` written before packing."""

    _path: str
    key: LedgerKey
    _scope = ""   # "part = 0 AND ": the partition's rows only

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        raise NotImplementedError

    def _group_at(self, seq: int) -> tuple[int, int, bytes] | None:
        """(first_seq, last_seq, body) of the group holding ``seq``, None if none does."""
        rows = self._query(f"SELECT first_seq, last_seq, body FROM groups WHERE {self._scope}last_seq >= ? "
                           "ORDER BY last_seq LIMIT 1", (seq,))
        return rows[0] if rows and rows[0][0] <= seq else None

    def _legacy(self, columns: str, seq: int) -> tuple | None:
        rows = self._query(f"SELECT {columns} FROM records WHERE {self._scope}seq = ?", (seq,))
        return rows[0] if rows else None

    def chain_at(self, seq: int) -> bytes | None:
        """The chain value of record seq (the genesis value for 0), None if there is no such record."""
        if seq == 0:
            return self.key.genesis
        found = self._group_at(seq)
        if found is not None:
            return chain_in(found[2], found[0], found[1], seq, self._path)
        row = self._legacy("chain", seq)
        return None if row is None else row[0]

    def read(self, seq: int) -> Record | None:
        """The record with that seq, proved (its checksum, and its chain value from the one before it)."""
        if seq <= 0:
            return None
        found = self._group_at(seq)
        if found is None:
            row = self._legacy(_LEGACY_COLUMNS, seq)
            return None if row is None else self._proved(Record(*row), self.chain_at(seq - 1))
        first, last, body = found
        record = record_in(body, first, last, seq, self._path)
        previous = chain_in(body, first, last, seq - 1, self._path) if seq > first else self.chain_at(seq - 1)
        return self._proved(record, previous)

    def _proved(self, record: Record, previous: bytes | None) -> Record:
        if previous is None:
            raise LedgerCorrupt(self._path, record.seq - 1, "is missing (the record after it is there)")
        chain.check_record(self._path, record, previous, self.key)
        return record

    def scan(self, after_seq: int = 0) -> Iterator[Record]:
        """Records with seq > after_seq in seq order, a page at a time (no statement stays open between pages)."""
        yield from self._scan_legacy(after_seq)
        while True:
            rows = self._query(f"SELECT first_seq, last_seq, body FROM groups WHERE {self._scope}last_seq > ? "
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
            rows = self._query(f"SELECT {_LEGACY_COLUMNS} FROM records WHERE {self._scope}seq > ? ORDER BY seq "
                               "LIMIT ?", (after_seq, SCAN_PAGE_RECORDS))
            for row in rows:
                yield Record(*row)
            if len(rows) < SCAN_PAGE_RECORDS:
                return
            after_seq = rows[-1][7]

    def last_seq(self) -> int:
        return self._query(last_seq_sql(self._scope), ())[0][0]

    def last_reference_load(self) -> Record | None:
        """The newest record of kind ``reference_loaded``, proved: through its tagged row, or in a ledger's rows
        written before packing."""
        rows = self._query("SELECT seq, tag FROM reference_loads ORDER BY seq DESC LIMIT 1", ())
        if rows:
            (seq,) = checked(self.key, self._path, "reference_loads", rows[0])
            record = self.read(seq)
            if record is None or record.kind != REFERENCE_KIND:
                raise LedgerCorrupt(self._path, seq, "is not the reference load its tagged row names")
            return record
        row = self._query(f"SELECT {_LEGACY_COLUMNS} FROM records WHERE {self._scope}kind = '{REFERENCE_KIND}' "
                          "ORDER BY seq DESC LIMIT 1", ())
        return None if not row else self._proved(Record(*row[0]), self.chain_at(row[0][7] - 1))


def reads_of(query: Callable[[str, tuple], list[tuple]], key: LedgerKey, path: str, scope: str = "") -> PackedLog:
    """``PackedLog``'s reads on a connection of one's own (verify-ledger's consistent view)."""
    log = PackedLog()
    log._query, log.key, log._path, log._scope = query, key, path, scope
    return log
