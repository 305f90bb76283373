"""The ledger's derived tables in its SQLite file: the archive, the projections, the idempotency index.

A visit's or settlement's id is the seq of the record that made it
(``core.events.visit_id``), so its immutable facts are read from that
record's event; the archive tables hold only what happens afterwards (a
visit's status, a settlement's cancellation), written by the ledger's writer
in the same transaction as the records whose changes they are.  Settling an
outpatient visit therefore writes no archive row at all.

Every derived row can change an answer, so every one is proved:

* **tagged**: each row carries a MAC of its table and values with the
  ledger's key (gateway/seal.py), checked whenever it is read, so a changed
  or invented row is refused, never served;
* **insert-only**: nothing is updated in place (a visit's status is its
  newest status row, a settlement is cancelled when its cancellation row
  exists, a problem report is its newest version), so no older, validly
  tagged version of a row can be put back;
* **counted**: the ledger's sealed head row holds how many rows each table
  has (``TABLES``), checked at start, so a deleted row is found before the
  gateway serves.

The tables:

* ``requests``: 63-bit hashes of (caller, request_id) → the record's seq,
  the idempotency index (a reversal's record holds its own key and its
  original's);
* ``visit_status``, ``cancellations``: the archive's changes;
* ``recon``: one row per settlement, keyed (institution, settlement date,
  settlement number), for reconciliation (对账, SPEC §8) and risk-flag lists.
  The institution is a 63-bit hash of its code (``institution_key``): an
  integer key was measured cheaper to insert than the text code
  (bench/reconcile.py).  Two codes whose hashes collide would share rows;
  with 10^5 institutions the chance is ~10^-9;
* ``problems`` (versions) and ``problem_notes``: problem reports (报错处理)
  and their history;
* ``legacy``: the facts of visits and settlements of a schema-1 ledger,
  whose ids came from separate counters (numbered at most
  ``legacy_last_seq``), filled once when such a ledger is migrated.
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
from core.events import FeeLine, SettlementFacts, Settled, VisitFacts, id_seq, settlement_id
from core.funds import Figures, Item

from ..chain import LedgerCorrupt
from ..seal import LedgerKey

# Every table whose rows the head row counts (gateway/ledger.py), records included.
TABLES = ("records", "requests", "visit_status", "cancellations", "recon", "problems", "problem_notes", "legacy")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    h   INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    tag BLOB    NOT NULL,
    PRIMARY KEY (h, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visit_status (
    mdtrt_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    setl_id    TEXT    NOT NULL,
    tag        BLOB    NOT NULL,
    PRIMARY KEY (mdtrt_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancellations (
    setl_no        INTEGER PRIMARY KEY,
    cancel_date    INTEGER NOT NULL,
    cancel_seq     INTEGER NOT NULL,
    clearing_month INTEGER NOT NULL,
    tag            BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS recon (
    inst      INTEGER NOT NULL,
    setl_date INTEGER NOT NULL,
    setl_no   INTEGER NOT NULL,
    insutype  INTEGER NOT NULL,
    medfee    INTEGER NOT NULL,
    fund      INTEGER NOT NULL,
    cash      INTEGER NOT NULL,
    flags     INTEGER NOT NULL,
    tag       BLOB    NOT NULL,
    PRIMARY KEY (inst, setl_date, setl_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (
    problem_no INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    treatment  TEXT    NOT NULL,
    insured    TEXT    NOT NULL,
    reporter   TEXT    NOT NULL,
    row        BLOB    NOT NULL,
    tag        BLOB    NOT NULL,
    PRIMARY KEY (problem_no, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problem_notes (
    problem_seq INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    by          TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    tag         BLOB    NOT NULL,
    PRIMARY KEY (problem_seq, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS legacy (
    id     TEXT    PRIMARY KEY,
    seq    INTEGER NOT NULL,
    facts  BLOB    NOT NULL,
    lines  BLOB    NOT NULL,
    tag    BLOB    NOT NULL
) WITHOUT ROWID;
"""

# Columns of each table in the order they are tagged (the tag is over these values, then stored last).
COLUMNS = {
    "requests": ("h", "seq"),
    "visit_status": ("mdtrt_id", "seq", "status", "setl_id"),
    "cancellations": ("setl_no", "cancel_date", "cancel_seq", "clearing_month"),
    "recon": ("inst", "setl_date", "setl_no", "insutype", "medfee", "fund", "cash", "flags"),
    "problems": ("problem_no", "seq", "state", "treatment", "insured", "reporter", "row"),
    "problem_notes": ("problem_seq", "seq", "action", "by", "text", "at_ms"),
    "legacy": ("id", "seq", "facts", "lines"),
}
_RECON_COLUMNS = ", ".join("r." + c for c in COLUMNS["recon"])
_CANCEL_COLUMNS = ", ".join("c." + c for c in COLUMNS["cancellations"])
_INSERT = {table: f"INSERT INTO {table} ({', '.join(cols)}, tag) VALUES ({', '.join('?' * (len(cols) + 1))})"
           for table, cols in COLUMNS.items()}

_ENCODE = msgspec.msgpack.Encoder().encode
_VISIT_FACTS = msgspec.msgpack.Decoder(VisitFacts).decode
settlement_facts = msgspec.msgpack.Decoder(SettlementFacts).decode
_LINES = msgspec.msgpack.Decoder(tuple[FeeLine, ...]).decode
_PROBLEM_ROW = msgspec.msgpack.Decoder(ArchivedProblem).decode


def _hash63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def request_hash(caller: str, request_id: str) -> int:
    """The 63-bit key of an idempotency key in the ``requests`` table (collisions are checked on read)."""
    return _hash63(f"{caller}\x00{request_id}")


def institution_key(fixmedins_code: str) -> int:
    """The 63-bit key of an institution in the ``recon`` projection."""
    return _hash63(f"inst\x00{fixmedins_code}")


class Rows:
    """Tagged inserts inside the caller's transaction, counting what each table gained."""

    def __init__(self, conn: sqlite3.Connection, key: LedgerKey) -> None:
        self.conn = conn
        self.key = key
        self.added: dict[str, int] = {}

    def insert(self, table: str, values: tuple) -> None:
        self.conn.execute(_INSERT[table], (*values, self.key.tag(table, values)))
        self.added[table] = self.added.get(table, 0) + 1

    def insert_many(self, table: str, rows: list[tuple]) -> None:
        tag = self.key.tag
        self.conn.executemany(_INSERT[table], [(*values, tag(table, values)) for values in rows])
        self.added[table] = self.added.get(table, 0) + len(rows)


def checked(key: LedgerKey, path: str, table: str, row: tuple) -> tuple:
    """A row read back (its values, then its tag): the values, or LedgerCorrupt if the tag does not match."""
    values = tuple(row[:-1])
    if key.tag(table, values) != row[-1]:
        raise LedgerCorrupt(path, 0, f"a row of {table} does not match its seal (it was changed or put there "
                                     "after it was written): refusing to serve it")
    return values


def write(rows: Rows, changes: Iterable[Change], seq: int) -> None:
    """Store what the record ``seq`` changes (new facts are in the record itself)."""
    for change in changes:
        kind = type(change)
        if kind is PutSettlement:
            rows.insert("recon", recon_row(change.settlement.facts))
        elif kind is VisitStatus:
            rows.insert("visit_status", (change.mdtrt_id, seq, change.status, change.setl_id))
        elif kind is SettlementCancelledChange:
            rows.insert("cancellations", (id_seq(change.setl_id, "S"), change.cancel_date, change.cancel_seq,
                                          change.clearing_month))
        elif kind is PutProblem:
            f = change.problem.facts
            rows.insert("problems", (id_seq(f.problem_id, "R"), seq, change.problem.state, f.treatment_province,
                                     f.insured_province, f.reporter, _ENCODE(change.problem)))
        elif kind is ProblemNote:
            rows.insert("problem_notes", (id_seq(change.problem_id, "R"), change.seq, change.action, change.by,
                                          change.text, change.at_ms))
        elif kind is not PutVisit:
            raise TypeError(f"not an archive change: {change!r}")


def recon_row(facts: SettlementFacts) -> tuple:
    """A settlement's row of the reconciliation projection (without its tag)."""
    b = facts.breakdown
    return (institution_key(facts.fixmedins_code), facts.setl_date, id_seq(facts.setl_id, "S"), int(facts.insutype),
            b.medfee_sumamt, b.fund_pay_sumamt, b.psn_cash_pay, facts.risk_flags)


def write_legacy(rows: Rows, visits: Iterable[ArchivedVisit], settlements: Iterable[ArchivedSettlement]) -> None:
    """The whole archive of a migrated schema-1 ledger: facts, statuses, cancellations."""
    for v in visits:
        rows.insert("legacy", (v.facts.mdtrt_id, 0, _ENCODE(v.facts), _ENCODE(())))
        if v.status != "admitted":
            rows.insert("visit_status", (v.facts.mdtrt_id, 0, v.status, v.setl_id))
    for s in settlements:
        rows.insert("legacy", (s.facts.setl_id, s.seq, _ENCODE(s.facts), _ENCODE(s.lines)))
        rows.insert("recon", recon_row(s.facts))
        if s.status == "cancelled":
            rows.insert("cancellations", (id_seq(s.facts.setl_id, "S"), s.cancel_date, s.cancel_seq, 0))


class Reader:
    """Reads of the derived tables on one connection, every row checked against its tag."""

    def __init__(self, conn: sqlite3.Connection, key: LedgerKey, path: str, legacy_last_seq: int,
                 read_record: Callable) -> None:
        self.conn = conn
        self.key = key
        self.path = path
        self.legacy_last_seq = legacy_last_seq
        self.read_record = read_record   # the store's read(seq): a record, checked before it is returned

    def _one(self, table: str, where: str, args: tuple, order: str = "") -> tuple | None:
        row = self.conn.execute(f"SELECT {', '.join(COLUMNS[table])}, tag FROM {table} WHERE {where} {order} LIMIT 1",
                                args).fetchone()
        return None if row is None else checked(self.key, self.path, table, row)

    def _all(self, table: str, where: str, args: tuple, tail: str = "") -> list[tuple]:
        rows = self.conn.execute(f"SELECT {', '.join(COLUMNS[table])}, tag FROM {table} WHERE {where} {tail}",
                                 args).fetchall()
        return [checked(self.key, self.path, table, row) for row in rows]

    def _event(self, seq: int) -> events.Event | None:
        record = self.read_record(seq)
        return None if record is None else events.decode(record.body)

    def _legacy(self, ident: str) -> tuple | None:
        return self._one("legacy", "id = ?", (ident,))

    # -- the archive
    def visit(self, mdtrt_id: str) -> ArchivedVisit | None:
        number = id_seq(mdtrt_id, "M")
        if number == 0:
            return None
        if number <= self.legacy_last_seq:
            row = self._legacy(mdtrt_id)
            facts = _VISIT_FACTS(row[2]) if row is not None else None
        else:
            facts = getattr(self._event(number), "visit", None)
            if facts is not None and facts.mdtrt_id != mdtrt_id:
                facts = None
        if facts is None:
            return None
        status = self._one("visit_status", "mdtrt_id = ?", (mdtrt_id,), "ORDER BY seq DESC")
        if status is not None:
            return ArchivedVisit(facts, status[2], status[3])
        if facts.visit_kind == "outpatient":  # born settled with its settlement, from the same record
            return ArchivedVisit(facts, "settled", settlement_id(number))
        return ArchivedVisit(facts, "admitted")

    def settlement(self, setl_id: str) -> ArchivedSettlement | None:
        number = id_seq(setl_id, "S")
        if number == 0:
            return None
        if number > self.legacy_last_seq:
            event = self._event(number)
            if type(event) is not Settled or event.settlement.setl_id != setl_id:
                return None
            seq, facts, lines = number, event.settlement, event.lines
        else:
            row = self._legacy(setl_id)
            if row is None:
                return None
            seq, facts, lines = row[1], settlement_facts(row[2]), _LINES(row[3])
        cancel = self._one("cancellations", "setl_no = ?", (number,))
        if cancel is None:
            return ArchivedSettlement(facts, seq, lines=lines)
        return ArchivedSettlement(facts, seq, "cancelled", cancel[1], cancel[2], lines, cancel[3])

    # -- reconciliation (对账)
    def recon_cursor(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = "") -> ReconCursor:
        """The range's settlements ascending by number, read in chunks (``ReconCursor``)."""
        where, args = "r.inst = ? AND r.setl_date BETWEEN ? AND ?", (institution_key(fixmedins_code), date_from, date_to)
        if insutype:
            where, args = where + " AND r.insutype = ?", args + (int(insutype),)
        cursor = self.conn.execute(
            f"SELECT {_RECON_COLUMNS}, r.tag, {_CANCEL_COLUMNS}, c.tag FROM recon r"
            f" LEFT JOIN cancellations c ON c.setl_no = r.setl_no WHERE {where} ORDER BY r.setl_no", args)
        return ReconCursor(cursor, self)

    def recon_totals(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = "") -> Figures:
        """The platform's figures for an institution and a date range: its live (not cancelled) settlements."""
        count = medfee = fund = cash = 0
        cursor = self.recon_cursor(fixmedins_code, date_from, date_to, insutype)
        while rows := cursor.rows(RECON_CHUNK):
            for recon, cancelled in rows:
                if not cancelled:
                    count, medfee, fund, cash = count + 1, medfee + recon[4], fund + recon[5], cash + recon[6]
        # medfee = fund + accounts + cash (SPEC §10.1), so the accounts' share needs no column of its own
        return Figures(count, medfee, fund, cash, acct_pay_sumamt=medfee - fund - cash)

    def flagged(self, fixmedins_code: str, date_from: int, date_to: int, mask: int,
                limit: int) -> list[tuple[str, int, int, int, bool]]:
        """(setl_id, setl_date, flags, medfee, cancelled) of the range's settlements with any flag of ``mask``."""
        out = []
        cursor = self.recon_cursor(fixmedins_code, date_from, date_to)
        while rows := cursor.rows(RECON_CHUNK):
            out.extend((settlement_id(r[2]), r[1], r[7], r[4], cancelled) for r, cancelled in rows if r[7] & mask)
        out.sort(key=lambda x: (x[1], x[0]))
        return out[:limit]

    # -- problem reports
    def problem(self, problem_id: str) -> ArchivedProblem | None:
        number = id_seq(problem_id, "R")
        row = self._one("problems", "problem_no = ?", (number,), "ORDER BY seq DESC") if number else None
        return None if row is None else _PROBLEM_ROW(row[6])

    def list_problems(self, province: str, state: str, after_seq: int, limit: int) -> list[ArchivedProblem]:
        """Reports as they now stand (their newest version), by state, oldest first, of one province ("" = all)."""
        where, args = ("problem_no > ? AND seq = (SELECT max(seq) FROM problems q WHERE q.problem_no = "
                       "problems.problem_no)"), [after_seq]
        if state:
            where += " AND state = ?"
            args.append(state)
        if province:
            where += " AND (treatment = ? OR insured = ? OR reporter = ?)"
            args += [province] * 3
        rows = self._all("problems", where, (*args, limit), "ORDER BY problem_no LIMIT ?")
        return [_PROBLEM_ROW(r[6]) for r in rows]

    def problem_notes(self, problem_id: str) -> list[ProblemNote]:
        rows = self._all("problem_notes", "problem_seq = ?", (id_seq(problem_id, "R"),), "ORDER BY seq")
        return [ProblemNote(problem_id, *r[1:]) for r in rows]


RECON_CHUNK = 2048


class ReconCursor:
    """Reconciliation rows read in chunks, each row and its cancellation checked against their tags."""

    def __init__(self, cursor: sqlite3.Cursor, reader: Reader) -> None:
        self.cursor = cursor
        self.reader = reader
        self._recon = len(COLUMNS["recon"]) + 1

    def close(self) -> None:
        """Close the connection the cursor was opened on (a long read has one of its own)."""
        self.reader.conn.close()

    def rows(self, n: int) -> list[tuple[tuple, bool]]:
        """Up to n (recon values, cancelled) pairs; [] at the end."""
        key, path, split = self.reader.key, self.reader.path, self._recon
        out = []
        for row in self.cursor.fetchmany(n):
            recon = checked(key, path, "recon", row[:split])
            cancelled = row[split] is not None
            if cancelled:
                checked(key, path, "cancellations", row[split:])
            out.append((recon, cancelled))
        return out

    def fetchmany(self, n: int) -> list[Item]:
        """Up to n settlements as reconciliation items (core.funds.Item); [] at the end."""
        return [Item(r[2], settlement_id(r[2]), r[5], cancelled, r[4] - r[5] - r[6]) for r, cancelled in self.rows(n)]
