"""Reads of the derived tables, the same SQL on every backend: the archive's objects rebuilt from their rows.

A visit or a settlement is assembled from the record that made it (the
store's ``read``, proved) and its newest derived rows, each checked against
its tag (``rows.checked``).  The connection is any DB-API one whose
``execute`` returns a cursor (sqlite3, psycopg 3); queries are written with
``?`` and given to a ``%s`` driver with ``param="%s"``.
"""
from __future__ import annotations

from typing import Callable

from core import events
from core.archive import ArchivedProblem, ArchivedSettlement, ArchivedVisit, ProblemNote
from core.events import Settled, id_seq, settlement_id
from core.funds import Figures, Item

from .rows import COLUMNS, checked, fee_lines, institution_key, problem_row, settlement_facts, visit_facts
from .seal import LedgerKey

_RECON_COLUMNS = ", ".join("r." + c for c in COLUMNS["recon"])
_CANCEL_COLUMNS = ", ".join("c." + c for c in COLUMNS["cancellations"])


class Reader:
    """Reads of the derived tables on one connection, every row checked against its tag."""

    def __init__(self, conn, key: LedgerKey, path: str, legacy_last_seq: int, read_record: Callable,
                 param: str = "?") -> None:
        self.conn = conn
        self.key = key
        self.path = path
        self.legacy_last_seq = legacy_last_seq
        self.read_record = read_record   # the store's read(seq): a record, checked before it is returned
        self.param = param

    def execute(self, sql: str, args: tuple | list):
        """A cursor over the query's rows (written with ``?``)."""
        return self.conn.execute(sql if self.param == "?" else sql.replace("?", self.param), args)

    def stream(self, sql: str, args: tuple):
        """A cursor for a long read, fetched a chunk at a time (a backend may read it server-side)."""
        return self.execute(sql, args)

    def _one(self, table: str, where: str, args: tuple, order: str = "") -> tuple | None:
        row = self.execute(f"SELECT {', '.join(COLUMNS[table])}, tag FROM {table} WHERE {where} {order} LIMIT 1",
                                args).fetchone()
        return None if row is None else checked(self.key, self.path, table, row)

    def _all(self, table: str, where: str, args: tuple, tail: str = "") -> list[tuple]:
        rows = self.execute(f"SELECT {', '.join(COLUMNS[table])}, tag FROM {table} WHERE {where} {tail}",
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
            facts = visit_facts(row[2]) if row is not None else None
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
            seq, facts, lines = row[1], settlement_facts(row[2]), fee_lines(row[3])
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
        cursor = self.stream(
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
        return None if row is None else problem_row(row[6])

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
        return [problem_row(r[6]) for r in rows]

    def problem_notes(self, problem_id: str) -> list[ProblemNote]:
        rows = self._all("problem_notes", "problem_seq = ?", (id_seq(problem_id, "R"),), "ORDER BY seq")
        return [ProblemNote(problem_id, *r[1:]) for r in rows]


RECON_CHUNK = 2048


class ArchiveReads:
    """A store's archive and projection reads, each answered by the calling thread's ``Reader`` (the store's
    ``_archive()``): the same for every backend."""

    def _archive(self) -> Reader:
        raise NotImplementedError

    def visit(self, mdtrt_id: str):
        return self._archive().visit(mdtrt_id)

    def settlement(self, setl_id: str):
        return self._archive().settlement(setl_id)

    def problem(self, problem_id: str):
        return self._archive().problem(problem_id)

    def list_problems(self, province: str, state: str, after_seq: int, limit: int):
        return self._archive().list_problems(province, state, after_seq, limit)

    def problem_notes(self, problem_id: str):
        return self._archive().problem_notes(problem_id)

    def recon_totals(self, fixmedins_code: str, date_from: int, date_to: int, insutype: str = ""):
        return self._archive().recon_totals(fixmedins_code, date_from, date_to, insutype)

    def flagged(self, fixmedins_code: str, date_from: int, date_to: int, mask: int, limit: int):
        return self._archive().flagged(fixmedins_code, date_from, date_to, mask, limit)


class ReconCursor:
    """Reconciliation rows read in chunks, each row and its cancellation checked against their tags."""

    def __init__(self, cursor, reader: Reader) -> None:
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
