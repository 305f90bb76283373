"""The archive (core/archive.py) in the ledger's SQLite file.

A visit's or settlement's id is the seq of the record that made it
(``core.events.visit_id``), so its immutable facts are read from that
record's event; the archive tables hold only what changes afterwards (a
visit's status, a settlement's cancellation), written by the ledger's writer
in the same transaction as the records whose changes they are.  Settling an
outpatient visit therefore writes no archive row at all.

Visits and settlements of a ledger written by the first release (ids from
separate counters, numbered at most ``legacy_last_seq``) keep their facts in
the ``legacy`` table, filled once when such a ledger is migrated.
"""
from __future__ import annotations

import hashlib
import sqlite3
from typing import Callable, Iterable

import msgspec

from core import events
from core.archive import (
    ArchivedSettlement, ArchivedVisit, Change, PutSettlement, PutVisit, SettlementCancelledChange, VisitStatus,
)
from core.events import FeeLine, SettlementFacts, Settled, VisitFacts, id_seq, settlement_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS visit_status (
    mdtrt_id   TEXT    PRIMARY KEY,
    status     TEXT    NOT NULL,
    setl_id    TEXT    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancellations (
    setl_id     TEXT    PRIMARY KEY,
    cancel_date INTEGER NOT NULL,
    cancel_seq  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS legacy (
    id     TEXT    PRIMARY KEY,
    seq    INTEGER NOT NULL,
    facts  BLOB    NOT NULL,
    lines  BLOB    NOT NULL
) WITHOUT ROWID;
"""

_ENCODE = msgspec.msgpack.Encoder().encode
_VISIT_FACTS = msgspec.msgpack.Decoder(VisitFacts).decode
_SETTLEMENT_FACTS = msgspec.msgpack.Decoder(SettlementFacts).decode
_LINES = msgspec.msgpack.Decoder(tuple[FeeLine, ...]).decode

_VISIT_STATUS = "INSERT OR REPLACE INTO visit_status (mdtrt_id, status, setl_id) VALUES (?, ?, ?)"
_CANCEL = "INSERT INTO cancellations (setl_id, cancel_date, cancel_seq) VALUES (?, ?, ?)"
_LEGACY = "INSERT INTO legacy (id, seq, facts, lines) VALUES (?, ?, ?, ?)"


def request_hash(caller: str, request_id: str) -> int:
    """The 63-bit key of an idempotency key in the ``requests`` table (collisions are checked on read)."""
    digest = hashlib.blake2b(f"{caller}\x00{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def write(conn: sqlite3.Connection, changes: Iterable[Change]) -> None:
    """Store what changes, inside the caller's transaction (new facts are in the record itself)."""
    for change in changes:
        kind = type(change)
        if kind is VisitStatus:
            conn.execute(_VISIT_STATUS, (change.mdtrt_id, change.status, change.setl_id))
        elif kind is SettlementCancelledChange:
            conn.execute(_CANCEL, (change.setl_id, change.cancel_date, change.cancel_seq))
        elif kind not in (PutVisit, PutSettlement):
            raise TypeError(f"not an archive change: {change!r}")


def write_legacy(conn: sqlite3.Connection, visits: Iterable[ArchivedVisit],
                 settlements: Iterable[ArchivedSettlement]) -> None:
    """The whole archive of a migrated first-release ledger: facts, statuses, cancellations."""
    for v in visits:
        conn.execute(_LEGACY, (v.facts.mdtrt_id, 0, _ENCODE(v.facts), _ENCODE(())))
        conn.execute(_VISIT_STATUS, (v.facts.mdtrt_id, v.status, v.setl_id))
    for s in settlements:
        conn.execute(_LEGACY, (s.facts.setl_id, s.seq, _ENCODE(s.facts), _ENCODE(s.lines)))
        if s.status == "cancelled":
            conn.execute(_CANCEL, (s.facts.setl_id, s.cancel_date, s.cancel_seq))


def _legacy(conn: sqlite3.Connection, ident: str) -> tuple | None:
    return conn.execute("SELECT seq, facts, lines FROM legacy WHERE id = ?", (ident,)).fetchone()


def _event(read_record: Callable, seq: int) -> events.Event | None:
    """The event of record seq, read through the store (which checks the record's checksum)."""
    record = read_record(seq)
    return None if record is None else events.decode(record.body)


def read_visit(conn: sqlite3.Connection, mdtrt_id: str, legacy_last_seq: int,
               read_record: Callable) -> ArchivedVisit | None:
    number = id_seq(mdtrt_id, "M")
    if number == 0:
        return None
    if number <= legacy_last_seq:
        row = _legacy(conn, mdtrt_id)
        facts = _VISIT_FACTS(row[1]) if row is not None else None
    else:
        event = _event(read_record, number)
        facts = getattr(event, "visit", None)
        if facts is None or facts.mdtrt_id != mdtrt_id:
            return None
    if facts is None:
        return None
    status = conn.execute("SELECT status, setl_id FROM visit_status WHERE mdtrt_id = ?", (mdtrt_id,)).fetchone()
    if status is not None:
        return ArchivedVisit(facts, status[0], status[1])
    if facts.visit_kind == "outpatient":  # born settled with its settlement, from the same record
        return ArchivedVisit(facts, "settled", settlement_id(number))
    return ArchivedVisit(facts, "admitted")


def read_settlement(conn: sqlite3.Connection, setl_id: str, legacy_last_seq: int,
                    read_record: Callable) -> ArchivedSettlement | None:
    number = id_seq(setl_id, "S")
    if number == 0:
        return None
    if number > legacy_last_seq:
        event = _event(read_record, number)
        if type(event) is not Settled or event.settlement.setl_id != setl_id:
            return None
        seq, facts, lines = number, event.settlement, event.lines
    else:
        row = _legacy(conn, setl_id)
        if row is None:
            return None
        seq, facts, lines = row[0], _SETTLEMENT_FACTS(row[1]), _LINES(row[2])
    cancel = conn.execute("SELECT cancel_date, cancel_seq FROM cancellations WHERE setl_id = ?",
                          (setl_id,)).fetchone()
    if cancel is None:
        return ArchivedSettlement(facts, seq, lines=lines)
    return ArchivedSettlement(facts, seq, "cancelled", cancel[0], cancel[1], lines)
