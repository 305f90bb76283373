"""Damage to a ledger's packed records, as someone with the database but not the seal key would do it.

A ledger keeps its records packed per commit group (gateway/store/packed.py): these open the group holding a
record, change it as asked and write the group back, so a test can change one record, drop one, cut or swap
groups, and recompute what needs no key (checksums) or what a forger's own key gives (the chain).  ``ledger``
is a SQLite file or a ``postgresql://`` URL (its partition 0).
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import replace

from gateway.store import chain, packed
from gateway.store.parts import Record


class _Conn:
    """Autocommit statements written with ``?`` on either backend."""

    def __init__(self, ledger: str) -> None:
        self.pg = ledger.startswith("postgresql://")
        if self.pg:
            import psycopg

            self.conn = psycopg.connect(ledger, autocommit=True)
        else:
            self.conn = sqlite3.connect(ledger, isolation_level=None)

    def execute(self, sql: str, args: tuple = ()):
        return self.conn.execute(sql.replace("?", "%s") if self.pg else sql, args)

    def insert_group(self, last: int, first: int, body: bytes) -> None:
        columns, values = ("part, ", "0, ") if self.pg else ("", "")
        self.execute(f"INSERT INTO groups ({columns}last_seq, first_seq, body) VALUES ({values}?, ?, ?)",
                     (last, first, body))


@contextlib.contextmanager
def _connect(ledger: str):
    conn = _Conn(ledger)
    try:
        yield conn
    finally:
        conn.conn.close()


def groups(ledger: str) -> list[tuple[int, int]]:
    """(first_seq, last_seq) of every group, in order."""
    with _connect(ledger) as conn:
        return conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq").fetchall()


def group_of(ledger: str, seq: int) -> tuple[int, int]:
    return next((first, last) for first, last in groups(ledger) if first <= seq <= last)


def _records(conn: _Conn, last: int) -> tuple[int, list[Record]]:
    first, body = conn.execute("SELECT first_seq, body FROM groups WHERE last_seq = ?", (last,)).fetchone()
    return first, list(packed.unpack(bytes(body), first, last, "test"))


def _fields(r: Record) -> tuple:
    return (r.kind.encode(), r.caller.encode(), r.request_id.encode(), r.digest, r.key.encode(), r.body,
            r.response, r.checksum, r.chain)


def _write(conn: _Conn, old_last: int, first: int, records: list[Record]) -> None:
    """Group ``old_last`` replaced by ``records`` written as the group first..first+len-1 (deleted if empty)."""
    conn.execute("DELETE FROM groups WHERE last_seq = ?", (old_last,))
    if records:
        conn.insert_group(first + len(records) - 1, first, packed.encode([_fields(r) for r in records]))


def record(ledger: str, seq: int) -> Record:
    """Record seq as stored (not proved)."""
    with _connect(ledger) as conn:
        _, last = group_of(ledger, seq)
        first, records = _records(conn, last)
        return records[seq - first]


def with_checksum(r: Record, seq: int) -> Record:
    """The record given the checksum of its content at seq (what anyone can recompute without the key)."""
    return replace(r, seq=seq, checksum=chain.checksum(seq, r.kind, r.caller, r.request_id, r.digest, r.key, r.body,
                                                       r.response))


def rewrite(ledger: str, seq: int, **fields) -> None:
    """Fields of record seq changed in its group (kind, body, response, checksum, chain ...), nothing else."""
    with _connect(ledger) as conn:
        _, last = group_of(ledger, seq)
        first, records = _records(conn, last)
        records[seq - first] = replace(records[seq - first], **fields)
        _write(conn, last, first, records)


def swap(ledger: str, a: int, b: int) -> None:
    """Two records' contents exchanged, each given the checksum of its new place (the chain left as it was)."""
    ra, rb = record(ledger, a), record(ledger, b)
    for seq, other, own in ((a, rb, ra), (b, ra, rb)):
        moved = with_checksum(other, seq)
        rewrite(ledger, seq, kind=moved.kind, caller=moved.caller, request_id=moved.request_id, digest=moved.digest,
                key=moved.key, body=moved.body, response=moved.response, checksum=moved.checksum, chain=own.chain)


def delete(ledger: str, seq: int) -> None:
    """Record seq taken out of its group, the group's row made consistent again: the records after it in the group
    move down one seq (the group's first record: the group starts one later)."""
    with _connect(ledger) as conn:
        _, last = group_of(ledger, seq)
        first, records = _records(conn, last)
        del records[seq - first]
        _write(conn, last, first + 1 if seq == first else first, records)


def drop_last_group(ledger: str) -> None:
    with _connect(ledger) as conn:
        conn.execute("DELETE FROM groups WHERE last_seq = (SELECT max(last_seq) FROM groups)")


def swap_groups(ledger: str, a: int, b: int) -> None:
    """The groups holding seqs a < b exchanged in place (and every group between them shifted), each record given
    the checksum of its new seq: the chain is left as written."""
    ga, gb = group_of(ledger, a), group_of(ledger, b)
    with _connect(ledger) as conn:
        spans = [g for g in groups(ledger) if ga[0] <= g[0] <= gb[0]]
        contents = [_records(conn, last)[1] for _, last in spans]
        contents[0], contents[-1] = contents[-1], contents[0]
        for _, last in spans:
            conn.execute("DELETE FROM groups WHERE last_seq = ?", (last,))
        first = ga[0]
        for records in contents:
            moved = [with_checksum(r, first + i) for i, r in enumerate(records)]
            conn.insert_group(first + len(moved) - 1, first, packed.encode([_fields(r) for r in moved]))
            first += len(moved)


def cut_tail(ledger: str, seq: int, nbytes: int) -> None:
    """The last nbytes of the group holding seq cut off (as a torn write or a hand would), its row left as it was."""
    with _connect(ledger) as conn:
        _, last = group_of(ledger, seq)
        conn.execute("UPDATE groups SET body = substr(body, 1, length(body) - ?) WHERE last_seq = ?", (nbytes, last))


def drop_tail_records(ledger: str, seq: int, n: int) -> None:
    """The group holding seq loses its last n records, its count, offsets and row rewritten to match."""
    with _connect(ledger) as conn:
        _, last = group_of(ledger, seq)
        first, records = _records(conn, last)
        _write(conn, last, first, records[:-n])


def rechained(ledger: str, key) -> bytes:
    """Every record's chain value recomputed with ``key`` (a forger's own); the new head chain value."""
    previous = key.genesis
    with _connect(ledger) as conn:
        for first, last in conn.execute("SELECT first_seq, last_seq FROM groups ORDER BY last_seq").fetchall():
            _, records = _records(conn, last)
            out = []
            for r in records:
                previous = key.link(previous, r.checksum)
                out.append(replace(r, chain=previous))
            _write(conn, last, first, out)
    return previous


def chain_at(ledger: str, seq: int) -> bytes:
    return record(ledger, seq).chain
