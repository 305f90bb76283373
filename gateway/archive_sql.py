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

Two projections are written the same way, for queries the log cannot answer
cheaply:

* ``recon``: one row per settlement, keyed (institution, settlement date,
  settlement number), for reconciliation (对账, SPEC §8) and risk-flag lists
  over an institution and a date range.  The institution is a 63-bit hash of
  its code (``institution_key``): an integer key was measured cheaper to
  insert than the text code (bench/reconcile.py).  Two codes whose hashes
  collide would share rows; with 10^5 institutions the chance is ~10^-9.
* ``problems`` and ``problem_notes``: problem reports (报错处理) and their
  history; they are history, so they live here and not in memory.
"""
from __future__ import annotations

import hashlib
import sqlite3
from typing import Callable, Iterable

import msgspec

from core import events
from core.archive import (
    ArchivedProblem, ArchivedSettlement, ArchivedVisit, Change, ProblemNote, PutProblem, PutSettlement, PutVisit,
    SettlementCancelledChange, VisitStatus,
)
from core.events import FeeLine, SettlementCancelled, SettlementFacts, Settled, VisitFacts, id_seq, settlement_id
from core.funds import Figures, Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS visit_status (
    mdtrt_id   TEXT    PRIMARY KEY,
    status     TEXT    NOT NULL,
    setl_id    TEXT    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancellations (
    setl_id     TEXT    PRIMARY KEY,
    cancel_date INTEGER NOT NULL,
    cancel_seq  INTEGER NOT NULL,
    clearing_month INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recon (
    inst      INTEGER NOT NULL,
    setl_date INTEGER NOT NULL,
    setl_no   INTEGER NOT NULL,
    insutype  INTEGER NOT NULL,
    medfee    INTEGER NOT NULL,
    fund      INTEGER NOT NULL,
    cash      INTEGER NOT NULL,
    flags     INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    PRIMARY KEY (inst, setl_date, setl_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (
    seq       INTEGER PRIMARY KEY,
    state     TEXT    NOT NULL,
    treatment TEXT    NOT NULL,
    insured   TEXT    NOT NULL,
    reporter  TEXT    NOT NULL,
    row       BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS problems_state ON problems (state, seq);
CREATE TABLE IF NOT EXISTS problem_notes (
    problem_seq INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    by          TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (problem_seq, seq)
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

_PROBLEM_ROW = msgspec.msgpack.Decoder(ArchivedProblem).decode

_VISIT_STATUS = "INSERT OR REPLACE INTO visit_status (mdtrt_id, status, setl_id) VALUES (?, ?, ?)"
_CANCEL = "INSERT INTO cancellations (setl_id, cancel_date, cancel_seq, clearing_month) VALUES (?, ?, ?, ?)"
_LEGACY = "INSERT INTO legacy (id, seq, facts, lines) VALUES (?, ?, ?, ?)"
_RECON = ("INSERT INTO recon (inst, setl_date, setl_no, insutype, medfee, fund, cash, flags, cancelled)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_RECON_CANCEL = "UPDATE recon SET cancelled = 1 WHERE inst = ? AND setl_date = ? AND setl_no = ?"
_PROBLEM = "INSERT OR REPLACE INTO problems (seq, state, treatment, insured, reporter, row) VALUES (?, ?, ?, ?, ?, ?)"
_NOTE = "INSERT INTO problem_notes (problem_seq, seq, action, by, text, at_ms) VALUES (?, ?, ?, ?, ?, ?)"


def _hash63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def request_hash(caller: str, request_id: str) -> int:
    """The 63-bit key of an idempotency key in the ``requests`` table (collisions are checked on read)."""
    return _hash63(f"{caller}\x00{request_id}")


def institution_key(fixmedins_code: str) -> int:
    """The 63-bit key of an institution in the ``recon`` projection."""
    return _hash63(f"inst\x00{fixmedins_code}")


def write(conn: sqlite3.Connection, changes: Iterable[Change]) -> None:
    """Store what changes, inside the caller's transaction (new facts are in the record itself)."""
    for change in changes:
        kind = type(change)
        if kind is PutSettlement:
            conn.execute(_RECON, _recon_row(change.settlement.facts, False))
        elif kind is VisitStatus:
            conn.execute(_VISIT_STATUS, (change.mdtrt_id, change.status, change.setl_id))
        elif kind is SettlementCancelledChange:
            conn.execute(_CANCEL, (change.setl_id, change.cancel_date, change.cancel_seq, change.clearing_month))
            conn.execute(_RECON_CANCEL, (institution_key(change.fixmedins_code), change.setl_date,
                                         id_seq(change.setl_id, "S")))
        elif kind is PutProblem:
            f = change.problem.facts
            conn.execute(_PROBLEM, (id_seq(f.problem_id, "R"), change.problem.state, f.treatment_province,
                                    f.insured_province, f.reporter, _ENCODE(change.problem)))
        elif kind is ProblemNote:
            conn.execute(_NOTE, (id_seq(change.problem_id, "R"), change.seq, change.action, change.by, change.text,
                                 change.at_ms))
        elif kind is not PutVisit:
            raise TypeError(f"not an archive change: {change!r}")


def _recon_row(facts: SettlementFacts, cancelled: bool) -> tuple:
    b = facts.breakdown
    return (institution_key(facts.fixmedins_code), facts.setl_date, id_seq(facts.setl_id, "S"), int(facts.insutype),
            b.medfee_sumamt, b.fund_pay_sumamt, b.psn_cash_pay, facts.risk_flags, int(cancelled))


def write_legacy(conn: sqlite3.Connection, visits: Iterable[ArchivedVisit],
                 settlements: Iterable[ArchivedSettlement]) -> None:
    """The whole archive of a migrated first-release ledger: facts, statuses, cancellations."""
    for v in visits:
        conn.execute(_LEGACY, (v.facts.mdtrt_id, 0, _ENCODE(v.facts), _ENCODE(())))
        conn.execute(_VISIT_STATUS, (v.facts.mdtrt_id, v.status, v.setl_id))
    for s in settlements:
        conn.execute(_LEGACY, (s.facts.setl_id, s.seq, _ENCODE(s.facts), _ENCODE(s.lines)))
        conn.execute(_RECON, _recon_row(s.facts, s.status == "cancelled"))
        if s.status == "cancelled":
            conn.execute(_CANCEL, (s.facts.setl_id, s.cancel_date, s.cancel_seq, 0))


def backfill_projection(conn: sqlite3.Connection, legacy_last_seq: int) -> int:
    """Schema 2 → 3: the ``recon`` rows of the settlements already in the ledger (inside the caller's transaction)."""
    rows = 0
    for (body,) in conn.cursor().execute("SELECT body FROM records WHERE kind IN ('settled', 'settlement_cancelled')"
                                         " ORDER BY seq"):
        event = events.decode(body)
        if type(event) is Settled:
            conn.execute(_RECON, _recon_row(event.settlement, False))
        elif type(event) is SettlementCancelled:
            facts = event.settlement or read_settlement(conn, event.setl_id, legacy_last_seq).facts
            conn.execute(_RECON_CANCEL, (institution_key(facts.fixmedins_code), facts.setl_date,
                                         id_seq(facts.setl_id, "S")))
        rows += 1
    return rows


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
    cancel = conn.execute("SELECT cancel_date, cancel_seq, clearing_month FROM cancellations WHERE setl_id = ?",
                          (setl_id,)).fetchone()
    if cancel is None:
        return ArchivedSettlement(facts, seq, lines=lines)
    return ArchivedSettlement(facts, seq, "cancelled", cancel[0], cancel[1], lines, cancel[2])


# ------------------------------------------------------------------ reconciliation (对账)
_RANGE = "inst = ? AND setl_date BETWEEN ? AND ?"


def _range_args(fixmedins_code: str, date_from: int, date_to: int, insutype: str) -> tuple[str, tuple]:
    where, args = _RANGE, (institution_key(fixmedins_code), date_from, date_to)
    if insutype:
        where, args = where + " AND insutype = ?", args + (int(insutype),)
    return where, args


def recon_totals(conn: sqlite3.Connection, fixmedins_code: str, date_from: int, date_to: int,
                 insutype: str = "") -> Figures:
    """The platform's figures for an institution and a date range: its live (not cancelled) settlements."""
    where, args = _range_args(fixmedins_code, date_from, date_to, insutype)
    row = conn.execute(f"SELECT count(*), coalesce(sum(medfee), 0), coalesce(sum(fund), 0), coalesce(sum(cash), 0)"
                       f" FROM recon WHERE {where} AND cancelled = 0", args).fetchone()
    # medfee = fund + accounts + cash (SPEC §10.1), so the accounts' share needs no column of its own
    return Figures(*row, acct_pay_sumamt=row[1] - row[2] - row[3])


def recon_items(conn: sqlite3.Connection, fixmedins_code: str, date_from: int, date_to: int,
                insutype: str = "") -> sqlite3.Cursor:
    """A cursor over the range's settlements ascending by number (SQLite sorts in its bounded sorter);
    fetch it in chunks and turn rows into ``Item`` with ``recon_item``."""
    where, args = _range_args(fixmedins_code, date_from, date_to, insutype)
    return conn.execute(f"SELECT setl_no, fund, cancelled, medfee - fund - cash FROM recon WHERE {where}"
                        f" ORDER BY setl_no", args)


def recon_item(row: tuple) -> Item:
    return Item(row[0], settlement_id(row[0]), row[1], bool(row[2]), row[3])


def flagged(conn: sqlite3.Connection, fixmedins_code: str, date_from: int, date_to: int, mask: int,
            limit: int) -> list[tuple[str, int, int, int, bool]]:
    """(setl_id, setl_date, flags, medfee, cancelled) of the range's settlements with any flag of ``mask``."""
    where, args = _range_args(fixmedins_code, date_from, date_to, "")
    rows = conn.execute(f"SELECT setl_no, setl_date, flags, medfee, cancelled FROM recon WHERE {where}"
                        f" AND flags & ? != 0 ORDER BY setl_date, setl_no LIMIT ?", args + (mask, limit)).fetchall()
    return [(settlement_id(r[0]), r[1], r[2], r[3], bool(r[4])) for r in rows]


# ------------------------------------------------------------------ problem reports
def read_problem(conn: sqlite3.Connection, problem_id: str) -> ArchivedProblem | None:
    number = id_seq(problem_id, "R")
    row = conn.execute("SELECT row FROM problems WHERE seq = ?", (number,)).fetchone() if number else None
    return None if row is None else _PROBLEM_ROW(row[0])


def list_problems(conn: sqlite3.Connection, province: str, state: str, after_seq: int,
                  limit: int) -> list[ArchivedProblem]:
    """Reports by state, oldest first (by the seq that opened them), of one province ("" = all)."""
    where, args = "seq > ?", [after_seq]
    if state:
        where += " AND state = ?"
        args.append(state)
    if province:
        where += " AND (treatment = ? OR insured = ? OR reporter = ?)"
        args += [province] * 3
    rows = conn.execute(f"SELECT row FROM problems WHERE {where} ORDER BY seq LIMIT ?", (*args, limit)).fetchall()
    return [_PROBLEM_ROW(r[0]) for r in rows]


def problem_notes(conn: sqlite3.Connection, problem_id: str) -> list[ProblemNote]:
    rows = conn.execute("SELECT seq, action, by, text, at_ms FROM problem_notes WHERE problem_seq = ? ORDER BY seq",
                        (id_seq(problem_id, "R"),)).fetchall()
    return [ProblemNote(problem_id, *r) for r in rows]
