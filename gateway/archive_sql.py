"""The archive (core/archive.py) as SQLite tables beside the ledger's records.

Written by the ledger's writer in the same transaction as the records whose
changes they are, so the archive always agrees with the log.  Rows keep their
immutable facts as MessagePack (the event structs) and, as columns, what is
looked up or changes: status, cancellation, the settlement's institution and
date.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

import msgspec

from core.archive import (
    ArchivedSettlement, ArchivedVisit, Change, PutSettlement, PutVisit, SettlementCancelledChange, VisitStatus,
)
from core.events import FeeLine, SettlementFacts, VisitFacts

SCHEMA = """
CREATE TABLE IF NOT EXISTS visits (
    mdtrt_id   TEXT    PRIMARY KEY,
    status     TEXT    NOT NULL,
    setl_id    TEXT    NOT NULL,
    facts      BLOB    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settlements (
    setl_id        TEXT    PRIMARY KEY,
    seq            INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    cancel_date    INTEGER NOT NULL,
    cancel_seq     INTEGER NOT NULL,
    fixmedins_code TEXT    NOT NULL,
    setl_date      INTEGER NOT NULL,
    facts          BLOB    NOT NULL,
    lines          BLOB    NOT NULL
) WITHOUT ROWID;
"""

_ENCODE = msgspec.msgpack.Encoder().encode
_VISIT_FACTS = msgspec.msgpack.Decoder(VisitFacts).decode
_SETTLEMENT_FACTS = msgspec.msgpack.Decoder(SettlementFacts).decode
_LINES = msgspec.msgpack.Decoder(tuple[FeeLine, ...]).decode

_PUT_VISIT = "INSERT OR REPLACE INTO visits (mdtrt_id, status, setl_id, facts) VALUES (?, ?, ?, ?)"
_VISIT_STATUS = "UPDATE visits SET status = ?, setl_id = ? WHERE mdtrt_id = ?"
_PUT_SETTLEMENT = ("INSERT OR REPLACE INTO settlements (setl_id, seq, status, cancel_date, cancel_seq, fixmedins_code,"
                   " setl_date, facts, lines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_CANCEL = "UPDATE settlements SET status = 'cancelled', cancel_date = ?, cancel_seq = ? WHERE setl_id = ?"


def _visit_row(v: ArchivedVisit) -> tuple:
    return (v.facts.mdtrt_id, v.status, v.setl_id, _ENCODE(v.facts))


def _settlement_row(s: ArchivedSettlement) -> tuple:
    return (s.facts.setl_id, s.seq, s.status, s.cancel_date, s.cancel_seq, s.facts.fixmedins_code,
            s.facts.setl_date, _ENCODE(s.facts), _ENCODE(s.lines))


def write(conn: sqlite3.Connection, changes: Iterable[Change]) -> None:
    """Apply changes inside the caller's transaction."""
    for change in changes:
        kind = type(change)
        if kind is PutVisit:
            conn.execute(_PUT_VISIT, _visit_row(change.visit))
        elif kind is VisitStatus:
            _updated(conn.execute(_VISIT_STATUS, (change.status, change.setl_id, change.mdtrt_id)), change)
        elif kind is PutSettlement:
            conn.execute(_PUT_SETTLEMENT, _settlement_row(change.settlement))
        elif kind is SettlementCancelledChange:
            _updated(conn.execute(_CANCEL, (change.cancel_date, change.cancel_seq, change.setl_id)), change)
        else:
            raise TypeError(f"not an archive change: {change!r}")


def _updated(cursor: sqlite3.Cursor, change: Change) -> None:
    if cursor.rowcount != 1:
        raise RuntimeError(f"archive change {change!r} found no row to change")


def write_all(conn: sqlite3.Connection, visits: Iterable[ArchivedVisit],
              settlements: Iterable[ArchivedSettlement]) -> None:
    """Bulk rows (rebuilding the archive of a ledger written before it existed)."""
    conn.executemany(_PUT_VISIT, [_visit_row(v) for v in visits])
    conn.executemany(_PUT_SETTLEMENT, [_settlement_row(s) for s in settlements])


def read_visit(conn: sqlite3.Connection, mdtrt_id: str) -> ArchivedVisit | None:
    row = conn.execute("SELECT status, setl_id, facts FROM visits WHERE mdtrt_id = ?", (mdtrt_id,)).fetchone()
    return None if row is None else ArchivedVisit(_VISIT_FACTS(row[2]), row[0], row[1])


def read_settlement(conn: sqlite3.Connection, setl_id: str) -> ArchivedSettlement | None:
    row = conn.execute("SELECT seq, status, cancel_date, cancel_seq, facts, lines FROM settlements WHERE setl_id = ?",
                       (setl_id,)).fetchone()
    if row is None:
        return None
    return ArchivedSettlement(_SETTLEMENT_FACTS(row[4]), row[0], row[1], row[2], row[3], _LINES(row[5]))
